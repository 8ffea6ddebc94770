"""The paced producer of workloads 9, 11 and 12, shared by both virtualenvs (psycopg only).

Rows go into TABLE at RATE rows/s for SECONDS from one connection, one
transaction at a time and at most one every ``min_period`` seconds (rows
that fall due meanwhile share a transaction, so the producer keeps up at
any rate); each row's commit time is the time its transaction's COMMIT
returned. ``after_commit`` (django-eventstream's ``send_event``) is called
with each transaction's primary keys once it has committed.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

#: The application_name of the producer's connection: the harness does not
#: count it among the connections of the process under test.
PRODUCER_APP = "bench-producer"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def produce(
    db_url: str,
    table: str,
    rate: float,
    seconds: float,
    min_period: float = 0.002,
    after_commit: Callable[[list[int]], None] | None = None,
) -> dict[str, Any]:
    import psycopg
    from psycopg import sql

    insert = sql.SQL(
        "INSERT INTO {} (n, label) SELECT g, '' FROM generate_series(%s::int, %s::int) AS g "
        "RETURNING id"
    ).format(sql.Identifier(table))
    total = round(rate * seconds)
    commits: list[tuple[int, float]] = []
    with psycopg.connect(db_url, application_name=PRODUCER_APP) as conn:
        conn.execute("SELECT 1")
        conn.commit()
        cpu0 = _cpu()
        started = time.time()
        t0 = time.monotonic()
        produced = transactions = 0
        while produced < total:
            began = time.monotonic()
            due = min(total, int((began - t0) * rate) + 1)
            if due > produced:
                ids = [pk for (pk,) in conn.execute(insert, [produced + 1, due]).fetchall()]
                conn.commit()
                committed = time.time()
                commits.extend((pk, committed) for pk in ids)
                if after_commit is not None:
                    after_commit(ids)
                produced = due
                transactions += 1
            delay = max(t0 + produced / rate, began + min_period) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ended = time.time()
    return {
        "t_start": started,
        "t_end": ended,
        "rate_achieved": total / (ended - started) if ended > started else None,
        "transactions": transactions,
        "cpu_s": _cpu() - cpu0,
        "commits": commits,
    }
