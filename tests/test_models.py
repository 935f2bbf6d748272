import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.models import Conversation, Customer, Message, mask_secret
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    MessageFactory,
    WhatsAppNumberFactory,
)

pytestmark = pytest.mark.django_db


def test_a_wamid_is_unique():
    MessageFactory(wamid="wamid.SAME")
    with pytest.raises(IntegrityError), transaction.atomic():
        MessageFactory(wamid="wamid.SAME")
    assert Message.objects.filter(wamid="wamid.SAME").count() == 1


def test_outbound_messages_not_yet_accepted_may_all_lack_a_wamid():
    conversation = ConversationFactory()
    for _ in range(2):
        MessageFactory(
            conversation=conversation,
            direction=Message.Direction.OUTBOUND,
            status=Message.Status.QUEUED,
            wamid=None,
        )
    assert conversation.messages.filter(wamid__isnull=True).count() == 2


def test_an_inbound_message_needs_a_wamid():
    with pytest.raises(IntegrityError), transaction.atomic():
        MessageFactory(direction=Message.Direction.INBOUND, wamid=None)


def test_a_customer_needs_a_wa_id_or_a_user_id():
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(wa_id="", user_id="")
    assert Customer.objects.create(wa_id="", user_id="US.13491208655302741918")
    assert Customer.objects.create(wa_id="4917012345678", user_id="")


def test_wa_id_and_user_id_are_each_unique_when_present():
    CustomerFactory(wa_id="4917000000001", user_id="")
    CustomerFactory(wa_id="", user_id="US.1")
    CustomerFactory(wa_id="", user_id="US.2")
    with pytest.raises(IntegrityError), transaction.atomic():
        CustomerFactory(wa_id="4917000000001")
    with pytest.raises(IntegrityError), transaction.atomic():
        CustomerFactory(wa_id="", user_id="US.1")


def test_a_customer_has_one_unresolved_conversation_per_number():
    customer = CustomerFactory()
    number = WhatsAppNumberFactory()
    ConversationFactory(customer=customer, number=number)
    with pytest.raises(IntegrityError), transaction.atomic():
        ConversationFactory(
            customer=customer, number=number, status=Conversation.Status.PENDING
        )
    ConversationFactory(customer=customer, number=WhatsAppNumberFactory())


def test_resolved_conversations_do_not_block_a_new_one():
    customer = CustomerFactory()
    number = WhatsAppNumberFactory()
    for _ in range(2):
        ConversationFactory(
            customer=customer, number=number, status=Conversation.Status.RESOLVED
        )
    ConversationFactory(customer=customer, number=number)
    assert customer.conversations.count() == 3


def test_a_status_only_moves_forward():
    message = Message(direction="outbound", status=Message.Status.DELIVERED)
    assert message.can_move_to(Message.Status.READ) is True
    assert message.can_move_to(Message.Status.SENT) is False
    assert message.can_move_to(Message.Status.DELIVERED) is False
    assert message.can_move_to(Message.Status.FAILED) is True
    message.status = Message.Status.FAILED
    assert message.can_move_to(Message.Status.READ) is False


def test_an_agent_given_name_wins_over_the_profile_name():
    customer = Customer(wa_id="491700", profile_name="Anna W.", phone="+491700")
    assert customer.display_name == "Anna W."
    customer.name = "Anna Weber"
    assert customer.display_name == "Anna Weber"
    assert Customer(wa_id="", user_id="US.9").display_name == "US.9"


def test_secrets_are_masked_to_their_last_four_characters():
    assert mask_secret("EAAGm0PX4ZCpsBAKJ1234") == "••••••••1234"
    assert "abc" not in mask_secret("abcdefg")
    assert mask_secret("") == ""


def test_messages_are_ordered_by_meta_timestamp_not_by_arrival():
    conversation = ConversationFactory()
    now = timezone.now()
    later = MessageFactory(
        conversation=conversation, timestamp=now, wamid="wamid.LATER"
    )
    earlier = MessageFactory(
        conversation=conversation,
        timestamp=now - timezone.timedelta(seconds=30),
        wamid="wamid.EARLIER",
    )
    assert list(conversation.messages.all()) == [earlier, later]
