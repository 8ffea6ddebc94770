"""Serve the live authors page with uvicorn (``make live``).

Migrates the example database, then runs ``uvicorn bookstore.asgi:application``
on http://127.0.0.1:8000/ (``--port`` to change it) until interrupted. Change
authors from another terminal with ``example/change_authors.py`` and watch
the page follow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("Set DATABASE_URL, or run `make live`, which starts PostgreSQL for you.")
    manage = [sys.executable, str(HERE / "manage.py")]
    subprocess.run([*manage, "migrate", "--verbosity", "0"], check=True)
    url = f"http://{args.host}:{args.port}/"
    print(
        f"\nThe live authors page: {url}\n"
        "Change authors from another terminal, for example:\n"
        f"  DATABASE_URL='{os.environ['DATABASE_URL']}' \\\n"
        f"    {sys.executable} {HERE / 'change_authors.py'} demo\n",
        flush=True,
    )
    server = [
        sys.executable,
        "-m",
        "uvicorn",
        "bookstore.asgi:application",
        "--app-dir",
        str(HERE),
        "--host",
        args.host,
        "--port",
        str(args.port),
        # Open streams never end by themselves: give them a second at shutdown.
        "--timeout-graceful-shutdown",
        "1",
        "--lifespan",
        "off",
    ]
    # Become the server, so that signals (Ctrl-C, SIGTERM) reach it directly.
    os.execv(sys.executable, server)


if __name__ == "__main__":
    raise SystemExit(main())
