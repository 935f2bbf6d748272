"""A trigram index for searching customers by WhatsApp username, on
PostgreSQL only, built as migration 0007 builds the other search indexes
(CONCURRENTLY, so outside a transaction)."""

from django.db import migrations

INDEX = "customer_username_trgm"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON conversations_customer "
        'USING gin ((UPPER("username"::text)) gin_trgm_ops)'
    )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("conversations", "0019_identity_merges"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index, elidable=False),
    ]
