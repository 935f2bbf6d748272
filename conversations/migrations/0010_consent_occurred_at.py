"""Consent records say when they happened (occurred_at) beside when they were
recorded, and which webhook event they came from (event_key).

The newest record by occurred_at decides, so a late or replayed
user_preferences webhook no longer overrides a newer record, and the same
event adds one record only. Records kept so far happened, as far as the
helpdesk knows, when they were recorded.
"""

import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.db.models import F


def occurred_when_recorded(apps, schema_editor):
    records = apps.get_model("conversations", "ConsentRecord").objects
    records.using(schema_editor.connection.alias).update(occurred_at=F("recorded_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0009_record_consent_permission"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="consentrecord",
            options={
                "ordering": ["-occurred_at", "-id"],
                "permissions": [
                    ("record_consent", "Can record customers' consent through the API")
                ],
            },
        ),
        migrations.RemoveIndex(
            model_name="consentrecord",
            name="consent_latest_per_purpose",
        ),
        migrations.AddField(
            model_name="consentrecord",
            name="event_key",
            field=models.CharField(blank=True, max_length=255),
        ),
        migrations.AddField(
            model_name="consentrecord",
            name="occurred_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(occurred_when_recorded, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="consentrecord",
            index=models.Index(
                fields=["customer", "purpose", "-occurred_at"],
                name="consent_current_per_purpose",
            ),
        ),
        migrations.AddConstraint(
            model_name="consentrecord",
            constraint=models.UniqueConstraint(
                condition=models.Q(("event_key", ""), _negated=True),
                fields=("customer", "event_key"),
                name="unique_consent_event",
            ),
        ),
    ]
