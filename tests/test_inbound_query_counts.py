"""Processing a customer's message costs a bounded number of queries, however
much is stored, and a redelivery leaves no trace."""

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import realtime, services
from conversations.models import Conversation, Customer, LiveEvent, Message
from tests.factories import ConversationFactory, CustomerFactory, MessageFactory
from tests.fixtures.inbound import process, store_event
from tests.fixtures.payloads import load_payload_json

# Event row locked, numbers, customer upsert, conversation, message insert,
# the conversation's last-message fields, the inbox's live-event sequences,
# the live events, the event's state; the test database's savepoint around
# the task's transaction adds 2. A new conversation asks once whether a team
# auto-assigns the number's.
NEW_CUSTOMER_MAX_QUERIES = 12
KNOWN_CUSTOMER_MAX_QUERIES = 11


def text_from(wa_id: str, wamid: str) -> dict:
    body = load_payload_json("text")
    value = body["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["wa_id"] = wa_id
    value["messages"][0]["from"] = wa_id
    value["messages"][0]["id"] = wamid
    return body


def queries_to_process(body: dict) -> int:
    event = store_event(body)
    with CaptureQueriesContext(connection) as captured:
        services.process_webhook_event(event_id=event.pk)
    return len(captured.captured_queries)


def add_history(number, customers: int, messages_each: int) -> None:
    for index in range(customers):
        conversation = ConversationFactory(
            customer=CustomerFactory(wa_id=f"4930{index:07d}"), number=number
        )
        for _ in range(messages_each):
            MessageFactory(conversation=conversation)


def test_a_new_customers_message_costs_a_bounded_number_of_queries(
    meta_number, django_assert_max_num_queries
):
    event = store_event(text_from("491700000001", "wamid.first"))
    with django_assert_max_num_queries(NEW_CUSTOMER_MAX_QUERIES):
        services.process_webhook_event(event_id=event.pk)

    assert Message.objects.get().conversation.customer.wa_id == "491700000001"


def test_a_known_customers_message_costs_a_bounded_number_of_queries(
    meta_number, django_assert_max_num_queries
):
    process(text_from("491700000001", "wamid.first"))
    event = store_event(text_from("491700000001", "wamid.second"))
    with django_assert_max_num_queries(KNOWN_CUSTOMER_MAX_QUERIES):
        services.process_webhook_event(event_id=event.pk)

    assert Conversation.objects.get().unread_count == 2


def test_the_query_count_does_not_grow_with_stored_history(meta_number):
    process(text_from("491700000001", "wamid.warm"))  # first-use costs aside
    new_before = queries_to_process(text_from("491700000002", "wamid.a"))
    known_before = queries_to_process(text_from("491700000002", "wamid.b"))

    add_history(meta_number, customers=30, messages_each=5)
    new_after = queries_to_process(text_from("491700000003", "wamid.c"))
    known_after = queries_to_process(text_from("491700000003", "wamid.d"))

    assert (new_after, known_after) == (new_before, known_before)


def test_a_batch_writes_its_live_events_in_one_statement(meta_number):
    body = text_from("491700000001", "wamid.one")
    value = body["entry"][0]["changes"][0]["value"]
    second = dict(value["messages"][0], id="wamid.two")
    value["messages"].append(second)
    event = store_event(body)
    with CaptureQueriesContext(connection) as captured:
        services.process_webhook_event(event_id=event.pk)

    inserts = [
        query
        for query in captured.captured_queries
        if query["sql"].startswith('INSERT INTO "conversations_liveevent"')
    ]
    assert len(inserts) == 1
    types = list(LiveEvent.objects.order_by("id").values_list("type", flat=True))
    assert types == [
        realtime.CONVERSATION_CREATED,
        realtime.MESSAGE_CREATED,
        realtime.MESSAGE_CREATED,
    ]
    assert Message.objects.count() == 2


def test_a_redelivery_does_not_reopen_a_resolved_conversation(meta_number, settings):
    settings.CONVERSATION_REOPEN_HOURS = 24
    event = process("text")
    conversation = Conversation.objects.get()
    resolved_at = Message.objects.get().timestamp + timedelta(hours=1)
    Conversation.objects.filter(pk=conversation.pk).update(
        status=Conversation.Status.RESOLVED, resolved_at=resolved_at
    )
    live_events = LiveEvent.objects.count()

    services.process_webhook_event(event_id=event.pk, force=True)

    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.RESOLVED
    assert conversation.resolved_at == resolved_at
    assert LiveEvent.objects.count() == live_events
    assert Message.objects.count() == 1


def test_a_redelivery_leaves_no_new_conversation_or_customer(meta_number):
    event = process("text")
    Conversation.objects.update(
        status=Conversation.Status.RESOLVED,
        resolved_at=Message.objects.get().timestamp - timedelta(days=30),
    )
    # The customer has since changed number: the old wa_id is free again.
    Customer.objects.update(wa_id="4915199999999")

    services.process_webhook_event(event_id=event.pk, force=True)

    assert Conversation.objects.count() == 1
    assert list(Customer.objects.values_list("wa_id", flat=True)) == ["4915199999999"]
