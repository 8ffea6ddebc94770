"""End to end: a project's migrations install its triggers after the SQL they call.

A throw-away project is generated in a temporary directory, with an app
``blog`` (its label sorts before ``pgpubsub``, so Django would migrate it
first if nothing ordered it) that has a broadcast and a durable channel and
a data migration writing rows of both models. Its commands run as
subprocesses against a new, empty database: ``makemigrations``,
``migrate``, ``manage.py test`` and ``check``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e]

DEPENDENCY = "('pgpubsub', '0008_pgpubsub_v2'),"

FILES = {
    "manage.py": """
        import os
        import sys

        if __name__ == "__main__":
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_settings")
            from django.core.management import execute_from_command_line

            execute_from_command_line(sys.argv)
    """,
    "site_settings.py": """
        import os

        from psycopg.conninfo import conninfo_to_dict

        _params = conninfo_to_dict(os.environ["DATABASE_URL"])
        SECRET_KEY = "migration-order-test"
        USE_TZ = True
        DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
        INSTALLED_APPS = [
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "pgtrigger",
            "pgpubsub",
            "blog",
        ]
        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": _params.pop("dbname"),
                "USER": _params.pop("user", ""),
                "PASSWORD": _params.pop("password", ""),
                "HOST": _params.pop("host", ""),
                "PORT": _params.pop("port", ""),
                "OPTIONS": _params,
            }
        }
    """,
    "blog/__init__.py": "",
    "blog/migrations/__init__.py": "",
    "blog/models.py": """
        from django.db import models


        class Article(models.Model):
            title = models.CharField(max_length=100)


        class Comment(models.Model):
            text = models.TextField()
    """,
    "blog/channels.py": """
        from dataclasses import dataclass

        from pgpubsub import TriggerChannel

        from .models import Article, Comment


        @dataclass
        class ArticleChannel(TriggerChannel):
            model = Article


        @dataclass
        class CommentChannel(TriggerChannel):
            model = Comment
            lock_notifications = True
    """,
    "blog/listeners.py": """
        import pgpubsub

        from .channels import ArticleChannel, CommentChannel


        @pgpubsub.post_insert_listener(ArticleChannel)
        def article_published(old, new):
            pass


        @pgpubsub.post_insert_listener(CommentChannel)
        def comment_posted(old, new):
            pass
    """,
    "blog/tests.py": """
        from django.test import TestCase

        from pgpubsub.models import Notification

        from .channels import CommentChannel
        from .models import Article, Comment


        class TriggersWork(TestCase):
            def test_rows_written_in_the_data_migration_and_now(self):
                self.assertEqual(Article.objects.get().title, "from the data migration")
                Article.objects.create(title="in a test")
                Comment.objects.create(text="in a test")
                # The durable trigger stored the comment (and the data migration's).
                self.assertEqual(Notification.from_channel(CommentChannel).count(), 2)
    """,
}

DATA_MIGRATION = """
    from django.db import migrations


    def write_rows(apps, schema_editor):
        apps.get_model("blog", "Article").objects.create(title="from the data migration")
        apps.get_model("blog", "Comment").objects.create(text="from the data migration")


    class Migration(migrations.Migration):
        dependencies = [("blog", "0001_initial")]
        operations = [migrations.RunPython(write_rows, migrations.RunPython.noop)]
"""


def write_project(root: Path) -> None:
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def manage(root: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(root)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_makemigrations_writes_the_dependency_and_a_fresh_database_migrates_and_tests(
    tmp_path, empty_database
):
    write_project(tmp_path)
    ok(manage(tmp_path, empty_database, "makemigrations", "blog"))
    initial = (tmp_path / "blog/migrations/0001_initial.py").read_text()
    assert DEPENDENCY in initial
    # The durable channel's trigger writes the outbox (version 1's defaults)
    # and both wake readers up through version 2's protocol.
    assert "pg_try_advisory_xact_lock_shared(1885827187" in initial
    (tmp_path / "blog/migrations/0002_rows.py").write_text(textwrap.dedent(DATA_MIGRATION))

    ok(manage(tmp_path, empty_database, "migrate"))
    assert "pgpubsub.W001" not in ok(manage(tmp_path, empty_database, "check"))
    assert "OK" in ok(manage(tmp_path, empty_database, "test", "blog"))


def test_a_migration_written_without_the_dependency_is_ordered_and_named_by_a_check(
    tmp_path, empty_database
):
    """A migration file written before makemigrations wrote the dependency."""
    write_project(tmp_path)
    ok(manage(tmp_path, empty_database, "makemigrations", "blog"))
    initial = tmp_path / "blog/migrations/0001_initial.py"
    initial.write_text(initial.read_text().replace(DEPENDENCY, ""))
    (tmp_path / "blog/migrations/0002_rows.py").write_text(textwrap.dedent(DATA_MIGRATION))

    ok(manage(tmp_path, empty_database, "migrate"))
    plan = ok(manage(tmp_path, empty_database, "showmigrations", "--plan"))
    assert plan.index("pgpubsub.0008_pgpubsub_v2") < plan.index("blog.0001_initial")
    assert "OK" in ok(manage(tmp_path, empty_database, "test", "blog"))

    report = ok(manage(tmp_path, empty_database, "check"))
    assert (
        "(pgpubsub.W001) migration blog.0001_initial installs triggers that use pgpubsub's SQL "
        "(versions 1, 2), which the migration pgpubsub.0008_pgpubsub_v2 installs, but it does not "
        "depend on that migration"
    ) in report
    assert (
        "pgpubsub runs it after pgpubsub.0008_pgpubsub_v2 all the same; to make the order "
        f"explicit, add this line to the dependencies of {initial}:\n    {DEPENDENCY}"
    ) in report


# A migration as django-pgpubsub 1.3.1's makemigrations wrote them: no
# dependency on pgpubsub, and a trigger that uses nothing of pgpubsub's SQL
# version 1 (it inserts into the outbox with VALUES and notifies itself).
LEGACY_INITIAL = """
    import pgtrigger.compiler
    import pgtrigger.migrations
    from django.db import migrations, models


    class Migration(migrations.Migration):
        initial = True
        dependencies = []
        operations = [
            migrations.CreateModel(
                name="Article",
                fields=[
                    ("id", models.BigAutoField(primary_key=True, serialize=False)),
                    ("title", models.CharField(max_length=100)),
                ],
            ),
            pgtrigger.migrations.AddTrigger(
                model_name="article",
                trigger=pgtrigger.compiler.Trigger(
                    name="pgpubsub_legacy",
                    sql=pgtrigger.compiler.UpsertTriggerSql(
                        declare="DECLARE stored_id TEXT;",
                        func=(
                            "INSERT INTO pgpubsub_notification (channel, payload) "
                            "VALUES ('pgpubsub_legacy', to_jsonb(NEW)) "
                            "RETURNING id::text INTO stored_id; "
                            "PERFORM pg_notify('pgpubsub_legacy', stored_id); RETURN NEW;"
                        ),
                        hash="0000000000000000000000000000000000000000",
                        operation="INSERT",
                        pgid="pgtrigger_pgpubsub_legacy_00000",
                        table="blog_article",
                        when="AFTER",
                    ),
                ),
            ),
        ]
"""


def test_a_database_migrated_before_the_sql_keeps_a_consistent_history(tmp_path, empty_database):
    """Only migrations that use pgpubsub's SQL are ordered after the migration
    installing it: an app migration of django-pgpubsub 1.3.1, applied while
    pgpubsub stood at 0006, stays valid (no InconsistentMigrationHistory),
    and the next one depends on 0008."""
    write_project(tmp_path)
    (tmp_path / "blog/migrations/0001_initial.py").write_text(textwrap.dedent(LEGACY_INITIAL))
    ok(manage(tmp_path, empty_database, "migrate", "pgpubsub", "0006"))
    ok(manage(tmp_path, empty_database, "migrate", "blog", "0001"))
    state = ok(manage(tmp_path, empty_database, "showmigrations", "pgpubsub", "blog"))
    assert "[X] 0001_initial" in state and "[ ] 0007_pgpubsub_v1" in state

    ok(manage(tmp_path, empty_database, "makemigrations", "blog"))
    [added] = (tmp_path / "blog/migrations").glob("0002_*.py")
    assert DEPENDENCY in added.read_text()
    output = ok(manage(tmp_path, empty_database, "migrate"))
    assert output.index("pgpubsub.0008_pgpubsub_v2") < output.index(f"blog.{added.stem}")
    assert "pgpubsub.W001" not in ok(manage(tmp_path, empty_database, "check"))
