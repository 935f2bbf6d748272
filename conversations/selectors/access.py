"""One conversation a user may see, with its number, in one hand-written read.

Every reply through the API reads it first. The rule is
ConversationQuerySet.visible_to (every number with VIEW_ALL_NUMBERS, else
those of the user's teams); the ORM's compilation of it cost more CPU than
PostgreSQL takes to answer, so the same semi-join is written here once, and
tests/test_api_reply_query_count.py holds it equal to visible_to.
"""

import functools

from django.db import connection

from accounts.models import User
from helpdesk.rows import Columns

from ..models import Conversation, WhatsAppNumber, sees_every_number


@functools.cache
def _read() -> tuple[str, str, Columns, Columns]:
    conversation, number = Columns(Conversation, "c"), Columns(WhatsAppNumber, "n")
    number_teams, member_teams = WhatsAppNumber.teams.field, User.teams.field
    sql = (
        f"SELECT {conversation.sql}, {number.sql}"  # noqa: S608
        f" FROM {Conversation._meta.db_table} c"
        f" JOIN {WhatsAppNumber._meta.db_table} n ON n.id = c.number_id"
        " WHERE c.id = %s"
    )
    team = member_teams.m2m_reverse_name()
    teams = (
        f" AND EXISTS (SELECT 1 FROM {number_teams.m2m_db_table()} nt"  # noqa: S608
        f" JOIN {member_teams.m2m_db_table()} tm"
        f" ON tm.{team} = nt.{number_teams.m2m_reverse_name()}"
        f" WHERE nt.{number_teams.m2m_column_name()} = c.number_id"
        f" AND tm.{member_teams.m2m_column_name()} = %s)"
    )
    return sql, sql + teams, conversation, number


def visible_conversation(user, pk: int) -> Conversation | None:
    """The conversation `pk` with its number, or None when the user may not
    see it (or it does not exist: the caller answers both alike)."""
    every, by_team, conversation_columns, number_columns = _read()
    with connection.cursor() as cursor:
        if sees_every_number(user):
            cursor.execute(every, [pk])
        else:
            cursor.execute(by_team, [pk, user.pk])
        row = cursor.fetchone()
    if row is None:
        return None
    width = conversation_columns.width
    conversation = conversation_columns.build(row[:width])
    number = number_columns.build(row[width:])
    Conversation.number.field.set_cached_value(conversation, number)
    return conversation
