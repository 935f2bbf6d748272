import django.db.models.deletion
from django.db import migrations, models

# Existing events get their inbox's numbers in id order, and each inbox's
# counter starts after its last event.
NUMBER_EXISTING_EVENTS = """
UPDATE conversations_liveevent SET sequence = numbered.sequence
FROM (
    SELECT id, row_number() OVER (PARTITION BY number_id ORDER BY id) AS sequence
    FROM conversations_liveevent
) AS numbered
WHERE conversations_liveevent.id = numbered.id
"""
START_COUNTERS = """
INSERT INTO conversations_livestream (number_id, last_sequence)
SELECT number_id, max(sequence) FROM conversations_liveevent GROUP BY number_id
"""


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0024_identity_edits"),
    ]

    operations = [
        migrations.AddField(
            model_name="liveevent",
            name="sequence",
            field=models.BigIntegerField(default=0),
        ),
        migrations.CreateModel(
            name="LiveStream",
            fields=[
                (
                    "number",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="live_stream",
                        serialize=False,
                        to="conversations.whatsappnumber",
                    ),
                ),
                ("last_sequence", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunSQL(NUMBER_EXISTING_EVENTS, migrations.RunSQL.noop),
        migrations.RunSQL(START_COUNTERS, migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="liveevent",
            constraint=models.UniqueConstraint(
                fields=("number", "sequence"), name="live_event_sequence"
            ),
        ),
    ]
