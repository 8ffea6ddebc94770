"""pgpubsub demo: migrate, start a worker, change data, show what listeners did.

Run it with ``make demo`` (which provides an embedded PostgreSQL when
DATABASE_URL is unset). It stops everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bookstore.settings")
if not os.environ.get("DATABASE_URL"):
    sys.path.insert(0, str(HERE.parent / "tools"))
    import pgserver

    os.environ["DATABASE_URL"] = pgserver.start()


#: The reader of the notifications sent until the worker answers one.
WARM_UP = "warm-up"


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def manage(*args: str) -> list[str]:
    return [sys.executable, str(HERE / "manage.py"), *args]


def main() -> int:
    step("migrate (installs pgpubsub's SQL functions and the listeners' triggers)")
    subprocess.run(manage("migrate", "--verbosity", "0"), check=True)

    import django

    django.setup()
    from django.db import connection, transaction

    import pgpubsub
    from library.channels import PostReads
    from library.models import Author, Post, PostRead

    # Start from an empty example database on every run.
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE library_postread, library_post, library_author, pgpubsub_notification"
        )

    step("start the worker: python manage.py listen")
    worker = subprocess.Popen(
        manage("listen", "--loglevel", "warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []

    def read() -> None:
        assert worker.stdout is not None
        for line in worker.stdout:
            lines.append(line.rstrip())
            print(f"   worker | {line.rstrip()}", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait_lines(count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        # Answers to warm-up probes may still arrive later: they do not count.
        while sum(line.startswith("[listener]") and WARM_UP not in line for line in lines) < count:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("timed out waiting for the listeners")
            time.sleep(0.05)

    try:
        # The worker announces nothing at --loglevel warning; a first
        # notification round-trip tells us it is listening.
        deadline = time.monotonic() + 30
        while not lines:
            pgpubsub.notify(PostReads, post_id=0, reader=WARM_UP)
            time.sleep(0.2)
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the worker did not start")
        expected = 0

        step("insert, update and delete authors with the ORM")
        ada = Author.objects.create(name="Ada")
        ada.name = "Ada Lovelace"
        ada.save()
        grace = Author.objects.create(name="Grace")
        grace.delete()
        expected += 4
        wait_lines(expected)

        step("bulk_create and QuerySet.update() (Django signals would miss these)")
        Author.objects.bulk_create([Author(name=f"Bulk author {i}") for i in range(3)])
        Author.objects.filter(name__startswith="Bulk").update(name="Renamed in bulk")
        expected += 6
        wait_lines(expected)

        step("raw SQL")
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO library_author (name) VALUES (%s)", ["Inserted by raw SQL"])
        expected += 1
        wait_lines(expected)

        step("durable trigger channel: posts are stored and processed exactly once")
        Post.objects.create(author=ada, title="Notes on the Analytical Engine")
        expected += 1
        wait_lines(expected)

        step("pgpubsub.notify(): committed, then rolled back")
        with transaction.atomic():
            pgpubsub.notify(PostReads, post_id=1, reader="Charles")
        try:
            with transaction.atomic():
                pgpubsub.notify(PostReads, post_id=1, reader="nobody (rolled back)")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        pgpubsub.notify(PostReads, post_id=1, reader="Mary")
        expected += 2
        wait_lines(expected)
        readers = list(PostRead.objects.exclude(reader=WARM_UP).values_list("reader", flat=True))
        print(f"   PostRead rows written by the listener: {readers}")
        if "nobody (rolled back)" in readers:
            raise SystemExit("a rolled-back notification was delivered")
    finally:
        step("stop the worker with SIGTERM")
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
        reader.join(5)
        print(f"   worker exited with status {code}")

    step(f"done: {expected} listener calls shown above")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
