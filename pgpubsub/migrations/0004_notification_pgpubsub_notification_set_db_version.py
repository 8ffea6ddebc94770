"""Placeholder keeping django-pgpubsub 1.3.1's migration name (see 0001_initial)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("pgpubsub", "0003_notification_db_version")]

    operations = []
