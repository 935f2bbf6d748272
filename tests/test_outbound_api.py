"""POST /api/v1/conversations/{id}/messages/: every reply type reaches the
sandbox as Meta's body; every refusal answers its code and sends nothing."""

from datetime import timedelta

import pytest
from django.utils import timezone

from conversations import services
from conversations.models import Message, MessageTemplate, Reaction
from helpdesk.celery import app as celery_app
from tests.factories import (
    ConversationFactory,
    MessageFactory,
    TeamFactory,
    WhatsAppNumberFactory,
)
from tests.fixtures.outbound import (
    CUSTOMER,
    sends,
    sends_for,
    wait_for_status,
)

pytestmark = pytest.mark.django_db(transaction=True)


def post(api, conversation, body, **extra):
    return api.post(
        f"/api/v1/conversations/{conversation.pk}/messages/",
        body,
        content_type="application/json",
        **extra,
    )


def sent_body(sandbox, response) -> dict:
    """The body the sandbox received for the message the API answered with."""
    assert response.status_code == 201, response.json()
    message = Message.objects.get(pk=response.json()["id"])
    wait_for_status(message, Message.Status.SENT)
    (record,) = sends_for(sandbox, message)
    return record["body"]


def inbound(conversation, wamid="wamid.customer1"):
    return MessageFactory(conversation=conversation, wamid=wamid)


def only_this_reaches_the_sandbox(api, sandbox, conversation):
    """After refusals: a good reply goes out, and it is the only send."""
    response = post(api, conversation, {"type": "text", "text": "Still here"})
    body = sent_body(sandbox, response)
    assert body["text"] == {"body": "Still here"}
    assert [record["body"] for record in sends(sandbox)] == [body]
    assert not any(
        record["path"].endswith("/media")
        for record in sandbox.control._call("GET", "requests")["requests"]
    )


# --- Accepted ---------------------------------------------------------------------


@pytest.mark.e2e
def test_a_text_reply_is_201_with_the_message_as_get_shows_it_then_sent(
    api, graph_sandbox, conversation, delivery_worker
):
    response = post(
        api,
        conversation,
        {"type": "text", "text": "See https://example.com", "preview_url": True},
    )

    assert response.status_code == 201
    created = response.json()
    assert created["status"] == "queued"
    assert created["direction"] == "outbound"
    assert created["type"] == "text"
    assert created["text"] == "See https://example.com"
    assert created["conversation"] == conversation.pk
    shown = api.get(f"/api/v1/messages/{created['id']}/").json()
    assert set(shown) == set(created)
    assert sent_body(graph_sandbox, response) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": f"+{CUSTOMER}",
        "type": "text",
        "text": {"body": "See https://example.com", "preview_url": True},
        "biz_opaque_callback_data": str(created["id"]),
    }


@pytest.mark.e2e
def test_media_by_link_or_id_with_caption_filename_and_a_quote(
    api, graph_sandbox, conversation, delivery_worker
):
    quoted = inbound(conversation)
    image = post(
        api,
        conversation,
        {
            "type": "image",
            "image": {"link": "https://example.com/a.jpg", "caption": "Here"},
            "reply_to": quoted.pk,
        },
    )
    assert image.json()["reply_to"] == quoted.pk
    body = sent_body(graph_sandbox, image)
    assert body["image"] == {"link": "https://example.com/a.jpg", "caption": "Here"}
    assert body["context"] == {"message_id": "wamid.customer1"}

    document = post(
        api,
        conversation,
        {"type": "document", "document": {"id": "4490709327", "filename": "a.pdf"}},
    )
    assert sent_body(graph_sandbox, document)["document"] == {
        "id": "4490709327",
        "filename": "a.pdf",
    }
    for kind in ("audio", "video", "sticker"):
        response = post(
            api,
            conversation,
            {"type": kind, kind: {"link": f"https://example.com/x.{kind}"}},
        )
        assert sent_body(graph_sandbox, response)[kind] == {
            "link": f"https://example.com/x.{kind}"
        }


@pytest.mark.e2e
def test_an_uploaded_file_goes_to_meta_first_then_is_sent_by_its_id(
    api, graph_sandbox, conversation, delivery_worker
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("terms.pdf", b"%PDF-1.4 terms", "application/pdf")
    response = api.post(
        f"/api/v1/conversations/{conversation.pk}/messages/",
        {"file": upload, "caption": "Our terms"},
    )

    body = sent_body(graph_sandbox, response)
    assert body["type"] == "document"
    assert body["document"]["id"]
    assert body["document"]["caption"] == "Our terms"
    assert body["document"]["filename"] == "terms.pdf"
    # Kept on the message: agents see the file in the conversation.
    message = Message.objects.get(pk=response.json()["id"])
    assert message.media_filename == "terms.pdf"
    assert message.media_size == len(b"%PDF-1.4 terms")
    assert message.media_file.read() == b"%PDF-1.4 terms"


@pytest.mark.e2e
def test_an_upload_meta_refuses_is_a_502_and_queues_nothing(
    api, graph_sandbox, conversation
):
    graph_sandbox.control.set_faults(upload_error_next=1)

    response = post_file(api, conversation)

    assert response.status_code == 502
    assert response.json()["code"] == "upload_failed"
    assert not Message.objects.filter(direction="outbound").exists()


@pytest.mark.e2e
def test_templates_by_name_with_parameters_or_by_id_with_components(
    api, graph_sandbox, conversation, delivery_worker
):
    services.sync_templates(number=conversation.number)
    shipped = MessageTemplate.objects.get(name="order_shipped")
    expected = [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Anna"},
                {"type": "text", "text": "#4711"},
            ],
        }
    ]
    by_name = post(
        api,
        conversation,
        {
            "type": "template",
            "template": {
                "name": "order_shipped",
                "language": shipped.language,
                "parameters": {"body": ["Anna", "#4711"]},
            },
        },
    )
    assert by_name.json()["template"]["name"] == "order_shipped"
    assert sent_body(graph_sandbox, by_name)["template"]["components"] == expected

    by_id = post(
        api,
        conversation,
        {"type": "template", "template": {"id": shipped.pk, "components": expected}},
    )
    assert sent_body(graph_sandbox, by_id)["template"]["components"] == expected


@pytest.mark.e2e
def test_a_reaction_is_sent_and_an_empty_emoji_removes_it(
    api, graph_sandbox, conversation, delivery_worker
):
    customer_message = inbound(conversation)
    added = post(
        api,
        conversation,
        {
            "type": "reaction",
            "reaction": {"message": customer_message.pk, "emoji": "👍"},
        },
    )
    assert sent_body(graph_sandbox, added)["reaction"] == {
        "message_id": "wamid.customer1",
        "emoji": "👍",
    }
    shown = api.get(f"/api/v1/messages/{customer_message.pk}/").json()
    assert shown["reactions"] == [{"emoji": "👍", "direction": "outbound"}]

    removed = post(
        api,
        conversation,
        {"type": "reaction", "reaction": {"message": customer_message.pk, "emoji": ""}},
    )
    assert sent_body(graph_sandbox, removed)["reaction"]["emoji"] == ""
    assert Reaction.objects.get(message=customer_message).emoji == ""


@pytest.mark.e2e
def test_location_contacts_and_interactive_keep_metas_shapes(
    api, graph_sandbox, conversation, delivery_worker
):
    location = {"latitude": 52.52, "longitude": 13.405, "name": "Office"}
    contacts = [
        {"name": {"formatted_name": "Ana Support"}, "phones": [{"phone": "+4930"}]}
    ]
    interactive = {
        "type": "button",
        "body": {"text": "Did that help?"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                {"type": "reply", "reply": {"id": "no", "title": "No"}},
            ]
        },
    }
    for kind, content in (
        ("location", location),
        ("contacts", contacts),
        ("interactive", interactive),
    ):
        response = post(api, conversation, {"type": kind, kind: content})
        assert response.json()[kind] == content
        assert sent_body(graph_sandbox, response)[kind] == content


# --- Refused ----------------------------------------------------------------------


@pytest.mark.e2e
def test_free_form_outside_the_window_is_409_with_the_approved_templates(
    api, graph_sandbox, conversation, delivery_worker
):
    services.sync_templates(number=conversation.number)
    conversation.last_inbound_at = timezone.now() - timedelta(hours=25)
    conversation.save(update_fields=["last_inbound_at"])

    for body in (
        {"type": "text", "text": "Too late"},
        {"type": "image", "image": {"link": "https://example.com/a.jpg"}},
        {"type": "reaction", "reaction": {"message": inbound(conversation).pk}},
    ):
        if body["type"] == "reaction":
            body["reaction"]["emoji"] = "👍"
        response = post(api, conversation, body)
        assert response.status_code == 409
        refusal = response.json()
        assert refusal["code"] == "window_closed"
        assert refusal["detail"]
        names = {t["name"] for t in refusal["templates"]}
        assert "order_shipped" in names
        assert "win_back" not in names  # paused, not approved

    upload = post_file(api, conversation)
    assert upload.status_code == 409
    assert upload.json()["code"] == "window_closed"
    assert not Message.objects.filter(direction="outbound").exists()

    conversation.last_inbound_at = timezone.now()
    conversation.save(update_fields=["last_inbound_at"])
    only_this_reaches_the_sandbox(api, graph_sandbox, conversation)


def post_file(api, conversation):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return api.post(
        f"/api/v1/conversations/{conversation.pk}/messages/",
        {"file": SimpleUploadedFile("a.jpg", b"\xff\xd8\xff", "image/jpeg")},
    )


@pytest.mark.e2e
def test_template_refusals_are_422_with_their_codes(
    api, graph_sandbox, conversation, delivery_worker
):
    services.sync_templates(number=conversation.number)
    shipped = MessageTemplate.objects.get(name="order_shipped")
    cases = [
        ({"name": "win_back", "language": "en_US"}, "template_not_approved"),
        ({"name": "no_such_template", "language": "en"}, "template_not_approved"),
        (
            {"id": shipped.pk, "parameters": {"body": ["only one"]}},
            "template_parameters",
        ),
        (
            {"id": shipped.pk, "parameters": {"header": "x", "body": ["a", "b"]}},
            "template_parameters",
        ),
    ]
    win_back = MessageTemplate.objects.get(name="win_back")
    cases[0][0]["language"] = win_back.language
    for template, code in cases:
        response = post(api, conversation, {"type": "template", "template": template})
        assert response.status_code == 422, (template, response.json())
        assert response.json()["code"] == code
        assert response.json()["detail"]

    only_this_reaches_the_sandbox(api, graph_sandbox, conversation)


@pytest.mark.e2e
def test_a_paused_number_refuses_with_its_reason_until_resumed(
    api, graph_sandbox, conversation, delivery_worker
):
    services.pause_sending(
        number=conversation.number,
        error={"code": 190, "title": "Access token expired", "details": "expired"},
    )

    text = post(api, conversation, {"type": "text", "text": "Hello?"})
    upload = post_file(api, conversation)

    for response in (text, upload):
        assert response.status_code == 409
        assert response.json()["code"] == "sending_paused"
        assert "190" in response.json()["reason"]
    assert not Message.objects.filter(direction="outbound").exists()
    services.resume_sending(number=conversation.number)
    only_this_reaches_the_sandbox(api, graph_sandbox, conversation)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "telegram", "text": "x"}, "invalid_choice"),
        ({"text": "no type"}, "invalid_choice"),
        ({"type": "text"}, "required"),
        ({"type": "text", "text": ""}, "blank"),
        ({"type": "text", "text": "x" * 4097}, "max_length"),
        ({"type": "text", "text": "x", "reply_to": 999999}, "not_found"),
        ({"type": "image", "image": {}}, "invalid"),
        (
            {
                "type": "image",
                "image": {"id": "1", "link": "https://example.com/a.jpg"},
            },
            "invalid",
        ),
        ({"type": "location", "location": {"latitude": 91, "longitude": 0}}, None),
        ({"type": "contacts", "contacts": []}, None),
        (
            {
                "type": "interactive",
                "interactive": {"type": "button", "body": {"text": "?"}},
            },
            "invalid_message",
        ),
        ({"type": "reaction", "reaction": {"message": 999999, "emoji": "x"}}, None),
        ({"type": "template", "template": {"name": "order_shipped"}}, "invalid"),
        (
            {"type": "template", "template": {"id": 1}, "reply_to": 1},
            "invalid",
        ),
    ],
)
def test_bad_input_is_400_with_a_code(
    api, graph_sandbox, conversation, delivery_worker, body, code
):
    response = post(api, conversation, body)

    assert response.status_code == 400, response.json()
    refusal = response.json()
    assert refusal["detail"]
    if code:
        assert refusal["code"] == code
    assert not Message.objects.filter(direction="outbound").exists()
    only_this_reaches_the_sandbox(api, graph_sandbox, conversation)


@pytest.mark.e2e
def test_a_reply_to_a_message_of_another_conversation_is_refused(
    api, graph_sandbox, conversation, delivery_worker
):
    elsewhere = inbound(ConversationFactory(number=conversation.number), "wamid.x")

    response = post(
        api, conversation, {"type": "text", "text": "x", "reply_to": elsewhere.pk}
    )
    reaction = post(
        api,
        conversation,
        {"type": "reaction", "reaction": {"message": elsewhere.pk, "emoji": "👍"}},
    )

    assert (response.status_code, response.json()["code"]) == (400, "not_found")
    assert (reaction.status_code, reaction.json()["code"]) == (400, "not_found")
    only_this_reaches_the_sandbox(api, graph_sandbox, conversation)


@pytest.mark.e2e
def test_another_teams_conversation_is_404(api, graph_sandbox, sandbox_number):
    foreign_number = WhatsAppNumberFactory()
    foreign_number.teams.add(TeamFactory(name="Elsewhere"))
    foreign = ConversationFactory(number=foreign_number, last_inbound_at=timezone.now())

    response = post(api, foreign, {"type": "text", "text": "Hi"})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert not Message.objects.filter(direction="outbound").exists()


def test_delivery_tasks_have_a_queue_of_their_own():
    for name in (
        "conversations.tasks.deliver_messages",
        "conversations.tasks.send_read_receipt",
    ):
        assert celery_app.amqp.router.route({}, name)["queue"].name == "delivery"
    route = celery_app.amqp.router.route(
        {}, "conversations.tasks.process_webhook_event"
    )
    assert route["queue"].name == "default"


def test_the_schema_describes_every_reply_type(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert schema.status_code == 200
    spec = schema.json()
    operation = spec["paths"]["/api/v1/conversations/{id}/messages/"]["post"]
    assert set(operation["responses"]) >= {"201", "400", "404", "409", "422"}
    reply = spec["components"]["schemas"]["Reply"]
    assert reply["discriminator"]["propertyName"] == "type"
    assert set(reply["discriminator"]["mapping"]) == {
        "text",
        "image",
        "audio",
        "video",
        "document",
        "sticker",
        "template",
        "reaction",
        "location",
        "contacts",
        "interactive",
    }
