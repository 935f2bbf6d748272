"""Django's ModelBackend, with a user's permissions read in one statement.

Every API request asks ``has_perm`` at least once (whether the user sees
every number); the stock backend reads the user's own permissions and their
groups' in two ORM queries, whose compilation costs more CPU than the
database takes to answer. Here both come in one hand-written statement,
cached on the user for the request as the stock backend caches them.

An API request's token, its user and those permissions are one read too
(`token_and_user`, for conversations/api/authentication.py).
"""

import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from helpdesk.rows import Columns


def _permissions_sql(user_model) -> str:
    permission = Permission._meta.db_table
    content_type = ContentType._meta.db_table
    own = user_model.user_permissions.through
    own_user = user_model.user_permissions.field.m2m_column_name()
    user_groups = user_model.groups.through
    groups_user = user_model.groups.field.m2m_column_name()
    group_permissions = Group.permissions.through._meta.db_table
    return (
        f"SELECT ct.app_label, p.codename FROM {permission} p"  # noqa: S608
        f" JOIN {content_type} ct ON ct.id = p.content_type_id"
        f" WHERE p.id IN (SELECT permission_id FROM {own._meta.db_table}"
        f" WHERE {own_user} = %s)"
        f" OR p.id IN (SELECT gp.permission_id FROM {group_permissions} gp"
        f" JOIN {user_groups._meta.db_table} ug ON ug.group_id = gp.group_id"
        f" WHERE ug.{groups_user} = %s)"
    )


class OneReadModelBackend(ModelBackend):
    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            if user_obj.is_superuser:
                rows = Permission.objects.values_list(
                    "content_type__app_label", "codename"
                )
            else:
                with connection.cursor() as cursor:
                    sql = _permissions_sql(type(user_obj))
                    cursor.execute(sql, [user_obj.pk, user_obj.pk])
                    rows = cursor.fetchall()
            user_obj._perm_cache = {
                f"{app_label}.{codename}" for app_label, codename in rows
            }
        return user_obj._perm_cache


# --- A token's user, for every API request ---------------------------------------


@functools.cache
def _token_read() -> tuple[str, Columns, Columns]:
    from rest_framework.authtoken.models import Token

    user_model = get_user_model()
    token, user = Columns(Token, "t"), Columns(user_model, "u")
    permissions = _permissions_sql(user_model).replace("%s", "u.id")
    # Off PostgreSQL (SQLite, in development) the permissions are read when
    # first asked, by OneReadModelBackend.
    if connection.vendor == "postgresql":
        permissions = (
            "CASE WHEN u.is_superuser THEN NULL ELSE"  # noqa: S608
            f" ARRAY(SELECT q.app_label || '.' || q.codename FROM ({permissions}) q)"
            " END"
        )
    else:
        permissions = "NULL"
    sql = (
        f"SELECT {token.sql}, {user.sql}, {permissions}"  # noqa: S608
        f" FROM {Token._meta.db_table} t"
        f" JOIN {user_model._meta.db_table} u ON u.id = t.user_id WHERE t.key = %s"
    )
    return sql, token, user


def token_and_user(key: str):
    """(token, its user) for a token's key, or None: one hand-written read
    that also brings the user's permissions, cached on the user as
    OneReadModelBackend caches them (a superuser's are read when asked)."""
    sql, token_columns, user_columns = _token_read()
    with connection.cursor() as cursor:
        cursor.execute(sql, [key])
        row = cursor.fetchone()
    if row is None:
        return None
    token = token_columns.build(row[: token_columns.width])
    user = user_columns.build(row[token_columns.width : -1])
    if row[-1] is not None:
        user._perm_cache = set(row[-1])
    token.user = user
    return token, user
