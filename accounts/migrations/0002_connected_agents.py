import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def online_unless_chosen(apps, schema_editor):
    # Offline was the default, not a choice: agents who never picked an
    # availability show as online while they have the workspace open.
    User = apps.get_model("accounts", "User")
    User.objects.filter(availability_changed_at__isnull=True).update(
        availability="online"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="user",
            name="availability",
            field=models.CharField(
                choices=[
                    ("online", "Online"),
                    ("away", "Away"),
                    ("offline", "Offline"),
                ],
                default="online",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="user",
            name="connected",
            field=models.BooleanField(default=False),
        ),
        migrations.CreateModel(
            name="LiveTab",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                ("channel_name", models.CharField(max_length=200, unique=True)),
                ("opened_at", models.DateTimeField(auto_now_add=True)),
                ("seen_at", models.DateTimeField(db_index=True)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="live_tabs",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
        migrations.RunPython(online_unless_chosen, migrations.RunPython.noop),
    ]
