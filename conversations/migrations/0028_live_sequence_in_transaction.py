# Live events are numbered in the transaction that writes them again (0026
# numbered them after commit). Events a process of that design left
# unnumbered get their inbox's next numbers before the column turns NOT NULL.

from django.db import migrations, models


def number_the_unnumbered(apps, schema_editor):
    LiveEvent = apps.get_model("conversations", "LiveEvent")
    LiveStream = apps.get_model("conversations", "LiveStream")
    waiting = LiveEvent.objects.filter(sequence__isnull=True)
    for number_id in waiting.values_list("number_id", flat=True).distinct():
        stream, _ = LiveStream.objects.get_or_create(number_id=number_id)
        events = list(waiting.filter(number_id=number_id).order_by("id"))
        for offset, event in enumerate(events, start=1):
            event.sequence = stream.last_sequence + offset
        LiveEvent.objects.bulk_update(events, ["sequence"], batch_size=500)
        stream.last_sequence += len(events)
        stream.save(update_fields=["last_sequence"])


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0027_identity_db_defaults"),
    ]

    operations = [
        migrations.RunPython(number_the_unnumbered, migrations.RunPython.noop),
        migrations.RemoveIndex(
            model_name="liveevent",
            name="live_event_unnumbered",
        ),
        migrations.AlterField(
            model_name="liveevent",
            name="sequence",
            field=models.BigIntegerField(default=0),
        ),
    ]
