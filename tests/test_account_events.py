"""Template, number-quality and account webhooks update or record what they concern."""

from django.urls import reverse

from conversations.models import (
    AccountNotice,
    ConsentRecord,
    MessageTemplate,
    ParkedStatus,
    WebhookEvent,
)
from tests.factories import UserFactory
from tests.fixtures.inbound import FIXTURE_WABA_ID, process, store_event


def test_template_status_creates_an_unknown_template(meta_number):
    event = process("template_status_update")

    assert event.state == WebhookEvent.State.PROCESSED
    template = MessageTemplate.objects.get()
    assert (template.name, template.language, template.waba_id) == (
        "order_confirmation",
        "en_US",
        FIXTURE_WABA_ID,
    )
    assert template.template_id == "1689556908129832"
    assert template.status == "REJECTED"
    assert "INVALID_FORMAT" in template.status_reason
    assert "Variables can't be at the start" in template.status_reason


def test_template_status_updates_a_known_template(meta_number):
    template = MessageTemplate.objects.create(
        waba_id=FIXTURE_WABA_ID,
        name="order_confirmation",
        language="en_US",
        category=MessageTemplate.Category.UTILITY,
        status=MessageTemplate.Status.APPROVED,
    )
    process("template_status_update")

    template.refresh_from_db()
    assert template.status == "REJECTED"
    assert MessageTemplate.objects.count() == 1


def test_template_status_for_an_unknown_waba_is_unroutable(db):
    event = process("template_status_update")

    assert event.state == WebhookEvent.State.UNROUTABLE
    assert FIXTURE_WABA_ID in event.last_error
    assert not MessageTemplate.objects.exists()


def test_phone_number_quality_updates_the_number(meta_number):
    event = process("phone_number_quality_update")

    assert event.state == WebhookEvent.State.PROCESSED
    meta_number.refresh_from_db()
    assert meta_number.quality_event == "THROUGHPUT_UPGRADE"
    assert meta_number.messaging_limit == "TIER_10K"
    assert meta_number.quality_updated_at is not None
    notice = AccountNotice.objects.get()
    assert notice.kind == "phone_number_quality_update"
    assert notice.number == meta_number
    assert "TIER_2K" in notice.summary


def test_account_updates_are_recorded_for_admins(meta_number):
    for fixture in (
        "account_update",
        "account_update_restriction",
        "account_update_violation",
    ):
        assert process(fixture).state == WebhookEvent.State.PROCESSED

    notices = {n.event: n for n in AccountNotice.objects.all()}
    assert set(notices) == {
        "DISABLED_UPDATE",
        "ACCOUNT_RESTRICTION",
        "ACCOUNT_VIOLATION",
    }
    assert "SCHEDULE_FOR_DISABLE" in notices["DISABLED_UPDATE"].summary
    assert notices["DISABLED_UPDATE"].raw["ban_info"]["waba_ban_date"]


def test_account_errors_are_recorded(meta_number):
    process("value_errors")

    notice = AccountNotice.objects.get()
    assert (notice.kind, notice.event, notice.number) == (
        "errors",
        "130429",
        meta_number,
    )
    assert "Rate limit hit" in notice.summary


def test_template_quality_and_category_updates(meta_number):
    assert process("template_quality_update").state == WebhookEvent.State.PROCESSED
    assert process("template_category_update").state == WebhookEvent.State.PROCESSED

    assert AccountNotice.objects.filter(kind="message_template_quality_update").exists()
    assert MessageTemplate.objects.exists()


def test_a_marketing_stop_is_recorded_as_an_opt_out(meta_number):
    process("user_preferences")

    record = ConsentRecord.objects.get()
    assert record.purpose == ConsentRecord.Purpose.MARKETING
    assert record.status == ConsentRecord.Status.OPT_OUT
    assert record.source == ConsentRecord.Source.WHATSAPP


def test_admin_process_again_processes_selected_events(client, db, team):
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    from tests.factories import MetaAppFactory, WhatsAppNumberFactory

    app = MetaAppFactory()
    event = process("text", app)
    assert event.state == WebhookEvent.State.UNROUTABLE
    WhatsAppNumberFactory(app=app, phone_number_id="106540352242922")

    response = client.post(
        reverse("admin:conversations_webhookevent_changelist"),
        {"action": "process_again", "_selected_action": [event.pk]},
        follow=True,
    )

    assert response.status_code == 200
    event.refresh_from_db()
    assert event.state == WebhookEvent.State.PROCESSED
    assert b"Processed 1 event" in response.content


def test_admin_lists_parked_statuses_and_notices(client, meta_number):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    process("status_delivered")
    process("account_update")
    store_event("text")
    assert ParkedStatus.objects.exists()

    for name in ("parkedstatus", "accountnotice", "webhookevent"):
        url = reverse(f"admin:conversations_{name}_changelist")
        assert client.get(url).status_code == 200, name
    parked = ParkedStatus.objects.get()
    url = reverse("admin:conversations_parkedstatus_change", args=[parked.pk])
    assert client.get(url).status_code == 200
