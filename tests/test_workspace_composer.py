"""What agents send from the workspace's composer, against the sandbox's Graph
API: attachments kept and shown like a customer's, refused uploads shown in
the composer, and templates with named parameters and URL buttons."""

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from conversations import realtime, services
from conversations.live import cache
from conversations.models import Conversation, LiveEvent, Message, MessageTemplate
from tests.fixtures.outbound import sends_for, wait_for_status

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4 " + b"x" * 3000


def send_file(agent_client, conversation, name="box.png", data=PNG, **fields):
    """The composer's form with a file attached (and maybe text)."""
    content_type = "application/pdf" if name.endswith(".pdf") else "image/png"
    return agent_client.post(
        reverse("conversations:reply", args=[conversation.pk]),
        {"file": SimpleUploadedFile(name, data, content_type=content_type), **fields},
        HTTP_HX_REQUEST="true",
    )


def uploads(sandbox) -> list[dict]:
    """The media uploads the sandbox was asked for."""
    return [
        record
        for record in sandbox.control.requests()
        if record["method"] == "POST" and record["path"].endswith("/media")
    ]


def live_html(message: Message) -> str:
    """What a tab with the conversation open is pushed for the new message."""
    event = LiveEvent.objects.get(
        type=realtime.MESSAGE_CREATED, data__message=message.pk
    )
    return cache.event_cache.get(event.pk).message_html()


def close_window(conversation):
    Conversation.objects.filter(pk=conversation.pk).update(
        last_inbound_at=timezone.now() - timedelta(hours=30)
    )
    conversation.refresh_from_db()


def test_an_attached_image_shows_inline_in_the_answer_on_reload_and_live(
    agent_client, graph_sandbox, conversation
):
    response = send_file(agent_client, conversation, text="The damaged box")

    assert response.status_code == 201
    message = conversation.messages.get(direction="outbound")
    assert message.type == "image"
    assert message.media_state == Message.MediaState.STORED
    assert (message.media_filename, message.media_size) == ("box.png", len(PNG))
    assert message.payload == {"id": message.media_id, "caption": "The damaged box"}
    media_url = reverse("conversations:message-media", args=[message.pk])
    image = f'<img src="{media_url}" alt="Image: The damaged box"'
    assert image in response.content.decode()
    page = agent_client.get(reverse("conversations:detail", args=[conversation.pk]))
    assert image in page.content.decode()
    assert image in live_html(message)
    served = agent_client.get(media_url)
    assert b"".join(served.streaming_content) == PNG


def test_an_attached_document_shows_its_name_and_size(
    agent_client, graph_sandbox, conversation
):
    response = send_file(agent_client, conversation, "invoice.pdf", PDF)

    assert response.status_code == 201
    message = conversation.messages.get(direction="outbound")
    assert message.payload == {"id": message.media_id, "filename": "invoice.pdf"}
    link = (
        f'<a class="document" href="'
        f'{reverse("conversations:message-media", args=[message.pk])}" '
        f"download>invoice.pdf</a>"
    )
    for html in (
        response.content.decode(),
        agent_client.get(
            reverse("conversations:detail", args=[conversation.pk])
        ).content.decode(),
        live_html(message),
    ):
        assert link in html and "2.9\xa0KB" in html


def test_a_resent_attachment_still_shows_its_file(
    agent_client, graph_sandbox, conversation
):
    send_file(agent_client, conversation, "invoice.pdf", PDF)
    failed = conversation.messages.get(direction="outbound")
    Message.objects.filter(pk=failed.pk).update(status=Message.Status.FAILED)

    response = agent_client.post(
        reverse("conversations:resend", args=[failed.pk]), HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 201
    resent = conversation.messages.exclude(pk=failed.pk).get(direction="outbound")
    assert resent.media_state == Message.MediaState.STORED
    assert resent.media_file.name == failed.media_file.name
    media_url = reverse("conversations:message-media", args=[resent.pk])
    assert f'href="{media_url}" download>invoice.pdf</a>' in response.content.decode()


def test_an_upload_meta_refuses_shows_in_the_composer_and_queues_nothing(
    agent_client, graph_sandbox, conversation
):
    graph_sandbox.control.set_faults(upload_error_next=1)

    response = send_file(agent_client, conversation, text="The label")

    assert response.status_code == 502
    html = response.content.decode()
    assert 'id="composer-error"' in html
    assert "Meta did not take the upload; try again." in html
    assert len(uploads(graph_sandbox)) == 1
    assert not conversation.messages.filter(direction="outbound").exists()


def test_nothing_is_uploaded_when_the_reply_would_be_refused(
    agent_client, graph_sandbox, conversation
):
    close_window(conversation)
    closed = send_file(agent_client, conversation)
    assert closed.status_code == 409
    assert "only an approved template can be sent" in closed.content.decode()

    Conversation.objects.filter(pk=conversation.pk).update(
        last_inbound_at=timezone.now()
    )
    conversation.number.sending_paused = True
    conversation.number.save()
    paused = send_file(agent_client, conversation)
    assert paused.status_code == 409
    assert "paused" in paused.content.decode()

    assert uploads(graph_sandbox) == []
    assert not conversation.messages.filter(direction="outbound").exists()


def test_the_template_picker_sends_named_parameters_and_url_button_endings(
    agent_client, graph_sandbox, conversation, delivery_worker
):
    graph_sandbox.control.add_template(
        name="order_tracking",
        language="en",
        category="UTILITY",
        status="APPROVED",
        parameter_format="NAMED",
        components=[
            {
                "type": "BODY",
                "text": "Hi {{first_name}}, order {{order}} is on its way.",
            },
            {
                "type": "BUTTONS",
                "buttons": [
                    {"type": "QUICK_REPLY", "text": "Talk to us"},
                    {
                        "type": "URL",
                        "text": "Track it",
                        "url": "https://shop.example/track/{{1}}",
                    },
                ],
            },
        ],
    )
    services.sync_templates(number=conversation.number)
    template = MessageTemplate.objects.get(name="order_tracking")
    close_window(conversation)

    page = agent_client.get(
        reverse("conversations:detail", args=[conversation.pk])
    ).content.decode()
    assert "Parameter first_name" in page and "Parameter order" in page
    assert "Link ending for button Track it" in page
    assert "Completes https://shop.example/track/{{1}}" in page

    response = agent_client.post(
        reverse("conversations:send-template", args=[conversation.pk]),
        {
            "template": template.pk,
            "body_order": "#4711",
            "body_first_name": "Anna",
            "button_1": "4711",
        },
        HTTP_HX_REQUEST="true",
    )

    assert response.status_code == 201, response.content
    message = conversation.messages.get(direction="outbound")
    assert message.text == "Hi Anna, order #4711 is on its way."
    wait_for_status(message, Message.Status.SENT)
    (record,) = sends_for(graph_sandbox, message)
    assert record["body"]["template"]["components"] == [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Anna", "parameter_name": "first_name"},
                {"type": "text", "text": "#4711", "parameter_name": "order"},
            ],
        },
        {
            "type": "button",
            "sub_type": "url",
            "index": "1",
            "parameters": [{"type": "text", "text": "4711"}],
        },
    ]


def test_the_template_picker_sends_an_amount_and_a_date_in_metas_shape(
    agent_client, graph_sandbox, conversation, delivery_worker
):
    body = "Your order of {{1}} is delivered on {{2}}."
    graph_sandbox.control.add_template(
        name="order_total",
        language="en",
        category="UTILITY",
        status="APPROVED",
        components=[{"type": "BODY", "text": body}],
    )
    services.sync_templates(number=conversation.number)
    template = MessageTemplate.objects.get(name="order_total")
    close_window(conversation)
    url = reverse("conversations:send-template", args=[conversation.pk])

    page = agent_client.get(
        reverse("conversations:detail", args=[conversation.pk])
    ).content.decode()
    assert 'name="body_1__kind"' in page and 'name="body_2__when"' in page
    assert '<option value="currency">Amount in a currency</option>' in page

    amount = {
        "template": template.pk,
        "body_1__kind": "currency",
        "body_1__amount": "12.5",
        "body_1__code": "eur",
        "body_2__kind": "date_time",
        "body_2__when": "2026-12-24T15:30",
    }
    # Refused with the API's check and code, before any request to Meta.
    for change, reason in [
        ({"body_1__amount": "12.3456"}, "at most three decimal places"),
        ({"body_1__amount": "twelve"}, "an amount like 12.50 needed"),
        ({"body_1__code": "EURO"}, "currency code like USD needed"),
        ({"body_2__when": "Christmas"}, "a date and time like"),
        ({"body_2__when": ""}, "fallback_value (text) needed"),
        ({"body_2__kind": "weather"}, "not a kind of value"),
    ]:
        refused = agent_client.post(url, {**amount, **change}, HTTP_HX_REQUEST="true")
        assert refused.status_code == 422, change
        assert reason in refused.content.decode(), change
    assert not conversation.messages.filter(direction="outbound").exists()

    response = agent_client.post(
        url, {**amount, "body_1__fallback": "€12.50"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 201, response.content
    message = conversation.messages.get(direction="outbound")
    assert message.text == (
        "Your order of €12.50 is delivered on December 24, 2026, 15:30."
    )
    wait_for_status(message, Message.Status.SENT)
    (record,) = sends_for(graph_sandbox, message)
    assert record["body"]["template"]["components"] == [
        {
            "type": "body",
            "parameters": [
                {
                    "type": "currency",
                    "currency": {
                        "fallback_value": "€12.50",
                        "code": "EUR",
                        "amount_1000": 12500,
                    },
                },
                {
                    "type": "date_time",
                    "date_time": {"fallback_value": "December 24, 2026, 15:30"},
                },
            ],
        }
    ]
