"""The stored-notification table as django-pgpubsub 1.3.1 left it.

pgpubsub keeps django-pgpubsub's migration names 0001-0006 so that a database
migrated by django-pgpubsub 1.3.1 continues with 0007, which upgrades it; a
new database runs all of them. This migration creates 1.3.1's final table
directly (without its db_version trigger); 0002-0006 are placeholders.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Notification",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("channel", models.CharField(max_length=63)),
                ("payload", models.JSONField()),
                ("created_at", models.DateTimeField(auto_now_add=True, null=True)),
                ("db_version", models.IntegerField(null=True)),
            ],
            options={"ordering": ["created_at"]},
        ),
    ]
