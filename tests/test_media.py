"""Inbound media: downloaded from a running sandbox, checked, stored, served."""

import base64
import hashlib

import pytest
import requests
from django.core.files.base import ContentFile
from django.urls import reverse

from conversations import services, tasks
from conversations.delivery import doorbells
from conversations.models import Message
from conversations.whatsapp import client
from sandbox.config import Number
from sandbox.testing import running_sandbox
from tests.factories import (
    ConversationFactory,
    MessageFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)
from tests.fixtures.inbound import (
    FIXTURE_DISPLAY_NUMBER,
    FIXTURE_PHONE_NUMBER_ID,
    FIXTURE_WABA_ID,
    process,
)
from tests.fixtures.payloads import load_payload_json

TOKEN = "media-test-token"  # noqa: S105
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def sandbox(settings):
    number = Number(
        phone_number_id=FIXTURE_PHONE_NUMBER_ID,
        display_phone_number=FIXTURE_DISPLAY_NUMBER,
        waba_id=FIXTURE_WABA_ID,
        access_token=TOKEN,
        app_secret="media-test-secret",  # noqa: S106
    )
    with running_sandbox(numbers=[number]) as sandbox:
        settings.WHATSAPP_GRAPH_API_URL = sandbox.base_url
        settings.WHATSAPP_GRAPH_API_VERSION = "v24.0"
        # The sandbox serves media from its own origin.
        settings.WHATSAPP_MEDIA_HOSTS = [sandbox.base_url]
        yield sandbox


@pytest.fixture
def media_number(meta_number):
    meta_number.access_token = TOKEN
    meta_number.save()
    return meta_number


def upload(sandbox, data: bytes, mime_type: str) -> str:
    """Put a file into the sandbox as a customer's media; return its id."""
    response = requests.post(
        f"{sandbox.graph_url}/{FIXTURE_PHONE_NUMBER_ID}/media",
        headers={"Authorization": f"Bearer {TOKEN}"},
        data={"messaging_product": "whatsapp", "type": mime_type},
        files={"file": ("upload", data, mime_type)},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def receive(fixture: str, media_id: str, sha256: str, **fields) -> Message:
    """Process a media fixture pointing at media_id; return its message."""
    document = load_payload_json(fixture)
    raw = document["entry"][0]["changes"][0]["value"]["messages"][0]
    raw[raw["type"]].update(id=media_id, sha256=sha256, **fields)
    raw[raw["type"]].pop("url", None)
    process(document)
    return Message.objects.get(wamid=raw["id"])


def b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.mark.e2e
def test_image_is_downloaded_checked_and_stored(sandbox, media_number):
    media_id = upload(sandbox, PNG, "image/png")
    message = receive("image", media_id, b64(PNG), mime_type="image/png")
    assert message.media_state == Message.MediaState.PENDING

    services.download_media(message_id=message.pk)

    message.refresh_from_db()
    assert message.media_state == Message.MediaState.STORED
    assert message.media_size == len(PNG)
    assert message.media_sha256 == hashlib.sha256(PNG).hexdigest()
    with message.media_file.open("rb") as stored:
        assert stored.read() == PNG
    requests_seen = [r["path"] for r in sandbox.control.requests()]
    assert any(path.endswith(f"/{media_id}") for path in requests_seen)


@pytest.mark.e2e
def test_media_meta_points_elsewhere_is_not_fetched_with_the_token(
    sandbox, media_number, settings
):
    # In production only Meta's own media host: the sandbox's URL is not.
    settings.WHATSAPP_MEDIA_HOSTS = ["lookaside.fbsbx.com"]
    media_id = upload(sandbox, PNG, "image/png")
    message = receive("image", media_id, b64(PNG), mime_type="image/png")

    services.download_media(message_id=message.pk)

    message.refresh_from_db()
    assert message.media_state == Message.MediaState.FAILED
    assert "not on an allowed origin" in message.error["media"]
    assert not message.media_file
    assert not [r for r in sandbox.control.requests() if "attachments" in r["path"]]


@pytest.mark.e2e
def test_a_media_id_that_is_not_a_graph_id_is_never_put_in_a_path(
    sandbox, media_number
):
    # Stored as it came (the webhook parser may refuse such an id as well).
    message = MessageFactory(
        conversation=ConversationFactory(number=media_number),
        type="image",
        payload={"id": "../../v24.0/me", "mime_type": "image/png"},
        media_id="../../v24.0/me",
        media_mime_type="image/png",
        media_state=Message.MediaState.PENDING,
    )

    services.download_media(message_id=message.pk)

    message.refresh_from_db()
    assert message.media_state == Message.MediaState.FAILED
    assert "not a Graph id" in message.error["media"]
    assert sandbox.control.requests() == []


@pytest.mark.e2e
def test_a_hex_sha256_is_accepted_too(sandbox, media_number):
    media_id = upload(sandbox, PDF, "application/pdf")
    message = receive("document", media_id, hashlib.sha256(PDF).hexdigest())

    services.download_media(message_id=message.pk)

    message.refresh_from_db()
    assert message.media_state == Message.MediaState.STORED
    assert message.media_filename == "invoice-4711.pdf"


@pytest.mark.e2e
def test_a_bad_hash_marks_the_media_failed(sandbox, media_number):
    media_id = upload(sandbox, PNG, "image/png")
    message = receive("image", media_id, b64(b"something else"))

    services.download_media(message_id=message.pk)

    message.refresh_from_db()
    assert message.media_state == Message.MediaState.FAILED
    assert "SHA-256" in message.error["media"]
    assert not message.media_file


@pytest.mark.e2e
def test_an_oversized_file_is_refused(sandbox, media_number):
    too_big = b"RIFF" + bytes(100 * 1024)  # a static sticker may have 100 KB
    media_id = upload(sandbox, too_big, "image/webp")
    message = receive("sticker", media_id, b64(too_big), animated=False)

    services.download_media(message_id=message.pk)

    message.refresh_from_db()
    assert message.media_state == Message.MediaState.FAILED
    assert "Too large" in message.error["media"]


@pytest.mark.e2e
def test_an_expired_url_is_fetched_again_once(sandbox, media_number, monkeypatch):
    media_id = upload(sandbox, PNG, "image/png")
    message = receive("image", media_id, b64(PNG))
    real = client.retrieve_media
    calls = []

    def first_url_expired(number, media):
        calls.append(media)
        # The first URL is born expired; the second is good for 5 minutes.
        sandbox.control.configure(media_url_ttl=-1 if len(calls) == 1 else 300)
        return real(number, media)

    monkeypatch.setattr(client, "retrieve_media", first_url_expired)

    services.download_media(message_id=message.pk)

    message.refresh_from_db()
    assert len(calls) == 2
    assert message.media_state == Message.MediaState.STORED


@pytest.mark.e2e
def test_an_unknown_media_id_fails_for_good(sandbox, media_number):
    message = receive("image", "1234567890", b64(PNG))

    services.download_media(message_id=message.pk)

    message.refresh_from_db()
    assert message.media_state == Message.MediaState.FAILED
    assert "refused" in message.error["media"]


def test_meta_unreachable_is_retried_by_the_task(media_number, settings, monkeypatch):
    settings.WHATSAPP_GRAPH_API_URL = "http://127.0.0.1:9"  # nothing listens
    message = receive("image", "1", b64(PNG))
    retried = []

    def fake_retry(*, exc, countdown):
        retried.append(exc)
        return RuntimeError("retry")

    monkeypatch.setattr(tasks.download_media, "retry", fake_retry)

    with pytest.raises(RuntimeError, match="retry"):
        tasks.download_media.run(message.pk)

    assert isinstance(retried[0], services.MediaTemporarilyUnavailable)
    message.refresh_from_db()
    assert message.media_state == Message.MediaState.PENDING


def test_the_download_task_is_routed_to_the_media_queue(settings):
    from helpdesk.celery import app

    route = app.amqp.router.route({}, "conversations.tasks.download_media")
    assert route["queue"].name == "media"
    route = app.amqp.router.route({}, "conversations.tasks.process_webhook_event")
    assert route["queue"].name == "default"


# --- Serving ------------------------------------------------------------------------


def stored(number, data: bytes, mime_type: str, filename: str = "") -> Message:
    message = MessageFactory(
        conversation=ConversationFactory(number=number),
        type="document" if filename else "image",
        media_mime_type=mime_type,
        media_filename=filename,
        media_state=Message.MediaState.STORED,
        media_size=len(data),
    )
    message.media_file.save("f.bin", ContentFile(data))
    return message


def test_agents_get_images_inline(agent_client, meta_number):
    message = stored(meta_number, PNG, "image/png")

    response = agent_client.get(f"/media/{message.pk}/")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == PNG
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert not response.get("Content-Disposition", "").startswith("attachment")


def test_documents_and_unknown_types_are_attachments(agent_client, meta_number):
    pdf = stored(meta_number, PDF, "application/pdf", filename="invoice.pdf")
    html = stored(meta_number, b"<script>x</script>", "text/html", filename="a.html")

    response = agent_client.get(f"/media/{pdf.pk}/")
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("attachment")
    assert 'filename="invoice.pdf"' in response["Content-Disposition"]

    response = agent_client.get(f"/media/{html.pk}/")
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"


def test_other_teams_and_anonymous_users_are_refused(client, meta_number):
    message = stored(meta_number, PNG, "image/png")

    assert client.get(f"/media/{message.pk}/").status_code in (401, 403)

    outsider = UserFactory(username="eve")
    outsider.teams.add(TeamFactory(name="Elsewhere"))
    client.force_login(outsider)
    assert client.get(f"/media/{message.pk}/").status_code == 404


def test_browsers_check_with_the_server_before_showing_media_again(
    agent_client, agent, meta_number
):
    message = stored(meta_number, PNG, "image/png")

    first = agent_client.get(f"/media/{message.pk}/")
    # Never reused without asking: access may have gone since.
    assert first["Cache-Control"] == "private, no-cache"
    etag = first["ETag"]

    again = agent_client.get(f"/media/{message.pk}/", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert not again.content

    agent.teams.clear()
    gone = agent_client.get(f"/media/{message.pk}/", HTTP_IF_NONE_MATCH=etag)
    assert gone.status_code == 404


def test_media_not_stored_is_a_404(agent_client, meta_number):
    message = MessageFactory(
        conversation=ConversationFactory(number=meta_number),
        media_state=Message.MediaState.PENDING,
    )
    assert agent_client.get(f"/media/{message.pk}/").status_code == 404
    other = stored(WhatsAppNumberFactory(), PNG, "image/png")
    assert agent_client.get(f"/media/{other.pk}/").status_code == 404


# --- Media in the WhatsApp Business app's shared history ----------------------

HISTORY_IMAGE = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRCRDcwNzgyRTJGMjdEQ0HM1"
HISTORY_DOCUMENT = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRCRDcwNzgyRTJGMjdEQ0HM2"


def history_media(**media_by_type) -> dict:
    """Meta's history chunk of an image and a document; each media object
    updated from media_by_type (None drops its id, as Meta's first history
    webhooks do)."""
    document = load_payload_json("history_media")
    thread = document["entry"][0]["changes"][0]["value"]["history"][0]["threads"][0]
    for raw in thread["messages"]:
        fields = media_by_type.get(raw["type"], {})
        if fields is None:
            raw[raw["type"]].pop("id")
        else:
            raw[raw["type"]].update(fields)
    return document


def process_queuing(document, monkeypatch, capture) -> list:
    """Process a body; return the tasks it queued once committed."""
    queued = []
    monkeypatch.setattr(
        doorbells, "ring", lambda task, *args, **options: queued.append((task, *args))
    )
    with capture(execute=True):
        process(document)
    return queued


def test_history_media_is_stored_and_its_download_queued_like_live_media(
    meta_number, monkeypatch, django_capture_on_commit_callbacks
):
    queued = process_queuing(
        history_media(), monkeypatch, django_capture_on_commit_callbacks
    )

    image = Message.objects.get(wamid=HISTORY_IMAGE)
    document = Message.objects.get(wamid=HISTORY_DOCUMENT)
    assert (image.direction, image.media_id, image.media_mime_type) == (
        "inbound",
        "1003383421387256",
        "image/jpeg",
    )
    assert (document.direction, document.from_business_app) == ("outbound", True)
    assert (document.media_id, document.media_filename) == (
        "1003383421387299",
        "return-label.pdf",
    )
    assert {image.media_state, document.media_state} == {"pending"}
    assert sorted(queued) == sorted(
        [(doorbells.DOWNLOAD_MEDIA, image.pk), (doorbells.DOWNLOAD_MEDIA, document.pk)]
    )


def test_media_ids_sent_after_the_history_are_noted_and_downloaded_once(
    meta_number, monkeypatch, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    first = process_queuing(
        history_media(image=None, document=None), monkeypatch, capture
    )
    image = Message.objects.get(wamid=HISTORY_IMAGE)
    assert (first, image.media_state, image.media_id) == ([], "", "")
    assert image.text == "The box arrived like this"

    later = process_queuing(history_media(), monkeypatch, capture)
    again = process_queuing(history_media(), monkeypatch, capture)

    image.refresh_from_db()
    document = Message.objects.get(wamid=HISTORY_DOCUMENT)
    assert (image.media_state, image.media_id) == ("pending", "1003383421387256")
    assert image.payload["sha256"] == "SfInY0gHbVNOXsOY8PrDE35q+lkDlSxqzN2Vp2/pBdk="
    assert (document.media_state, document.media_filename) == (
        "pending",
        "return-label.pdf",
    )
    assert sorted(later) == sorted(
        [(doorbells.DOWNLOAD_MEDIA, image.pk), (doorbells.DOWNLOAD_MEDIA, document.pk)]
    )
    assert again == []
    assert Message.objects.count() == 2


@pytest.mark.e2e
def test_history_media_is_downloaded_and_shown_in_the_thread(
    sandbox, media_number, agent_client
):
    image_id = upload(sandbox, PNG, "image/png")
    document_id = upload(sandbox, PDF, "application/pdf")
    process(
        history_media(
            image={"id": image_id, "sha256": b64(PNG), "mime_type": "image/png"},
            document={"id": document_id, "sha256": b64(PDF)},
        )
    )
    image = Message.objects.get(wamid=HISTORY_IMAGE)
    document = Message.objects.get(wamid=HISTORY_DOCUMENT)

    services.download_media(message_id=image.pk)
    services.download_media(message_id=document.pk)

    image.refresh_from_db()
    document.refresh_from_db()
    assert (image.media_state, image.media_size) == ("stored", len(PNG))
    assert (document.media_state, document.media_size) == ("stored", len(PDF))
    page = agent_client.get(
        reverse("conversations:detail", args=[image.conversation_id])
    ).content.decode()
    assert f'src="/media/{image.pk}/"' in page
    assert 'alt="Image: The box arrived like this"' in page
    assert f'href="/media/{document.pk}/" download>return-label.pdf</a>' in page
    assert agent_client.get(f"/media/{image.pk}/").status_code == 200
