"""The distribution as a user gets it: built from the checkout, installed into a clean venv.

``python -m build`` makes the sdist and then the wheel from that sdist, so
the wheel tested here also proves the sdist is complete. The clean venv
installs ``pgpubsub-django[binary,metrics]`` by name from the built wheel
(PyPI for the dependencies, at the Django release the suite runs on), and a
project made by ``django-admin startproject`` runs ``manage.py listen`` in
it against the test server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import django
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import REPO, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.packaging]

DIST_NAME = "pgpubsub-django"
TEMPLATE = "migrations_templates/pgpubsub_v1.sql"
VERSION = re.search(
    r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE
).group(1)


def clean_env() -> dict[str, str]:
    """This environment without the test suite's Django settings."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def normalized(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 240) -> str:
    """Run a command; return its output, or fail the test showing it."""
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )
    if result.returncode:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


@dataclass
class Built:
    sdist: Path
    wheel: Path


@dataclass
class CleanVenv:
    python: Path
    site_packages: Path
    installed: dict[str, dict[str, object]]  # pip's installation report, by name

    def python_out(self, code: str, cwd: Path) -> str:
        return run(self.python, "-c", code, cwd=cwd).strip()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    outdir = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", outdir, REPO)
    [sdist] = outdir.glob("*.tar.gz")
    [wheel] = outdir.glob("*.whl")
    return Built(sdist, wheel)


@pytest.fixture(scope="module")
def clean_venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> CleanVenv:
    root = tmp_path_factory.mktemp("clean")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    report = root / "report.json"
    run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--report",
        report,
        "--find-links",
        built.wheel.parent,
        f"{DIST_NAME}[binary,metrics]=={VERSION}",
        # The Django release this suite runs on: Django 6.1 under make test-django61.
        f"Django=={django.__version__}",
        cwd=root,
    )
    installed = {
        normalized(item["metadata"]["name"]): item
        for item in json.loads(report.read_text())["install"]
    }
    site_packages = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    )
    return CleanVenv(python, site_packages, installed)


def test_the_wheel_holds_the_pgpubsub_package_and_nothing_else_at_the_top(built):
    assert built.wheel.name == f"pgpubsub_django-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(built.wheel) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"pgpubsub_django-{VERSION}.dist-info/METADATA").decode()
    assert {name.split("/")[0] for name in names} == {
        "pgpubsub",
        f"pgpubsub_django-{VERSION}.dist-info",
    }
    assert f"pgpubsub/{TEMPLATE}" in names
    # pyproject.toml lists the packages by hand: every module must be there.
    modules = {path.relative_to(REPO).as_posix() for path in (REPO / "pgpubsub").rglob("*.py")}
    assert modules - set(names) == set()
    assert "pgpubsub/py.typed" in names
    assert "Name: pgpubsub-django\n" in metadata
    assert {"Provides-Extra: binary", "Provides-Extra: metrics"} <= set(metadata.splitlines())


def test_the_sdist_keeps_the_templates_at_the_top_of_the_repository(built):
    with tarfile.open(built.sdist) as sdist:
        names = sdist.getnames()
    root = f"pgpubsub_django-{VERSION}"
    assert f"{root}/{TEMPLATE}" in names
    assert f"{root}/pgpubsub/{TEMPLATE}" not in names


def test_the_extras_resolve_to_the_built_wheel_and_their_dependencies(built, clean_venv):
    ours = clean_venv.installed[DIST_NAME]
    assert ours["download_info"]["url"] == built.wheel.as_uri()
    assert sorted(ours["requested_extras"]) == ["binary", "metrics"]
    # From the extras: psycopg's bundled libpq and the Prometheus client.
    assert {"psycopg-binary", "prometheus-client", "django-pgtrigger", "msgspec"} <= set(
        clean_venv.installed
    )
    assert clean_venv.installed["django"]["metadata"]["version"] == django.__version__


def test_the_installed_package_imports_as_pgpubsub_and_knows_its_version(clean_venv, tmp_path):
    out = clean_venv.python_out(
        "import importlib.metadata as m, pgpubsub; "
        "print(pgpubsub.__version__, m.version('pgpubsub-django'), pgpubsub.__file__)",
        cwd=tmp_path,
    )
    version, metadata_version, location = out.split(" ", 2)
    assert version == metadata_version == VERSION
    assert Path(location) == clean_venv.site_packages / "pgpubsub" / "__init__.py"


def test_the_installed_templates_are_inside_the_package(clean_venv, tmp_path):
    assert (clean_venv.site_packages / "pgpubsub" / TEMPLATE).is_file()
    assert not (clean_venv.site_packages / "migrations_templates").exists()
    text = clean_venv.python_out(
        "import sys; from pgpubsub.sql import template; sys.stdout.write(template('pgpubsub_v1'))",
        cwd=tmp_path,
    )
    assert text == (REPO / TEMPLATE).read_text(encoding="utf-8").strip()


# -- a new project --------------------------------------------------------

SHOP_MODELS = """
from django.db import models


class Order(models.Model):
    reference = models.CharField(max_length=40)
"""

SHOP_CHANNELS = """
from dataclasses import dataclass

from pgpubsub import TriggerChannel

from .models import Order


@dataclass
class OrderChannel(TriggerChannel):
    model = Order
"""

SHOP_LISTENERS = """
import pgpubsub

from .channels import OrderChannel


@pgpubsub.post_insert_listener(OrderChannel)
def order_placed(old, new):
    print(f"order placed: {new.reference}", flush=True)
"""


@pytest.fixture
def new_database() -> Iterator[str]:
    """An empty database on the test server, as a libpq URL."""
    server = os.environ["DATABASE_URL"]
    name = f"pgpubsub_new_project_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(server, dbname=name)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def start_project(clean_venv: CleanVenv, root: Path, database_url: str) -> Path:
    """``startproject`` and ``startapp``, then what the quickstart asks to add."""
    bin_dir = clean_venv.python.parent
    run(bin_dir / "django-admin", "startproject", "mysite", cwd=root)
    project = root / "mysite"
    run(clean_venv.python, "manage.py", "startapp", "shop", cwd=project)
    (project / "shop" / "models.py").write_text(SHOP_MODELS)
    (project / "shop" / "channels.py").write_text(SHOP_CHANNELS)
    (project / "shop" / "listeners.py").write_text(SHOP_LISTENERS)
    params = conninfo_to_dict(database_url)
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname"),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
    }
    with (project / "mysite" / "settings.py").open("a") as settings:
        settings.write(
            textwrap.dedent(f"""
                INSTALLED_APPS += ["pgtrigger", "pgpubsub", "shop"]
                DATABASES = {{"default": {database!r}}}
            """)
        )
    return project


def test_a_new_django_project_installs_it_and_runs_listen(clean_venv, new_database, tmp_path):
    project = start_project(clean_venv, tmp_path, new_database)
    manage = [clean_venv.python, "manage.py"]
    run(*manage, "makemigrations", "shop", cwd=project)
    run(*manage, "migrate", cwd=project)

    worker = subprocess.Popen(
        [str(arg) for arg in [*manage, "listen"]],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
    )
    lines: list[str] = []

    def read() -> None:
        assert worker.stdout is not None
        for line in worker.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    output = "".join
    try:
        wait_for(
            lambda: (
                "ready, listening on shop.channels.OrderChannel" in output(lines)
                or worker.poll() is not None
            ),
            timeout=60,
            what="the new project's worker to be ready",
        )
        assert worker.poll() is None, output(lines)
        run(
            *manage,
            "shell",
            "-c",
            "from shop.models import Order; Order.objects.create(reference='first-order')",
            cwd=project,
        )
        wait_for(
            lambda: "order placed: first-order" in output(lines) or worker.poll() is not None,
            timeout=60,
            what="the listener's line in the worker's output",
        )
        assert "order placed: first-order" in output(lines), output(lines)
    finally:
        worker.terminate()
        worker.wait(30)
        reader.join(5)
    assert worker.returncode == 0, output(lines)
