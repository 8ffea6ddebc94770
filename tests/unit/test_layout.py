"""The package's layout: imports point one way, web processes stay light, SQL lives in sql.py.

These read the source (and, for what a web process loads, import it in a
fresh interpreter); none needs the database.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "pgpubsub"


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports when it runs.

    Imports inside functions count (they run too); those under ``if
    TYPE_CHECKING:`` do not.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from . import conf`` imports the module pgpubsub.conf, and
            # ``from .channel import X`` the module pgpubsub.channel. (A
            # module's own package is being imported already; that is no edge.)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            found.update(submodules or {base})
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles a depth-first walk of ``graph`` meets (empty for a DAG)."""
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    return cycles


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_import_graph_sees_relative_imports():
    # The walk above must see them, or it proves nothing.
    graph = import_graph()
    assert "pgpubsub.registry" in graph["pgpubsub.channel"]
    assert "pgpubsub.channel" not in graph["pgpubsub.registry"]  # type-only there
    assert "pgpubsub.conf" in graph["pgpubsub.worker"]  # from . import conf


#: The layers of docs/internals.rst, from the bottom of the import graph up:
#: a module imports only from its own layer and the layers before it.
LAYERS = [
    ["exceptions", "conf", "observe", "logs", "backoff", "selfpipe", "sql", "server_version"],
    ["wire", "codec", "rows", "positions", "wakeups"],
    ["registry", "context", "channel", "models", "triggers", "listeners", "notify"],
    ["connector", "connection", "store", "outbox", "eventlog", "retention"],
    ["calling", "delivery", "broadcast", "durable", "hub"],
    ["probes", "status", "drift", "migration_order", "checks", "admin", "eventjson", "scope"],
    [
        "worker",
        "supervisor",
        "testing",
        "testing.capturing",
        "testing.delivering",
        "testing.pytest_plugin",
        "testing.reading",
        "listen",
        "sse",
    ],
    [
        "contrib",
        "contrib.channels",
        "contrib.reflex",
        "health",
        "metrics",
        "opsserver",
        "endpoints",
        "apps",
        "payloads",
        "management",
        "management.commands",
        "management.commands.listen",
        "management.commands.pgpubsub",
        "",  # the package's __init__, the public API
    ],
]


def layer_of(module: str) -> int:
    name = module.removeprefix("pgpubsub").removeprefix(".")
    if name.startswith("migrations"):
        return len(LAYERS)  # migrations use the SQL and the models: above everything
    return next(index for index, layer in enumerate(LAYERS) if name in layer)


def test_every_module_has_a_layer():
    missing = [
        module
        for module in modules()
        if not module.startswith("pgpubsub.migrations")
        and not any(module.removeprefix("pgpubsub").removeprefix(".") in layer for layer in LAYERS)
    ]
    assert missing == []


def test_imports_point_down_the_layers():
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


#: pgpubsub's modules a web process must never load: the worker loop,
#: delivery, and the worker's HTTP endpoints.
WORKER_ONLY = [
    "pgpubsub.worker",
    "pgpubsub.supervisor",
    "pgpubsub.delivery",
    "pgpubsub.broadcast",
    "pgpubsub.durable",
    "pgpubsub.opsserver",
    "pgpubsub.endpoints",
    "pgpubsub.health",
    "pgpubsub.metrics",
]

# Run in a fresh interpreter: which of WORKER_ONLY a web process has loaded
# once it imports the admin and the status, and whether http.server was
# loaded while one of pgpubsub's modules was being imported. (Django itself
# may load http.server: Django 4.2's django.contrib.postgres imports
# django.test, which the test project's models reach. That is not ours.)
WEB_PROCESS = """
import json, os, sys, traceback

package = os.path.join(os.getcwd(), "pgpubsub") + os.sep
http_server_loaded_by = []


class Watch:
    # Asked first about every module imported for the first time.
    def find_spec(self, name, path=None, target=None):
        if name == "http.server":
            http_server_loaded_by.extend(
                frame.filename
                for frame in traceback.extract_stack()
                if frame.filename.startswith(package)
            )
        return None


sys.meta_path.insert(0, Watch())
import django

django.setup()
loaded_by_django = "http.server" in sys.modules
import pgpubsub.admin, pgpubsub.status

print(json.dumps({
    "loaded": [name for name in WORKER_ONLY if name in sys.modules],
    "http.server": sorted(set(http_server_loaded_by)),
    "http.server loaded by Django": loaded_by_django,
}))
"""


def web_process(script: str) -> dict[str, object]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.project.settings",
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, "-c", f"WORKER_ONLY = {WORKER_ONLY!r}\n{script}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return found


def test_admin_and_status_load_neither_the_worker_nor_delivery_nor_an_http_server():
    found = web_process(WEB_PROCESS)
    assert (found["loaded"], found["http.server"]) == ([], [])


def test_the_web_process_check_sees_http_server_loaded_by_pgpubsub():
    # The check above must see an import that pgpubsub makes, or it proves nothing.
    found = web_process(WEB_PROCESS.replace("import pgpubsub.admin,", "import pgpubsub.opsserver,"))
    assert found["loaded"] == ["pgpubsub.opsserver"]
    if not found["http.server loaded by Django"]:
        assert found["http.server"] == [str(PACKAGE / "opsserver.py")]


def test_the_worker_only_list_names_modules_that_exist():
    assert set(WORKER_ONLY) <= set(modules())


# -- SQL lives in pgpubsub/sql.py ----------------------------------------------------

# What a statement looks like: a string that starts with an SQL command, or
# that calls one of the functions pgpubsub's SQL calls, or reads its tables.
_STATEMENT = re.compile(
    r"^\s*NOTIFY\s+\w+\s*(,|;|$)"
    r"|^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|LISTEN|UNLISTEN|CREATE|DROP|ALTER|TRUNCATE|LOCK\s+TABLE|SET\s+\w+|PERFORM|WITH\s+\w+\s+AS|DO\s+\$"
    r"|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b"
    r"|\b(pg_notify|set_config|current_setting|pgpubsub_publish_v\d+)\s*\("
    r"|\bFROM\s+(pgpubsub_|pg_)\w+",
)

#: Where SQL may be written: the named queries, and the migrations (with the
#: frozen templates, which are not Python).
SQL_HOMES = {"pgpubsub.sql"}


def sql_strings(path: Path) -> list[tuple[int, str]]:
    """String constants in ``path`` that look like SQL, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    documentation = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in documentation
        and _STATEMENT.search(node.value)
    ]


def test_sql_is_written_only_in_sql_py():
    found = [
        f"{path.relative_to(REPO)}:{line}: {text.strip()[:60]!r}"
        for name, path in modules().items()
        if name not in SQL_HOMES and not name.startswith("pgpubsub.migrations")
        for line, text in sql_strings(path)
    ]
    assert not found, "SQL outside pgpubsub/sql.py:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "text",
    [
        "SELECT 1",
        "  DELETE FROM x WHERE id = %s",
        "UPDATE pgpubsub_notification SET state = 'dead'",
        "SELECT set_config('statement_timeout', %s, false)",
        "pg_notify(%s, '')",
        "count(*) FROM pgpubsub_notification",
        "LISTEN {}",
        "NOTIFY pgpubsub_abc, 'x'",
    ],
)
def test_the_sql_finder_recognises_statements(text, tmp_path):
    module = tmp_path / "module.py"
    module.write_text(f"QUERY = {text!r}\n", encoding="utf-8")
    assert sql_strings(module)


def test_the_sql_finder_leaves_prose_alone(tmp_path):
    module = tmp_path / "module.py"
    module.write_text(
        '"""Runs SELECT 1 on a probe."""\n'
        'MESSAGE = "the worker\'s LISTEN connection is down"\n'
        'ADVICE = "drop it with DROP TRIGGER t ON x"\n'
        'LINE = "NOTIFY queue usage: 1%"\n',
        encoding="utf-8",
    )
    assert sql_strings(module) == []


def test_sql_py_holds_sql(tmp_path):
    # The finder is not blind to the file it exempts.
    assert len(sql_strings(PACKAGE / "sql.py")) > 10
