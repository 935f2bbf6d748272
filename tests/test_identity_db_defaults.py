"""The identity columns have database defaults: a row inserted by a process
that does not know them yet (a rolling deploy) or by raw SQL is stored with
the same value the ORM would give it."""

import pytest
from django.db import connection

from conversations.models import (
    Conversation,
    Message,
    MessageTemplate,
    Notification,
    NotificationBatch,
)
from tests.factories import (
    ConversationFactory,
    MessageFactory,
    WhatsAppNumberFactory,
)


def _insert_without(model, pk: int, omitted: str, changed: dict[str, str]):
    """Copy row `pk` of `model` with raw SQL, leaving out `omitted` (and the
    id) and replacing the columns in `changed` by SQL expressions (to keep
    unique constraints); return the new row's value of `omitted`."""
    table = model._meta.db_table
    columns = [
        field.column
        for field in model._meta.concrete_fields
        if field.column not in ("id", omitted)
    ]
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    values = ", ".join(changed.get(c, connection.ops.quote_name(c)) for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({names}) SELECT {values} FROM {table} "  # noqa: S608
            f"WHERE id = %s RETURNING id",
            [pk],
        )
        new_id = cursor.fetchone()[0]
    return model.objects.filter(pk=new_id).values_list(omitted, flat=True).get()


@pytest.mark.django_db
def test_message_columns_default_in_the_database():
    message = MessageFactory(wamid="wamid.db-default")
    changed = {"wamid": "wamid || '.copy'"}
    assert _insert_without(Message, message.pk, "from_business_app", changed) is False
    changed = {"wamid": "wamid || '.copy2'"}
    assert _insert_without(Message, message.pk, "edit_history", changed) == []


@pytest.mark.django_db
def test_conversation_group_id_defaults_in_the_database():
    conversation = ConversationFactory(status=Conversation.Status.RESOLVED)
    assert _insert_without(Conversation, conversation.pk, "group_id", {}) == ""


@pytest.mark.django_db
def test_template_quality_score_defaults_in_the_database():
    template = MessageTemplate.objects.create(
        waba_id=WhatsAppNumberFactory().waba_id,
        name="order_update",
        language="en",
        category=MessageTemplate.Category.UTILITY,
        status=MessageTemplate.Status.APPROVED,
    )
    changed = {"name": "name || '_copy'"}
    assert _insert_without(MessageTemplate, template.pk, "quality_score", changed) == ""


@pytest.mark.django_db
def test_notification_user_id_defaults_in_the_database():
    batch = NotificationBatch.objects.create(name="db default")
    notification = Notification.objects.create(
        to="+4917012345678",
        number=WhatsAppNumberFactory(),
        purpose="utility",
        template_name="order_update",
        template_language="en",
        batch=batch,
        state=Notification.State.REFUSED,
    )
    assert _insert_without(Notification, notification.pk, "user_id", {}) == ""
