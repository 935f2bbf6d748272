"""The read API (/api/v1/): shapes, filters, pagination, visibility, query counts."""

import pytest
from django.core.files.base import ContentFile

from conversations.models import Conversation, Customer, Label, Message, Reaction
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    MessageFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)
from tests.fixtures.inbound import CUSTOMER_WA_ID, process


@pytest.fixture
def other_number(db):
    number = WhatsAppNumberFactory()
    number.teams.add(TeamFactory(name="Billing"))
    return number


def test_anonymous_requests_are_refused_with_a_code(client, db):
    response = client.get("/api/v1/conversations/")

    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "not_authenticated"
    assert body["detail"]


def test_conversation_shape(api, meta_number):
    process("referral_ctwa")
    conversation = Conversation.objects.get()

    response = api.get(f"/api/v1/conversations/{conversation.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == conversation.pk
    assert body["customer"] == {
        "id": conversation.customer_id,
        "wa_id": CUSTOMER_WA_ID,
        "user_id": "",
        "username": "",
        "name": "Sheena Nelson",
    }
    assert body["number"] == meta_number.pk
    assert body["status"] == "open"
    assert body["assignee"] is None
    assert body["team"] is None
    assert body["labels"] == []
    assert body["last_message_at"] == "2025-06-08T20:59:43Z"
    assert body["window_expires_at"] == "2025-06-09T20:59:43Z"
    assert body["referral"]["ctwa_clid"] == conversation.referral_ctwa_clid
    assert body["referral_source_id"] == conversation.referral_source_id
    assert body["last_message"]["text"] == "Can I get more info about this?"


def test_list_is_newest_activity_first_and_filtered(api, meta_number, agent):
    old = ConversationFactory(number=meta_number)
    MessageFactory(conversation=old)
    process("text")  # a 2025 message: older than the factory's "now"
    newest = ConversationFactory(number=meta_number, assignee=agent)
    resolved = ConversationFactory(
        number=meta_number, status=Conversation.Status.RESOLVED
    )
    Conversation.objects.filter(pk=old.pk).update(last_message_at="2026-01-01T00:00Z")
    Conversation.objects.filter(pk=newest.pk).update(
        last_message_at="2026-02-01T00:00Z"
    )
    from_fixture = Conversation.objects.get(customer__wa_id=CUSTOMER_WA_ID)

    ids = [c["id"] for c in api.get("/api/v1/conversations/").json()["results"]]
    assert ids == [newest.pk, old.pk, from_fixture.pk, resolved.pk]

    def filtered(query):
        response = api.get(f"/api/v1/conversations/?{query}")
        assert response.status_code == 200, response.content
        return [c["id"] for c in response.json()["results"]]

    assert filtered("status=resolved") == [resolved.pk]
    assert filtered(f"assignee={agent.pk}") == [newest.pk]
    assert newest.pk not in filtered("assignee=none")
    assert filtered(f"customer={old.customer_id}") == [old.pk]
    assert len(filtered(f"number={meta_number.pk}")) == 4
    assert filtered("number=999999") == []


def test_bad_filter_is_a_400_with_a_code(api, meta_number):
    response = api.get("/api/v1/conversations/?number=abc")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_page_size_paginates_up_to_200(api, meta_number):
    customers = Customer.objects.bulk_create(
        [Customer(wa_id=f"4915{n:08d}") for n in range(205)]
    )
    Conversation.objects.bulk_create(
        [Conversation(customer=c, number=meta_number) for c in customers]
    )

    page = api.get("/api/v1/conversations/?page_size=2").json()
    assert page["count"] == 205
    assert len(page["results"]) == 2
    assert page["next"]

    assert len(api.get("/api/v1/conversations/?page_size=500").json()["results"]) == 200


def test_other_teams_conversations_are_invisible(api, meta_number, other_number):
    mine = ConversationFactory(number=meta_number)
    theirs = ConversationFactory(number=other_number)
    message = MessageFactory(conversation=theirs)

    ids = [c["id"] for c in api.get("/api/v1/conversations/").json()["results"]]
    assert ids == [mine.pk]
    for url in (
        f"/api/v1/conversations/{theirs.pk}/",
        f"/api/v1/conversations/{theirs.pk}/messages/",
        f"/api/v1/messages/{message.pk}/",
        f"/api/v1/customers/{theirs.customer_id}/",
    ):
        response = api.get(url)
        assert response.status_code == 404, url
        assert response.json()["code"] == "not_found"
    response = api.patch(
        f"/api/v1/conversations/{theirs.pk}/",
        {"status": "resolved"},
        content_type="application/json",
    )
    assert response.status_code == 404


def test_admins_see_every_team(client, admin_user, meta_number, other_number):
    ConversationFactory(number=meta_number)
    ConversationFactory(number=other_number)
    client.force_login(admin_user)

    assert client.get("/api/v1/conversations/").json()["count"] == 2


def test_messages_are_oldest_first_with_a_cursor(api, meta_number):
    conversation = ConversationFactory(number=meta_number)
    messages = [
        MessageFactory(conversation=conversation, timestamp=f"2026-01-0{day}T10:00Z")
        for day in (3, 1, 2)
    ]

    first = api.get(f"/api/v1/conversations/{conversation.pk}/messages/?page_size=2")
    body = first.json()
    assert [m["id"] for m in body["results"]] == [messages[1].pk, messages[2].pk]
    assert "cursor=" in body["next"]
    rest = api.get(body["next"]).json()
    assert [m["id"] for m in rest["results"]] == [messages[0].pk]


def test_message_shape(api, meta_number):
    ours = MessageFactory(
        conversation=ConversationFactory(
            number=meta_number, customer=CustomerFactory(wa_id=CUSTOMER_WA_ID)
        ),
        direction=Message.Direction.OUTBOUND,
        wamid="wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
        status=Message.Status.FAILED,
        error={"code": 131047, "title": "Re-engagement message", "details": "24 h"},
        pricing={"type": "regular", "category": "utility"},
    )
    process("text_reply_context")
    process("reaction")
    reply = Message.objects.get(direction=Message.Direction.INBOUND)

    body = api.get(f"/api/v1/messages/{reply.pk}/").json()
    assert body["id"] == reply.pk
    assert body["conversation"] == reply.conversation_id
    assert body["direction"] == "inbound"
    assert body["type"] == "text"
    assert body["text"] == "Yes, that one"
    assert body["status"] == "received"
    assert body["wamid"] == reply.wamid
    assert body["timestamp"] == "2025-06-08T20:59:43Z"
    assert body["reply_to"] == ours.pk
    assert body["error"] is None
    assert body["media"] is None
    assert body["reactions"] == []
    assert body["location"] is None

    body = api.get(f"/api/v1/messages/{ours.pk}/").json()
    assert body["error"]["code"] == 131047
    assert body["pricing"]["category"] == "utility"
    assert body["reactions"] == [{"emoji": "👍", "direction": "inbound"}]


@pytest.mark.parametrize(
    ("fixture", "kind", "field", "value"),
    [
        ("location", "location", "latitude", 37.483307),
        ("interactive_button_reply", "interactive", "type", "button_reply"),
        ("button", "button", "text", "Stop promotions"),
        ("order", "order", "catalog_id", None),
        ("system_user_changed_number", "system", "type", "user_changed_number"),
    ],
)
def test_structured_types_carry_an_object_named_after_the_type(
    api, meta_number, fixture, kind, field, value
):
    process(fixture)
    message = Message.objects.get()

    body = api.get(f"/api/v1/messages/{message.pk}/").json()

    assert body["type"] == kind
    assert field in body[kind]
    if value is not None:
        assert body[kind][field] == value
    others = {"location", "contacts", "interactive", "button", "order", "system"}
    assert all(body[other] is None for other in others - {kind})


def test_contacts_are_a_list_of_cards(api, meta_number):
    process("contacts")

    body = api.get(f"/api/v1/messages/{Message.objects.get().pk}/").json()

    assert [card["name"]["formatted_name"] for card in body["contacts"]] == [
        "Barbara J. Johnson",
        "Pablo Morales",
    ]


def test_media_carries_a_url_once_stored(api, meta_number):
    process("document")
    message = Message.objects.get()
    assert api.get(f"/api/v1/messages/{message.pk}/").json()["media"]["url"] is None

    message.media_file.save("x.pdf", ContentFile(b"%PDF-1.4"), save=False)
    message.media_state = Message.MediaState.STORED
    message.media_size = 8
    message.save()

    media = api.get(f"/api/v1/messages/{message.pk}/").json()["media"]
    assert media["state"] == "stored"
    assert media["filename"] == "invoice-4711.pdf"
    assert media["mime_type"] == "application/pdf"
    assert media["size"] == 8
    assert media["url"] == f"http://testserver/media/{message.pk}/"
    download = api.get(media["url"])
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"%PDF-1.4"


def test_patch_conversation(api, meta_number, agent, team):
    conversation = ConversationFactory(number=meta_number)
    Label.objects.create(name="vip")

    response = api.patch(
        f"/api/v1/conversations/{conversation.pk}/",
        {
            "status": "resolved",
            "assignee": agent.pk,
            "team": team.pk,
            "labels": ["vip"],
        },
        content_type="application/json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["assignee"], body["team"], body["labels"]) == (
        "resolved",
        agent.pk,
        team.pk,
        ["vip"],
    )
    conversation.refresh_from_db()
    assert conversation.resolved_at is not None
    assert list(conversation.labels.values_list("name", flat=True)) == ["vip"]


def test_patch_refuses_an_assignee_who_cannot_see_it(api, meta_number):
    conversation = ConversationFactory(number=meta_number)
    outsider = UserFactory(username="bob")

    response = api.patch(
        f"/api/v1/conversations/{conversation.pk}/",
        {"assignee": outsider.pk},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "assignee_not_allowed"


def test_reopening_beside_an_open_conversation_is_a_conflict(api, meta_number):
    customer = CustomerFactory()
    resolved = ConversationFactory(
        customer=customer, number=meta_number, status=Conversation.Status.RESOLVED
    )
    ConversationFactory(customer=customer, number=meta_number)

    response = api.patch(
        f"/api/v1/conversations/{resolved.pk}/",
        {"status": "open"},
        content_type="application/json",
    )

    assert response.status_code == 409
    assert response.json()["code"] == "conversation_already_open"


def test_unknown_label_is_a_400(api, meta_number):
    conversation = ConversationFactory(number=meta_number)

    response = api.patch(
        f"/api/v1/conversations/{conversation.pk}/",
        {"labels": ["nope"]},
        content_type="application/json",
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"]
    assert "labels" in body["errors"]


def test_customers_by_wa_id_and_user_id(api, meta_number):
    process("text")
    process("bsuid_only")
    by_wa = Customer.objects.get(wa_id=CUSTOMER_WA_ID)
    by_user = Customer.objects.get(user_id="US.13491208655302741918")

    found = api.get(f"/api/v1/customers/?wa_id={CUSTOMER_WA_ID}").json()["results"]
    assert [c["id"] for c in found] == [by_wa.pk]
    assert found[0]["profile_name"] == "Sheena Nelson"
    found = api.get("/api/v1/customers/?user_id=US.13491208655302741918").json()
    assert [c["id"] for c in found["results"]] == [by_user.pk]


def test_patch_customer_sets_the_agents_name_only(api, meta_number):
    process("text")
    customer = Customer.objects.get()

    response = api.patch(
        f"/api/v1/customers/{customer.pk}/",
        {"name": "Mrs Nelson", "wa_id": "1"},
        content_type="application/json",
    )

    assert response.status_code == 200
    customer.refresh_from_db()
    assert (customer.name, customer.wa_id) == ("Mrs Nelson", CUSTOMER_WA_ID)
    assert customer.profile_name == "Sheena Nelson"


def test_other_teams_customers_are_not_listed(api, meta_number, other_number):
    mine = ConversationFactory(number=meta_number).customer
    ConversationFactory(number=other_number)

    found = api.get("/api/v1/customers/").json()["results"]

    assert [c["id"] for c in found] == [mine.pk]


def fill(number, count: int) -> None:
    label = Label.objects.get_or_create(name="busy")[0]
    for _ in range(count):
        conversation = ConversationFactory(number=number)
        conversation.labels.add(label)
        message = MessageFactory(conversation=conversation)
        Reaction.objects.create(
            message=message,
            direction=Message.Direction.INBOUND,
            emoji="👍",
            reacted_at=message.timestamp,
        )
        Conversation.objects.filter(pk=conversation.pk).update(last_message=message)


# Reading the user's permissions (view_all_numbers decides what they see):
# two queries, once per request.
PERMISSION_QUERIES = 2


@pytest.mark.parametrize("count", [2, 20])
def test_conversation_list_queries_do_not_grow(
    api, meta_number, count, django_assert_max_num_queries
):
    fill(meta_number, count)

    with django_assert_max_num_queries(5 + PERMISSION_QUERIES):
        response = api.get("/api/v1/conversations/")

    assert len(response.json()["results"]) == count


@pytest.mark.parametrize("count", [2, 20])
def test_message_list_queries_do_not_grow(
    api, meta_number, count, django_assert_max_num_queries
):
    conversation = ConversationFactory(number=meta_number)
    for _ in range(count):
        message = MessageFactory(conversation=conversation)
        Reaction.objects.create(
            message=message,
            direction=Message.Direction.INBOUND,
            emoji="👍",
            reacted_at=message.timestamp,
        )

    with django_assert_max_num_queries(5 + PERMISSION_QUERIES):
        response = api.get(f"/api/v1/conversations/{conversation.pk}/messages/")

    assert len(response.json()["results"]) == count


@pytest.mark.parametrize("count", [2, 20])
def test_customer_list_queries_do_not_grow(
    api, meta_number, count, django_assert_max_num_queries
):
    fill(meta_number, count)

    # Two more for the page's merges and identity changes, prefetched.
    with django_assert_max_num_queries(6 + PERMISSION_QUERIES):
        response = api.get("/api/v1/customers/")

    assert len(response.json()["results"]) == count
