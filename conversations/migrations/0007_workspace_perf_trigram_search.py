"""Trigram indexes for the inbox search, on PostgreSQL only.

The search is Django's icontains, which PostgreSQL runs as
UPPER(column::text) LIKE UPPER('%q%'); a GIN index on that very expression
with pg_trgm's operator class answers it without reading every message.
SQLite (development, tests) has no such index and scans, as before.

The indexes are built CONCURRENTLY (so outside a transaction): at a million
messages that takes a while, and inbound processing must not wait for it.
"""

from django.db import migrations

# (index name, table, column): each indexed as UPPER(column::text).
INDEXES = [
    ("msg_text_trgm", "conversations_message", "text"),
    ("customer_name_trgm", "conversations_customer", "name"),
    ("customer_profile_name_trgm", "conversations_customer", "profile_name"),
    ("customer_phone_trgm", "conversations_customer", "phone"),
    ("customer_wa_id_trgm", "conversations_customer", "wa_id"),
]


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, table, column in INDEXES:
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} "
            f'USING gin ((UPPER("{column}"::text)) gin_trgm_ops)'
        )


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _, _ in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("conversations", "0006_business_notifications"),
    ]

    operations = [
        migrations.RunPython(create_indexes, drop_indexes, elidable=False),
    ]
