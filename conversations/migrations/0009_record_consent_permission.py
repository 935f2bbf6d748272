"""Recording consent through the API needs conversations.record_consent.

Until now any logged-in user could. Staff members, who see every number
since 0008, keep doing so: each is granted the permission. The business's
systems that record consent need it granted (and view_all_numbers to record
it for numbers that are not customers yet).
"""

from django.db import migrations


def grant_staff(apps, schema_editor):
    alias = schema_editor.connection.alias
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(alias)
    permissions = apps.get_model("auth", "Permission").objects.using(alias)
    users = apps.get_model("accounts", "User").objects.using(alias)
    staff = list(users.filter(is_staff=True, is_superuser=False))
    if not staff:
        return
    # Django creates permissions after migrating (post_migrate): make it now.
    content_type, _ = content_types.get_or_create(
        app_label="conversations", model="consentrecord"
    )
    permission, _ = permissions.get_or_create(
        content_type=content_type,
        codename="record_consent",
        defaults={"name": "Can record customers' consent through the API"},
    )
    for user in staff:
        user.user_permissions.add(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0008_view_all_numbers"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="consentrecord",
            options={
                "ordering": ["-recorded_at", "-id"],
                "permissions": [
                    ("record_consent", "Can record customers' consent through the API")
                ],
            },
        ),
        migrations.RunPython(grant_staff, migrations.RunPython.noop),
    ]
