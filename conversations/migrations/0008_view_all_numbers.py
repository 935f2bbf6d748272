"""Seeing every number becomes a permission (conversations.view_all_numbers).

Staff status used to mean "sees every team's conversations" without saying
so. Now only the permission (or superuser status) does; staff members keep
what they saw: each is granted view_all_numbers, and view_reports, which
staff status also opened until now. Revoke them in the admin where staff
should only administer.
"""

from django.db import migrations

GRANTS = [
    ("whatsappnumber", "view_all_numbers", "Can see every number's conversations"),
    ("notification", "view_reports", "Can see the reports page"),
]


def grant_staff(apps, schema_editor):
    alias = schema_editor.connection.alias
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(alias)
    permissions = apps.get_model("auth", "Permission").objects.using(alias)
    users = apps.get_model("accounts", "User").objects.using(alias)
    staff = list(users.filter(is_staff=True, is_superuser=False))
    if not staff:
        return
    # Django creates permissions after migrating (post_migrate): make them now.
    granted = []
    for model, codename, name in GRANTS:
        content_type, _ = content_types.get_or_create(
            app_label="conversations", model=model
        )
        permission, _ = permissions.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        granted.append(permission)
    for user in staff:
        user.user_permissions.add(*granted)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_closed_tabs"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("conversations", "0007_workspace_perf_trigram_search"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="whatsappnumber",
            options={
                "ordering": ["name"],
                "permissions": [
                    ("view_all_numbers", "Can see every number's conversations")
                ],
                "verbose_name": "WhatsApp number",
            },
        ),
        migrations.RunPython(grant_staff, migrations.RunPython.noop),
    ]
