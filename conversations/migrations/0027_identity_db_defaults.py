# Database defaults for the identity columns (0019-0024): a row inserted by
# a process that does not know them yet (a rolling deploy) or by raw SQL gets
# the value the ORM would give it, instead of failing on NOT NULL.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0026_live_sequence_after_commit"),
    ]

    operations = [
        migrations.AlterField(
            model_name="conversation",
            name="group_id",
            field=models.CharField(blank=True, db_default="", max_length=256),
        ),
        migrations.AlterField(
            model_name="message",
            name="edit_history",
            field=models.JSONField(blank=True, db_default=[], default=list),
        ),
        migrations.AlterField(
            model_name="message",
            name="from_business_app",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.AlterField(
            model_name="messagetemplate",
            name="quality_score",
            field=models.CharField(blank=True, db_default="", max_length=20),
        ),
        migrations.AlterField(
            model_name="notification",
            name="user_id",
            field=models.CharField(blank=True, db_default="", max_length=256),
        ),
    ]
