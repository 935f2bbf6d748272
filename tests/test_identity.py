"""Username-era identity: a customer found by phone or BSUID, two customers
that turn out to be one merged (history kept, the merge recorded), number
and BSUID changes re-keyed, status contacts learnt from, and sends that
name the customer in Meta's `to` or `recipient` field."""

import pytest

from conversations import services
from conversations.models import (
    ConsentRecord,
    Conversation,
    Customer,
    CustomerIdentityChange,
    CustomerMerge,
    Message,
    MessageTemplate,
)
from conversations.whatsapp import client
from tests.factories import ConversationFactory, CustomerFactory, MessageFactory
from tests.fixtures.inbound import CUSTOMER_WA_ID, process
from tests.fixtures.payloads import load_payload_json

BSUID = "US.13491208655302741918"


def test_a_username_customer_without_a_phone_is_created_by_bsuid(meta_number):
    process("bsuid_only")

    customer = Customer.objects.get()
    assert (customer.wa_id, customer.phone) == ("", "")
    assert customer.user_id == BSUID
    assert customer.username == "@sheena"
    assert customer.conversations.get().messages.get().text == "Hi from a username"


def test_the_same_customer_sharing_a_phone_later_stays_one_customer(meta_number):
    process("bsuid_only")
    process("bsuid_text_with_phone")

    customer = Customer.objects.get()
    assert (customer.wa_id, customer.user_id) == (CUSTOMER_WA_ID, BSUID)
    assert customer.phone == f"+{CUSTOMER_WA_ID}"
    conversation = customer.conversations.get()
    assert conversation.messages.count() == 2
    assert not CustomerMerge.objects.exists()


def test_a_phone_customer_and_a_bsuid_customer_meet_in_one(meta_number):
    by_phone = CustomerFactory(wa_id=CUSTOMER_WA_ID, name="Sheena (shop)")
    old = ConversationFactory(customer=by_phone, number=meta_number)
    MessageFactory(conversation=old, text="from the phone, years ago")
    ConsentRecord.objects.create(
        customer=by_phone,
        purpose=ConsentRecord.Purpose.UTILITY,
        status=ConsentRecord.Status.OPT_IN,
        source=ConsentRecord.Source.CHECKOUT,
    )
    process("bsuid_only")
    by_bsuid = Customer.objects.get(user_id=BSUID)
    assert by_bsuid != by_phone

    process("bsuid_text_with_phone")

    (survivor,) = Customer.objects.all()
    assert survivor.pk == by_phone.pk, "the older customer survives"
    assert (survivor.wa_id, survivor.user_id) == (CUSTOMER_WA_ID, BSUID)
    assert survivor.name == "Sheena (shop)"
    assert survivor.username == "@sheena"
    # Both unresolved conversations were on the same number: one joined the
    # survivor resolved, with its messages; nothing was lost.
    conversations = survivor.conversations.order_by("id")
    assert conversations.count() == 2
    assert conversations.exclude(status=Conversation.Status.RESOLVED).count() == 1
    texts = set(
        Message.objects.filter(conversation__customer=survivor).values_list(
            "text", flat=True
        )
    )
    assert texts == {
        "from the phone, years ago",
        "Hi from a username",
        "Here is my number after all",
    }
    assert survivor.consents.count() == 1
    (merge,) = CustomerMerge.objects.all()
    assert merge.survivor == survivor
    assert merge.absorbed_customer_id == by_bsuid.pk
    assert merge.absorbed_user_id == BSUID
    assert merge.conversations_moved == 1


def test_merging_the_same_pair_twice_changes_nothing_more(meta_number):
    first = CustomerFactory(wa_id=CUSTOMER_WA_ID)
    second = CustomerFactory(wa_id="", phone="", user_id=BSUID)

    survivor = services.merge_customers(first=first, second=second)
    again = services.merge_customers(first=first, second=second)

    assert survivor.pk == again.pk == first.pk
    assert CustomerMerge.objects.count() == 1
    assert Customer.objects.get().user_id == BSUID


def test_a_number_change_rekeys_and_keeps_the_old_number(meta_number):
    process("text")
    customer = Customer.objects.get()

    process("system_user_changed_number")

    customer.refresh_from_db()
    assert customer.wa_id == "16505553333"
    (change,) = customer.identity_changes.all()
    assert change.kind == CustomerIdentityChange.Kind.NUMBER
    assert (change.old_value, change.new_value) == (CUSTOMER_WA_ID, "16505553333")


def test_a_number_change_to_a_number_that_already_wrote_merges_the_two(meta_number):
    process("text")
    old = Customer.objects.get()
    newer = CustomerFactory(wa_id="16505553333")
    ConversationFactory(customer=newer, number=meta_number, status="resolved")

    process("system_user_changed_number")

    (survivor,) = Customer.objects.all()
    assert survivor.pk == old.pk
    assert survivor.wa_id == "16505553333"
    assert survivor.conversations.count() == 2
    assert survivor.identity_changes.count() == 1
    assert CustomerMerge.objects.get().absorbed_wa_id == "16505553333"


def test_a_bsuid_change_rekeys_and_keeps_the_old_bsuid(meta_number):
    process("bsuid_text_with_phone")

    process("system_user_changed_user_id")

    customer = Customer.objects.get()
    assert customer.user_id == "US.20000000000000000001"
    assert customer.wa_id == "16505553333", "the new number came with it"
    change = customer.identity_changes.get(kind=CustomerIdentityChange.Kind.USER_ID)
    assert change.old_value == BSUID
    assert customer.conversations.get().messages.count() == 2


def test_the_contacts_of_a_delivered_status_update_the_customer(meta_number):
    customer = CustomerFactory(wa_id=CUSTOMER_WA_ID, username="")
    conversation = ConversationFactory(customer=customer, number=meta_number)
    document = load_payload_json("bsuid_status_delivered")
    status = document["entry"][0]["changes"][0]["value"]["statuses"][0]
    MessageFactory(
        conversation=conversation,
        direction="outbound",
        status="sent",
        wamid=status["id"],
    )

    process(document)

    customer.refresh_from_db()
    assert customer.user_id == BSUID
    assert customer.username == "@sheena"
    assert customer.wa_id == CUSTOMER_WA_ID, "an empty wa_id never blanks the phone"


# --- Sends: `to` for a phone, `recipient` for a BSUID ------------------------------


def test_a_send_names_the_phone_in_to_when_it_is_known():
    body = client.build_message(
        wa_id="4917012345678", user_id=BSUID, type="text", content={"body": "Hi"}
    )
    assert body["to"] == "+4917012345678"
    assert "recipient" not in body


def test_a_send_names_the_bsuid_in_recipient_when_only_it_is_known():
    body = client.build_message(
        wa_id="", user_id=BSUID, type="text", content={"body": "Hi"}
    )
    assert body["recipient"] == BSUID
    assert "to" not in body


def test_a_send_without_any_id_is_a_programming_error():
    with pytest.raises(ValueError):
        client.build_message(type="text", content={"body": "Hi"})


@pytest.mark.django_db
def test_an_authentication_template_to_a_customer_without_a_phone_is_refused(
    meta_number,
):
    customer = CustomerFactory(wa_id="", phone="", user_id=BSUID)
    conversation = ConversationFactory(customer=customer, number=meta_number)
    template = MessageTemplate.objects.create(
        waba_id=meta_number.waba_id,
        name="login_code",
        language="en",
        category=MessageTemplate.Category.AUTHENTICATION,
        status=MessageTemplate.Status.APPROVED,
        components=[
            {"type": "BODY", "text": "*{{1}}* is your verification code."},
            {
                "type": "BUTTONS",
                "buttons": [{"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy"}],
            },
        ],
    )

    with pytest.raises(services.PhoneRequired) as refused:
        services.send_template(
            conversation=conversation,
            template=template,
            parameters={"body": ["123456"], "buttons": ["123456"]},
        )

    assert refused.value.code == "phone_required"
    assert not Message.objects.filter(direction="outbound").exists()
