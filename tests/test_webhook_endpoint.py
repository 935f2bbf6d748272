"""POST/GET /webhooks/whatsapp/: Meta's handshake, signatures, storage, queueing.

The endpoint runs under a real uvicorn on a free port and talks to the real
test database and a throwaway Redis, so what is asserted is what Meta sees.
"""

import os
import secrets
import subprocess

import pytest
import requests

from conversations.models import WebhookEvent
from conversations.whatsapp.webhooks import MAX_BODY_BYTES, PROCESS_TASK
from helpdesk.launcher import free_port
from helpdesk.processes import daphne_command, in_this_python
from sandbox.testing import wait_until
from tests.factories import MetaAppFactory
from tests.fixtures.webhook_server import (
    BASE_DIR,
    PATH,
    RedisServer,
    database_url,
    decode_celery_message,
    serving,
    sign,
    signed_headers,
    text_message_body,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def endpoint(redis_server):
    with serving(redis_url=redis_server.url) as (server, endpoint):
        yield server


@pytest.fixture
def app():
    return MetaAppFactory(app_secret=secrets.token_hex(16))


def message_body(wamid="wamid.test1"):
    return text_message_body(wamid, "4917012345678", "100000000000001", "2000001")


# --- The GET handshake --------------------------------------------------------


def test_handshake_with_a_known_verify_token_echoes_the_challenge(endpoint, app):
    response = requests.get(
        endpoint.url,
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": app.verify_token,
            "hub.challenge": "1158201444",
        },
        timeout=5,
    )
    assert response.status_code == 200
    assert response.text == "1158201444"
    assert response.headers["Content-Type"].startswith("text/plain")


def test_handshake_accepts_the_token_of_any_app(endpoint):
    MetaAppFactory(verify_token="first-token")
    MetaAppFactory(verify_token="second-token")
    response = requests.get(
        endpoint.url,
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": "second-token",
            "hub.challenge": "42",
        },
        timeout=5,
    )
    assert (response.status_code, response.text) == (200, "42")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": "TOKEN", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"},
        {},
    ],
    ids=["wrong-token", "wrong-mode", "no-token", "empty-token", "nothing"],
)
def test_handshake_is_refused_without_subscribe_and_a_known_token(endpoint, params):
    MetaAppFactory(verify_token="TOKEN")
    response = requests.get(endpoint.url, params=params, timeout=5)
    assert response.status_code == 403
    assert "1" not in response.text


def test_handshake_knows_an_app_added_a_moment_ago(endpoint, app):
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": "brand-new",
        "hub.challenge": "7",
    }
    assert requests.get(endpoint.url, params=params, timeout=5).status_code == 403
    MetaAppFactory(verify_token="brand-new")
    response = requests.get(endpoint.url, params=params, timeout=5)
    assert (response.status_code, response.text) == (200, "7")


# --- Signatures: nothing unsigned is stored -----------------------------------


def test_post_without_a_signature_is_401_and_stores_nothing(endpoint, app):
    response = requests.post(endpoint.url, data=message_body(), timeout=5)
    assert response.status_code == 401
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "signature",
    [
        "sha256=" + "0" * 64,
        "sha256=zz",
        "sha1=" + "0" * 40,
        "garbage",
        "sha256=",
    ],
    ids=["wrong-digest", "not-hex", "sha1", "no-prefix", "empty-digest"],
)
def test_post_with_a_bad_or_malformed_signature_is_403_and_stores_nothing(
    endpoint, app, signature
):
    response = requests.post(
        endpoint.url,
        data=message_body(),
        headers={"X-Hub-Signature-256": signature},
        timeout=5,
    )
    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()


def test_signature_with_another_apps_secret_over_other_bytes_is_refused(endpoint, app):
    body = message_body()
    tampered = body.replace(b"Where", b"Wh3re")
    response = requests.post(
        endpoint.url, data=tampered, headers=signed_headers(body, app.app_secret)
    )
    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()


# --- A valid POST: one row, exact bytes, then the doorbell ---------------------


def test_signed_post_stores_exact_bytes_and_headers_then_queues_processing(
    endpoint, app, redis_server
):
    body = message_body()
    headers = {
        **signed_headers(body, app.app_secret),
        "User-Agent": "facebookplatform/1.0",
    }
    response = requests.post(endpoint.url, data=body, headers=headers, timeout=5)

    assert response.status_code == 200
    event = WebhookEvent.objects.get()
    assert bytes(event.body) == body
    assert event.app_id == app.pk
    assert event.state == WebhookEvent.State.PENDING
    assert event.signature_valid
    assert event.received_at is not None
    assert event.headers["x-hub-signature-256"] == headers["X-Hub-Signature-256"]
    assert event.headers["content-type"] == "application/json"
    assert event.headers["user-agent"] == "facebookplatform/1.0"
    assert event.headers["content-length"] == str(len(body))

    # The Celery message names the task and the stored row's id (a batch).
    client = redis_server.client()
    raw = wait_until(lambda: client.lpop("default"), timeout=5)
    celery_headers, (args, kwargs, _embed) = decode_celery_message(raw)
    assert celery_headers["task"] == PROCESS_TASK
    assert args == [[event.pk]] and kwargs == {}
    assert client.llen("default") == 0


def test_the_row_is_committed_before_the_message_is_published(
    endpoint, app, redis_server
):
    client = redis_server.client()
    for index in range(5):
        body = message_body(f"wamid.commit{index}")
        requests.post(
            endpoint.url, data=body, headers=signed_headers(body, app.app_secret)
        )
    published = []
    while len(published) < 5:
        raw = wait_until(lambda: client.rpop("default"), timeout=5)
        _, ((ids,), _, _) = decode_celery_message(raw)
        published += ids
        # Read on another connection than the endpoint's: visible, so committed.
        assert WebhookEvent.objects.filter(pk__in=ids).count() == len(ids)


def test_each_app_signs_with_its_own_secret(endpoint):
    apps = [MetaAppFactory(app_secret=secrets.token_hex(16)) for _ in range(3)]
    for index, app in enumerate(apps):
        body = message_body(f"wamid.app{index}")
        response = requests.post(
            endpoint.url, data=body, headers=signed_headers(body, app.app_secret)
        )
        assert response.status_code == 200
    assert [event.app_id for event in WebhookEvent.objects.order_by("id")] == [
        app.pk for app in apps
    ]


def test_an_app_added_a_moment_ago_is_accepted_at_once(endpoint, app):
    body = message_body()
    requests.post(endpoint.url, data=body, headers=signed_headers(body, app.app_secret))
    newcomer = MetaAppFactory(app_secret="just-added-secret")
    response = requests.post(
        endpoint.url, data=body, headers=signed_headers(body, newcomer.app_secret)
    )
    assert response.status_code == 200
    assert WebhookEvent.objects.order_by("id").last().app_id == newcomer.pk


def test_non_ascii_bytes_are_verified_and_stored_as_received(endpoint, app):
    # Meta escapes non-ASCII as \uXXXX; raw UTF-8 must verify just the same.
    body = (
        b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[]}],'
        b'"note":"\\u00e4\\u0645 \xc3\xa4\xd9\x85 \xf0\x9f\x91\x8d \\/"}'
    )
    response = requests.post(
        endpoint.url, data=body, headers=signed_headers(body, app.app_secret)
    )
    assert response.status_code == 200
    assert bytes(WebhookEvent.objects.get().body) == body


def test_signed_malformed_json_is_stored_for_processing_to_mark(endpoint, app):
    body = b'{"object": "whatsapp_business_account", "entry": [tru'
    response = requests.post(
        endpoint.url, data=body, headers=signed_headers(body, app.app_secret)
    )
    assert response.status_code == 200
    event = WebhookEvent.objects.get()
    assert bytes(event.body) == body
    assert event.state == WebhookEvent.State.PENDING


def test_a_3_mb_body_is_accepted(endpoint, app):
    padding = b"x" * (3 * 1024 * 1024 - 40)
    body = b'{"object":"whatsapp_business_account","p":"' + padding + b'"}'
    assert len(body) > 3 * 1024 * 1024
    response = requests.post(
        endpoint.url, data=body, headers=signed_headers(body, app.app_secret)
    )
    assert response.status_code == 200
    assert bytes(WebhookEvent.objects.get().body) == body


def test_a_body_over_the_limit_is_refused_with_413(endpoint, app):
    body = b'{"p":"' + b"x" * MAX_BODY_BYTES + b'"}'
    response = requests.post(
        endpoint.url, data=body, headers=signed_headers(body, app.app_secret)
    )
    assert response.status_code == 413
    assert not WebhookEvent.objects.exists()


def test_a_chunked_body_over_the_limit_is_refused_with_413(endpoint, app):
    chunk = b"x" * (256 * 1024)
    count = MAX_BODY_BYTES // len(chunk) + 2
    body = chunk * count
    response = requests.post(
        endpoint.url,
        data=(chunk for _ in range(count)),  # no Content-Length: chunked
        headers={"X-Hub-Signature-256": sign(body, app.app_secret)},
    )
    assert response.status_code == 413
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(endpoint, app, method):
    response = requests.request(method, endpoint.url, data=b"{}", timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"


def test_odd_inputs_never_get_a_500(endpoint, app):
    odd = [
        ("GET", {"params": {"hub.mode": "subscribe", "hub.verify_token": "é\u0645"}}),
        ("GET", {"params": "hub.mode=%ff%fe&hub.verify_token=%00&hub.challenge=%ff"}),
        ("POST", {"data": b"", "headers": {"X-Hub-Signature-256": ""}}),
        (
            "POST",
            {"data": b"\x00\xff", "headers": {"X-Hub-Signature-256": "sha256=\xff"}},
        ),
        ("POST", {"data": b"", "headers": signed_headers(b"", app.app_secret)}),
    ]
    for method, options in odd:
        response = requests.request(method, endpoint.url, timeout=5, **options)
        assert response.status_code < 500, (method, options, response.status_code)


# --- The database down: 503, so Meta retries ----------------------------------


def _unreachable_database(settings_dict: dict) -> dict:
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return {**settings_dict, "NAME": "/nonexistent-directory/helpdesk.sqlite3"}
    return {**settings_dict, "HOST": "127.0.0.1", "PORT": free_port()}


def test_database_unavailable_is_a_503_for_posts_and_handshakes(redis_server, app):
    from django.db import connections

    database = _unreachable_database(connections["default"].settings_dict)
    with serving(database=database, redis_url=redis_server.url) as (server, _):
        body = message_body()
        response = requests.post(
            server.url, data=body, headers=signed_headers(body, app.app_secret)
        )
        assert response.status_code == 503
        response = requests.get(
            server.url,
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": app.verify_token,
                "hub.challenge": "1",
            },
        )
        assert response.status_code == 503


# --- The production entry point ------------------------------------------------


def test_daphne_serves_the_webhook_before_django_and_django_behind_it(
    app, redis_server
):
    """`daphne helpdesk.asgi:application`, the documented production command."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_server.url,
    }
    process = subprocess.Popen(
        in_this_python(daphne_command(host="127.0.0.1", port=port)),
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/healthz"), timeout=30, interval=0.1)
        body = message_body()
        response = requests.post(
            base + PATH, data=body, headers=signed_headers(body, app.app_secret)
        )
        assert response.status_code == 200
        assert bytes(WebhookEvent.objects.get().body) == body
        client = redis_server.client()
        raw = wait_until(lambda: client.lpop("default"), timeout=5)
        assert decode_celery_message(raw)[1][0] == [[WebhookEvent.objects.get().pk]]
        # Everything else is still Django's.
        assert requests.get(f"{base}/healthz", timeout=5).text == "ok"
    finally:
        process.terminate()
        process.wait(15)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False
