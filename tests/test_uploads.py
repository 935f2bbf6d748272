"""Uploads past their limit are refused as they arrive, never read whole.

Each request here is larger than its (small, overridden) limit; the tests
check the answer (413, in the shape of its caller) and how much of the body
was read: a FakePayload's length is what is left unread of it, and an ASGI
receive() counts the messages it handed out.
"""

import asyncio

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.http.multipartparser import MultiPartParser
from django.test import Client, RequestFactory
from django.test.client import FakePayload, encode_multipart
from django.urls import reverse
from rest_framework.authtoken.models import Token

from conversations.models import Message, NotificationBatch
from conversations.uploads import FORM_ALLOWANCE, SizeLimitedUploadHandler
from helpdesk.asgi import application
from tests.factories import ConversationFactory
from tests.fixtures.business import api_client_for

pytestmark = pytest.mark.django_db

BOUNDARY = "uploads-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
LIMIT = 16 * 1024  # "16.0 KB"
# Far past LIMIT + FORM_ALLOWANCE: refused by its Content-Length.
HUGE = 1024 * 1024


class File:
    """A file field of a hand-built multipart body."""

    def __init__(self, name: str, data: bytes, content_type: str):
        self.name, self.data, self.content_type = name, data, content_type

    def read(self) -> bytes:
        return self.data


def multipart(**fields) -> bytes:
    return encode_multipart(BOUNDARY, fields)


def post_counted(client, url, body: bytes, **extra):
    """POST `body` from a stream that tells how much of it the server read."""
    stream = FakePayload(body)
    response = client.post(
        url, body, content_type=MULTIPART, **{"wsgi.input": stream}, **extra
    )
    return response, len(body) - len(stream)


@pytest.fixture
def limits(settings):
    settings.UPLOAD_LIMITS = {
        "composer": LIMIT,
        "api_reply": LIMIT,
        "header_media": LIMIT,
        "csv": LIMIT,
    }


@pytest.fixture
def closed_conversation(number, agent):
    """The customer service window is closed: a file under the limit is
    refused window_closed before anything goes to Meta."""
    return ConversationFactory(number=number)


# --- The workspace composer ------------------------------------------------------


def reply_url(conversation) -> str:
    return reverse("conversations:reply", args=[conversation.pk])


def test_a_composer_attachment_past_the_limit_is_refused_unread(
    agent_client, closed_conversation, limits
):
    body = multipart(text="Here", file=File("big.pdf", b"x" * HUGE, "application/pdf"))

    response, read = post_counted(
        agent_client, reply_url(closed_conversation), body, HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 413
    html = response.content.decode()
    assert 'id="composer-error"' in html
    assert "That file is too large: at most 16.0 KB." in html
    assert read == 0
    assert not Message.objects.exists()


def test_a_composer_attachment_a_byte_past_the_limit_is_refused_as_it_streams(
    agent_client, closed_conversation, limits
):
    at_limit = multipart(file=File("a.pdf", b"x" * LIMIT, "application/pdf"))
    past_it = multipart(file=File("a.pdf", b"x" * (LIMIT + 1), "application/pdf"))

    accepted, _ = post_counted(
        agent_client, reply_url(closed_conversation), at_limit, HTTP_HX_REQUEST="true"
    )
    refused, _ = post_counted(
        agent_client, reply_url(closed_conversation), past_it, HTTP_HX_REQUEST="true"
    )

    assert accepted.status_code == 409, "window_closed: the size was fine"
    assert refused.status_code == 413
    assert "That file is too large" in refused.content.decode()


def test_a_composer_refusal_still_hides_other_teams_conversations(agent_client, limits):
    foreign = ConversationFactory()
    body = multipart(file=File("big.pdf", b"x" * HUGE, "application/pdf"))

    response, read = post_counted(agent_client, reply_url(foreign), body)

    assert response.status_code == 404
    assert read == 0


def test_the_composer_still_checks_csrf_for_an_upload_within_the_limit(
    agent, closed_conversation, limits
):
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)
    client.get(reverse("conversations:detail", args=[closed_conversation.pk]))
    token = client.cookies["csrftoken"].value
    body = multipart(file=File("a.pdf", b"x" * LIMIT, "application/pdf"))

    htmx = {"HTTP_HX_REQUEST": "true"}
    forged, _ = post_counted(client, reply_url(closed_conversation), body, **htmx)
    genuine, _ = post_counted(
        client, reply_url(closed_conversation), body, HTTP_X_CSRFTOKEN=token, **htmx
    )

    assert forged.status_code == 403
    assert genuine.status_code == 409, "window_closed: past the CSRF check"


# --- The REST API ----------------------------------------------------------------


def api_reply_url(conversation) -> str:
    return f"/api/v1/conversations/{conversation.pk}/messages/"


def test_an_api_reply_with_a_file_past_the_limit_is_a_413_read_no_further(
    agent, closed_conversation, limits
):
    body = multipart(file=File("big.pdf", b"x" * HUGE, "application/pdf"))

    response, read = post_counted(
        api_client_for(agent), api_reply_url(closed_conversation), body
    )

    assert response.status_code == 413
    assert response.json() == {
        "code": "too_large",
        "detail": "That file is too large: at most 16.0 KB.",
    }
    assert read == 0
    assert not Message.objects.exists()


def test_an_api_reply_with_a_file_a_byte_past_the_limit_is_refused(
    agent, closed_conversation, limits
):
    api = api_client_for(agent)
    at_limit = multipart(file=File("a.pdf", b"x" * LIMIT, "application/pdf"))
    past_it = multipart(file=File("a.pdf", b"x" * (LIMIT + 1), "application/pdf"))

    accepted, _ = post_counted(api, api_reply_url(closed_conversation), at_limit)
    refused, _ = post_counted(api, api_reply_url(closed_conversation), past_it)

    assert accepted.status_code == 409
    assert accepted.json()["code"] == "window_closed"
    assert refused.status_code == 413
    assert refused.json()["code"] == "too_large"


def test_an_api_reply_as_json_past_djangos_body_limit_is_a_413(
    agent, closed_conversation, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = b'{"type": "text", "text": "' + b"x" * 4096 + b'"}'
    stream = FakePayload(body)

    response = api_client_for(agent).post(
        api_reply_url(closed_conversation),
        body,
        content_type="application/json",
        **{"wsgi.input": stream},
    )

    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert len(stream) == len(body), "nothing read"


def test_a_header_media_upload_past_the_limit_is_a_413_read_no_further(
    shop_api, number, limits
):
    # A type Meta refuses: without the size check it would be a 422.
    body = multipart(file=File("notes.txt", b"x" * HUGE, "text/plain"))

    response, read = post_counted(shop_api, "/api/v1/media/", body)

    assert response.status_code == 413
    assert response.json() == {
        "code": "too_large",
        "detail": "That file is too large: at most 16.0 KB.",
    }
    assert read == 0


def test_a_header_media_upload_a_byte_past_the_limit_is_refused(
    shop_api, number, limits
):
    at_limit = multipart(file=File("a.txt", b"x" * LIMIT, "text/plain"))
    past_it = multipart(file=File("a.txt", b"x" * (LIMIT + 1), "text/plain"))

    accepted, _ = post_counted(shop_api, "/api/v1/media/", at_limit)
    refused, _ = post_counted(shop_api, "/api/v1/media/", past_it)

    assert accepted.status_code == 422, "media_refused: the size was fine"
    assert refused.status_code == 413


# --- The admin's CSV of bulk notifications ---------------------------------------


def test_a_notifications_csv_past_the_limit_is_refused_unread(admin_client, limits):
    rows = b"phone,reference\n" + b"+4915112345678,ref\n" * (HUGE // 20)
    body = multipart(file=File("big.csv", rows, "text/csv"))

    response, read = post_counted(
        admin_client, reverse("admin:conversations_notificationbatch_upload"), body
    )

    assert response.status_code == 413
    html = response.content.decode()
    assert "That file is too large: at most 16.0 KB." in html
    assert 'name="file"' in html, "the form again"
    assert read == 0
    assert not NotificationBatch.objects.exists()


def test_a_notifications_csv_a_byte_past_the_limit_is_refused(admin_client, limits):
    url = reverse("admin:conversations_notificationbatch_upload")
    text = b"reference\n" + b"x" * LIMIT
    at_limit = multipart(file=File("a.csv", text[:LIMIT], "text/csv"))
    past_it = multipart(file=File("a.csv", text[: LIMIT + 1], "text/csv"))

    accepted, _ = post_counted(admin_client, url, at_limit)
    refused, _ = post_counted(admin_client, url, past_it)

    assert accepted.status_code == 200, "the form's own errors: the size was fine"
    assert "too large" not in accepted.content.decode()
    assert refused.status_code == 413


# --- The upload handler on its own ------------------------------------------------


def test_the_handler_stops_reading_as_soon_as_the_file_passes_the_limit():
    limit, chunk = 4096, 1024
    # Within what the Content-Length check lets through, so the stream decides.
    data = b"x" * (FORM_ALLOWANCE - 1024)
    body = multipart(file=File("a.bin", data, "application/octet-stream"))
    stream = FakePayload(body)
    request = RequestFactory().post("/")
    handler = SizeLimitedUploadHandler(request, limit)
    handler.chunk_size = chunk  # small chunks, so that "early" shows here
    parser = MultiPartParser(
        {"CONTENT_TYPE": MULTIPART, "CONTENT_LENGTH": str(len(body))},
        stream,
        [handler, MemoryFileUploadHandler(request)],
    )

    _, files = parser.parse()

    assert handler.too_large
    assert "file" not in files
    read = len(body) - len(stream)
    assert read <= limit + 3 * chunk, read
    assert read < len(body) / 10


# --- In front of Django: the ASGI application --------------------------------------


@pytest.fixture
def asgi_on_the_test_connection():
    """Django's ASGI handler closes "old" connections around each request;
    the test's connection holds its transaction, so keep it (as Django's
    own test client does)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def asgi_post(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]):
    """POST through helpdesk.asgi's application; the body's messages are
    handed out one by one. Returns the status, the body and how many of the
    messages were asked for."""
    handed_out = 0

    async def receive():
        nonlocal handed_out
        if handed_out < len(chunks):
            handed_out += 1
            more = handed_out < len(chunks)
            return {
                "type": "http.request",
                "body": chunks[handed_out - 1],
                "more_body": more,
            }
        # The client stays until the answer: Django's wait for a disconnect
        # is cancelled once it has answered.
        await asyncio.Future()

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    async_to_sync(application)(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(
        m.get("body", b"") for m in sent if m["type"] == "http.response.body"
    )
    return status, body.decode(), handed_out


def session_cookie(client, user) -> tuple[bytes, bytes]:
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


def chunked(body: bytes, size: int = 8192) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def test_asgi_reads_a_chunked_upload_only_up_to_its_limit(
    client, agent, closed_conversation, limits, asgi_on_the_test_connection
):
    body = multipart(file=File("big.pdf", b"x" * HUGE, "application/pdf"))
    chunks = chunked(body)
    headers = [
        session_cookie(client, agent),
        (b"content-type", MULTIPART.encode()),
        (b"transfer-encoding", b"chunked"),
        (b"hx-request", b"true"),
    ]

    status, html, handed_out = asgi_post(
        reply_url(closed_conversation), chunks, headers
    )

    assert status == 413
    assert "That file is too large: at most 16.0 KB." in html
    # LIMIT + FORM_ALLOWANCE is 80 KB: ten messages and the one past it.
    assert handed_out <= (LIMIT + FORM_ALLOWANCE) // 8192 + 1
    assert handed_out < len(chunks)


def test_asgi_reads_nothing_of_an_upload_whose_length_is_past_its_limit(
    client, agent, closed_conversation, limits, asgi_on_the_test_connection
):
    body = multipart(file=File("big.pdf", b"x" * HUGE, "application/pdf"))
    headers = [
        session_cookie(client, agent),
        (b"content-type", MULTIPART.encode()),
        (b"content-length", str(len(body)).encode()),
    ]

    status, text, handed_out = asgi_post(
        api_reply_url(closed_conversation), chunked(body), headers
    )

    assert status == 413
    assert '"code":"too_large"' in text
    assert handed_out == 0


def test_asgi_passes_an_upload_within_its_limit_on_whole(
    agent, closed_conversation, limits, asgi_on_the_test_connection
):
    body = multipart(file=File("a.pdf", b"x" * LIMIT, "application/pdf"))
    chunks = chunked(body)
    token, _ = Token.objects.get_or_create(user=agent)
    headers = [
        (b"authorization", f"Token {token.key}".encode()),
        (b"content-type", MULTIPART.encode()),
        (b"content-length", str(len(body)).encode()),
    ]

    status, text, handed_out = asgi_post(
        api_reply_url(closed_conversation), chunks, headers
    )

    assert status == 409, text
    assert '"code":"window_closed"' in text
    assert handed_out == len(chunks)


def test_asgi_reads_other_requests_whole(
    client, agent, closed_conversation, asgi_on_the_test_connection
):
    """A view that takes no upload is left alone (Django reads the body)."""
    body = b"text=" + b"x" * 200_000
    headers = [
        session_cookie(client, agent),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", str(len(body)).encode()),
    ]

    _, _, handed_out = asgi_post(
        reverse("conversations:note", args=[closed_conversation.pk]),
        chunked(body),
        headers,
    )

    assert handed_out == len(chunked(body))
