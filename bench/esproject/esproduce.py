"""The producer for django-eventstream: paced rows, then ``send_event`` per row after commit.

What a Django application does with django-eventstream: write the row, and
once the transaction has committed, publish the change (here its primary
key) with ``send_event``, which goes through Redis to the servers. The rows
go to ``benchapp_plainrow`` (no trigger) in pgpubsub's benchmark database,
so both libraries' producers pay for a commit per transaction. Prints the
producer's figures (``bench/pacing.py``) as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # bench/: pacing.py
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "essite.settings")

import django  # noqa: E402

django.setup()

import pacing  # noqa: E402
from django.conf import settings  # noqa: E402
from django_eventstream import send_event  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--min-period", type=float, default=0.002)
    args = parser.parse_args()

    def publish(pks: list[int]) -> None:
        for pk in pks:
            send_event(settings.CHANNEL, "message", {"pk": pk})

    result = pacing.produce(
        os.environ["BENCH_DB_URL"],
        "benchapp_plainrow",
        args.rate,
        args.seconds,
        args.min_period,
        after_commit=publish,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
