"""The consent ledger's current state: the newest record by when it happened
decides, so a late, replayed or reprocessed user_preferences webhook never
overrides a newer record, and the same event is recorded once."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from conversations import services
from conversations.models import AccountNotice, ConsentRecord, Customer
from conversations.selectors import consent as consent_selectors
from tests.fixtures.business import api_client_for
from tests.fixtures.inbound import CUSTOMER_WA_ID, process, store_event
from tests.fixtures.payloads import dump_payload, load_payload_json

# The time of the captured user_preferences payload (a "stop").
FIXTURE_TIME = datetime.fromtimestamp(1731705721, tz=UTC)


def preference(value: str, at: datetime) -> bytes:
    """Meta's user_preferences webhook: marketing messages stopped or resumed."""
    body = load_payload_json("user_preferences")
    change = body["entry"][0]["changes"][0]["value"]["user_preferences"][0]
    change.update(value=value, timestamp=int(at.timestamp()))
    return dump_payload(body)


def customer() -> Customer:
    return Customer.objects.get(wa_id=CUSTOMER_WA_ID)


def marketing() -> str | None:
    return consent_selectors.latest_consent(customer().pk, "marketing")


def test_a_redelivered_or_reprocessed_event_is_recorded_once(meta_number):
    first = process("user_preferences")
    process("user_preferences")  # Meta delivers it again
    services.process_webhook_event(event_id=first.pk, force=True)  # "Process again"

    record = ConsentRecord.objects.get()
    assert (record.status, record.source) == ("opt_out", "whatsapp")
    assert record.occurred_at == FIXTURE_TIME
    assert record.recorded_at > FIXTURE_TIME


def test_a_late_stop_does_not_override_a_newer_opt_in(meta_number):
    process("text")  # the customer exists
    services.record_consent(
        customer=customer(), purpose="marketing", status="opt_in", source="checkout"
    )

    process("user_preferences")  # stopped in 2024, heard of only now

    assert marketing() == "opt_in"
    assert services.has_consent(customer(), "marketing")
    # Kept in the ledger, in its place.
    ledger = list(customer().consents.values_list("status", "source"))
    assert ledger == [("opt_in", "checkout"), ("opt_out", "whatsapp")]


def test_events_processed_out_of_order_leave_the_newest_current(meta_number):
    now = timezone.now()
    resumed = store_event(preference("resume", now - timedelta(minutes=1)))
    stopped = store_event(preference("stop", now - timedelta(minutes=5)))

    services.process_webhook_event(event_id=resumed.pk)
    services.process_webhook_event(event_id=stopped.pk)

    assert marketing() == "opt_in"
    assert customer().consents.count() == 2


def test_a_newer_event_overrides_an_older_record(meta_number):
    process("text")
    opt_in = services.record_consent(
        customer=customer(), purpose="marketing", status="opt_in", source="checkout"
    )
    ConsentRecord.objects.filter(pk=opt_in.pk).update(
        occurred_at=timezone.now() - timedelta(hours=1)
    )

    process(preference("stop", timezone.now() - timedelta(minutes=1)))

    assert marketing() == "opt_out"


def test_only_marketing_preferences_are_recorded(meta_number):
    body = load_payload_json("user_preferences")
    change = body["entry"][0]["changes"][0]["value"]["user_preferences"][0]
    change["category"] = "some_future_category"

    process(dump_payload(body))

    assert not ConsentRecord.objects.exists()
    assert AccountNotice.objects.get().kind == "user_preferences"


def test_the_ledger_api_orders_by_when_it_happened(meta_number, admin_user):
    process("text")
    services.record_consent(
        customer=customer(), purpose="marketing", status="opt_in", source="checkout"
    )
    process("user_preferences")

    ledger = (
        api_client_for(admin_user)
        .get(f"/api/v1/customers/{customer().pk}/consents/")
        .json()["results"]
    )

    assert [(r["status"], r["source"]) for r in ledger] == [
        ("opt_in", "checkout"),
        ("opt_out", "whatsapp"),
    ]
    assert ledger[1]["occurred_at"] == "2024-11-15T21:22:01Z"
    assert ledger[1]["recorded_at"] > ledger[0]["recorded_at"]


@pytest.mark.django_db(transaction=True)
def test_upgrading_dates_kept_records_when_they_were_recorded():
    before = [("conversations", "0009_record_consent_permission")]
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        customer = old.get_model("conversations", "Customer").objects.create(
            wa_id="4917012345678"
        )
        record = old.get_model("conversations", "ConsentRecord").objects.create(
            customer=customer, purpose="utility", status="opt_in", source="checkout"
        )
        MigrationExecutor(connection).migrate(latest)
    finally:
        MigrationExecutor(connection).migrate(latest)

    migrated = ConsentRecord.objects.get(pk=record.pk)
    assert migrated.occurred_at == migrated.recorded_at
    assert migrated.event_key == ""


# A signup for marketing messages: no example of Meta's, modelled on the
# documented fields (tests/payloads/SOURCES.md).
SIGNUP_TIME = datetime.fromtimestamp(1739321024, tz=UTC)


def test_a_signup_in_whatsapp_is_a_marketing_opt_in_in_its_own_words(
    meta_number, admin_user, agent_client
):
    process("user_preferences")  # stopped in 2024
    first = process("user_preferences_signup")
    services.process_webhook_event(event_id=first.pk, force=True)

    signup = customer().consents.get(occurred_at=SIGNUP_TIME)
    assert (signup.purpose, signup.status, signup.source) == (
        "marketing",
        "opt_in",
        "whatsapp",
    )
    assert signup.wording == "User signed up for marketing messages"
    assert customer().consents.count() == 2
    assert marketing() == "opt_in"
    assert services.has_consent(customer(), "marketing")
    ledger = (
        api_client_for(admin_user)
        .get(f"/api/v1/customers/{customer().pk}/consents/")
        .json()["results"]
    )
    assert (ledger[0]["status"], ledger[0]["wording"]) == (
        "opt_in",
        "User signed up for marketing messages",
    )
    process("text")  # a conversation to open
    conversation = customer().conversations.get()
    page = agent_client.get(f"/conversations/{conversation.pk}/").content.decode()
    assert "Marketing: Opted in" in page
    assert "User signed up for marketing messages" in page


def test_an_unknown_preference_is_shown_to_admins_and_never_guessed_as_consent(
    meta_number,
):
    body = load_payload_json("user_preferences")
    change = body["entry"][0]["changes"][0]["value"]["user_preferences"][0]
    change.update(value="snooze", detail="User snoozed marketing messages")

    event = process(dump_payload(body))
    services.process_webhook_event(event_id=event.pk, force=True)

    assert not ConsentRecord.objects.exists()
    notice = AccountNotice.objects.get()
    assert (notice.kind, notice.event, notice.number) == (
        "user_preferences",
        "snooze",
        meta_number,
    )
    assert "'snooze'" in notice.summary
    assert "User snoozed marketing messages" in notice.summary
    assert notice.occurred_at == FIXTURE_TIME
