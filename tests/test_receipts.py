"""Blue ticks and "typing…" reach the customer once, not once per call: the
markers live in the real Redis the delivery limiters use."""

import pytest
from django.utils import timezone

from conversations import services
from conversations.delivery import doorbells, ratelimit
from tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def rung(monkeypatch):
    """The tasks the services asked Celery for, instead of a broker."""
    tasks = []
    monkeypatch.setattr(
        doorbells, "ring", lambda task, *args, **options: tasks.append((task, *args))
    )
    return tasks


@pytest.fixture
def conversation():
    conversation = ConversationFactory(last_inbound_at=timezone.now())
    connection = ratelimit.connection()
    for key in (
        services.READ_KEY.format(conversation.pk),
        services.TYPING_KEY.format(conversation.pk),
    ):
        connection.delete(key)
    return conversation


def test_the_newest_message_is_marked_read_once(
    conversation, rung, django_capture_on_commit_callbacks
):
    newest = MessageFactory(conversation=conversation)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.mark_read(conversation=conversation) == newest
        assert services.mark_read(conversation=conversation) is None
    newer = MessageFactory(conversation=conversation)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.mark_read(conversation=conversation) == newer

    assert rung == [
        (doorbells.SEND_READ_RECEIPT, newest.pk),
        (doorbells.SEND_READ_RECEIPT, newer.pk),
    ]


def test_typing_is_shown_at_most_once_per_interval(
    conversation, rung, django_capture_on_commit_callbacks
):
    newest = MessageFactory(conversation=conversation)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.send_typing_indicator(conversation=conversation) is True
        assert services.send_typing_indicator(conversation=conversation) is False

    assert rung == [(doorbells.SEND_TYPING, newest.pk)]
