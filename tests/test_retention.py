"""Retention: only what is old enough and finished goes, in batches."""

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from conversations import metrics, services
from conversations.models import LiveEvent, Message, WebhookEvent
from tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db

State = WebhookEvent.State


def event(state, age_days):
    return WebhookEvent.objects.create(
        body=b"{}", state=state, received_at=timezone.now() - timedelta(days=age_days)
    )


@override_settings(WEBHOOK_EVENT_RETENTION_DAYS=30, RETENTION_BATCH=2)
def test_only_old_processed_webhook_events_are_purged_in_batches():
    old_processed = [event(State.PROCESSED, 40) for _ in range(5)]
    kept = [
        event(State.PROCESSED, 10),
        event(State.PENDING, 40),
        event(State.FAILED, 40),
        event(State.MALFORMED, 40),
        event(State.UNROUTABLE, 40),
    ]
    purged = services.purge_expired()
    assert purged.webhook_events == len(old_processed)
    remaining = set(WebhookEvent.objects.values_list("pk", flat=True))
    assert remaining == {e.pk for e in kept}


def test_purged_processed_events_still_count_as_finished():
    def finished():
        collected = {m.name: m for m in metrics.HelpdeskCollector().collect()}
        samples = collected["helpdesk_webhook_events_finished"].samples
        return next(s.value for s in samples if s.labels["state"] == "processed")

    event(State.PROCESSED, 40)
    before = finished()
    with override_settings(WEBHOOK_EVENT_RETENTION_DAYS=30):
        assert services.purge_expired().webhook_events == 1
    assert finished() == before


@override_settings(LIVE_EVENT_RETENTION_DAYS=7, RETENTION_BATCH=3)
def test_live_events_go_after_their_own_age(number):
    old = [
        LiveEvent.objects.create(number=number, type="x", sequence=seq)
        for seq in range(1, 5)
    ]
    LiveEvent.objects.filter(pk__in=[e.pk for e in old]).update(
        created_at=timezone.now() - timedelta(days=8)
    )
    new = LiveEvent.objects.create(number=number, type="x", sequence=5)
    assert services.purge_expired().live_events == 4
    assert list(LiveEvent.objects.values_list("pk", flat=True)) == [new.pk]


def stored_media(age_days):
    message = MessageFactory(
        conversation=ConversationFactory(),
        type="image",
        media_state=Message.MediaState.STORED,
        timestamp=timezone.now() - timedelta(days=age_days),
    )
    message.media_file.save("photo.jpg", ContentFile(b"jpeg"), save=True)
    return message


def test_media_files_are_kept_unless_their_setting_says():
    message = stored_media(400)
    services.purge_expired()
    message.refresh_from_db()
    assert message.media_state == Message.MediaState.STORED
    assert message.media_file.storage.exists(message.media_file.name)


@override_settings(MEDIA_RETENTION_DAYS=90, RETENTION_BATCH=1)
def test_old_media_files_are_deleted_and_their_messages_kept():
    old, new = stored_media(100), stored_media(10)
    old_name = old.media_file.name
    assert services.purge_expired().media_files == 1
    old.refresh_from_db()
    new.refresh_from_db()
    assert old.media_state == Message.MediaState.PURGED
    assert not old.media_file
    assert not old.media_file.storage.exists(old_name)
    assert new.media_state == Message.MediaState.STORED
    assert new.media_file.storage.exists(new.media_file.name)


@override_settings(WEBHOOK_EVENT_RETENTION_DAYS=30)
def test_the_command_purges_and_says_how_much(capsys):
    event(State.PROCESSED, 31)
    event(State.PENDING, 31)
    call_command("purge_expired")
    assert "Purged 1 webhook events, 0 live events, 0 media files." in (
        capsys.readouterr().out
    )
    assert list(WebhookEvent.objects.values_list("state", flat=True)) == ["pending"]
