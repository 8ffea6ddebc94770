"""Change authors from another process, to watch the live authors page follow (``make live``).

Run it with the DATABASE_URL that ``make live`` prints (``export DATABASE_URL=...``)::

    python example/change_authors.py create Ada Grace
    python example/change_authors.py rename Ada "Ada Lovelace"   # QuerySet.update()
    python example/change_authors.py suffix " (1815)"            # one UPDATE of every row
    python example/change_authors.py sql "UPDATE library_author SET name = upper(name)"
    python example/change_authors.py delete Grace                # QuerySet.delete()
    python example/change_authors.py demo                        # a change a second

None of these but ``create`` sends Django's model signals: the page learns
of them from pgpubsub's triggers.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bookstore.settings")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create", help="create authors").add_argument("names", nargs="+")
    rename = commands.add_parser("rename", help="rename an author with QuerySet.update()")
    rename.add_argument("old")
    rename.add_argument("new")
    commands.add_parser("suffix", help="append TEXT to every name (one UPDATE)").add_argument(
        "text"
    )
    commands.add_parser("sql", help="run raw SQL").add_argument("statement")
    commands.add_parser("delete", help="delete authors by name").add_argument("names", nargs="+")
    commands.add_parser("demo", help="make a change every second until interrupted")
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.db import connection
    from django.db.models import F, Value
    from django.db.models.functions import Concat

    from library.models import Author

    if args.command == "create":
        Author.objects.bulk_create([Author(name=name) for name in args.names])
        print(f"created {len(args.names)} author(s)")
    elif args.command == "rename":
        count = Author.objects.filter(name=args.old).update(name=args.new)
        print(f"renamed {count} author(s)")
    elif args.command == "suffix":
        count = Author.objects.update(name=Concat(F("name"), Value(args.text)))
        print(f"updated {count} author(s)")
    elif args.command == "sql":
        with connection.cursor() as cursor:
            cursor.execute(args.statement)
            print(f"{cursor.rowcount} row(s)")
    elif args.command == "delete":
        count, _ = Author.objects.filter(name__in=args.names).delete()
        print(f"deleted {count} row(s)")
    elif args.command == "demo":
        names = itertools.cycle(["Ada", "Grace", "Edsger", "Barbara", "Donald", "Frances"])
        for step in itertools.count():
            name = f"{next(names)} {step}"
            if step % 4 == 3:
                Author.objects.filter(pk=Author.objects.order_by("pk").values("pk")[:1]).delete()
                print("deleted the oldest author", flush=True)
            elif step % 4 == 2:
                Author.objects.update(name=Concat(F("name"), Value("*")))
                print("starred every author (QuerySet.update)", flush=True)
            else:
                Author.objects.create(name=name)
                print(f"created {name}", flush=True)
            time.sleep(1)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(0) from None
