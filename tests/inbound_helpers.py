"""Helpers for the inbound tests: the fixtures' business number, stored events."""

from django.utils import timezone

from conversations import services
from conversations.models import LiveEvent, WebhookEvent
from tests.payload_fixtures import dump_payload, load_payload

# The number every fixture in tests/payloads/ is addressed to.
FIXTURE_PHONE_NUMBER_ID = "106540352242922"
FIXTURE_WABA_ID = "102290129340398"
FIXTURE_DISPLAY_NUMBER = "+15550783881"
CUSTOMER_WA_ID = "16505551234"


def store_event(body: bytes | dict | str) -> WebhookEvent:
    """Store a webhook POST body the way the endpoint does."""
    if isinstance(body, dict):
        body = dump_payload(body)
    elif isinstance(body, str):
        body = load_payload(body)
    return WebhookEvent.objects.create(body=body, received_at=timezone.now())


def process(body: bytes | dict | str) -> WebhookEvent:
    """Store a body (a fixture name, bytes or a dict) and process it."""
    event = store_event(body)
    services.process_webhook_event(event_id=event.pk)
    event.refresh_from_db()
    return event


def live_event_types(**filters) -> list[str]:
    return list(
        LiveEvent.objects.filter(**filters)
        .order_by("id")
        .values_list("type", flat=True)
    )
