"""Where status callbacks to the business may go, and what is kept of a refusal.

Every endpoint here listens on loopback: the tests of this machine never
reach beyond it. Names are resolved by a stand-in resolver (the real one for
any other name), and the DNS rebinding test refuses any connection that is
not to loopback before it is made.
"""

import socket
import threading
import time

import pytest
import urllib3.util.connection

from conversations import callbacks, services
from conversations.models import CallbackDelivery, CallbackEndpoint, Notification
from sandbox.testing import webhook_receiver
from tests.factories import MessageFactory

BODY = b'{"type":"notification.status"}'
# A public address (TEST-NET ranges count as private): never connected to.
PUBLIC = "1.1.1.1"


@pytest.fixture
def business():
    """The business's endpoint: a receiver on a loopback port."""
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def resolver(monkeypatch):
    """Names of this test's own: name -> the addresses answered, one per call."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            queue = answers[host]
            address = queue.pop(0) if len(queue) > 1 else queue[0]
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def loopback_only(monkeypatch):
    """Refuse, without a packet sent, every HTTP connection not to loopback."""
    real = urllib3.util.connection.create_connection

    def create_connection(address, *args, **kwargs):
        host, port = address
        for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            if not sockaddr[0].startswith("127.") and sockaddr[0] != "::1":
                raise ConnectionRefusedError(f"{sockaddr[0]} is off this machine")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def test_callbacks_to_loopback_are_refused_before_any_request(business):
    port = port_of(business.url)
    for url in (
        business.url,
        f"http://localhost:{port}/webhooks/whatsapp/",
        f"http://127.1:{port}/webhooks/whatsapp/",
        f"http://[::ffff:127.0.0.1]:{port}/webhooks/whatsapp/",
    ):
        result = callbacks.post(url, "s3cret", BODY)
        assert not result.ok
        assert result.status_code is None
        assert "Refused" in result.error
    assert business.received == []


def test_the_address_a_name_resolves_to_is_what_is_checked(business, resolver):
    resolver["bookings.shop.test"] = ["127.0.0.1"]
    url = business.url.replace("127.0.0.1", "bookings.shop.test")

    result = callbacks.post(url, "s3cret", BODY)

    assert not result.ok
    assert "resolves to 127.0.0.1" in result.error
    assert business.received == []


def test_a_name_that_rebinds_to_loopback_after_the_check_is_not_followed(
    business, resolver, loopback_only
):
    # Public when checked, loopback for whoever resolves it again.
    resolver["rebind.shop.test"] = [PUBLIC, "127.0.0.1"]
    url = business.url.replace("127.0.0.1", "rebind.shop.test")

    result = callbacks.post(url, "s3cret", BODY)

    assert not result.ok
    # The connection went to the address checked (refused here, off-machine).
    assert PUBLIC in result.error
    assert business.received == []


def test_private_addresses_are_allowed_when_the_setting_says_so(
    business, resolver, settings
):
    settings.BUSINESS_CALLBACK_ALLOW_PRIVATE_ADDRESSES = True
    resolver["bookings.internal.test"] = ["127.0.0.1"]
    url = business.url.replace("127.0.0.1", "bookings.internal.test")

    result = callbacks.post(url, "s3cret", BODY)

    assert result.ok
    [received] = business.received
    assert received.body == BODY
    assert received.headers["Host"] == f"bookings.internal.test:{port_of(url)}"


class HoldingServer:
    """Answers 500 with a huge declared body, sends some of it, then holds."""

    def __init__(self, sent: bytes):
        self.sent = sent
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/callbacks"
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        connection, _ = self.listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 500 Internal Server Error\r\n"
                b"Content-Type: text/plain\r\n"
                b"Content-Length: 1000000000\r\n\r\n" + self.sent
            )
            self.release.wait(30)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(5)
        self.listener.close()


def test_only_the_start_of_a_refusals_body_is_read(settings):
    settings.BUSINESS_CALLBACK_ALLOW_PRIVATE_ADDRESSES = True
    settings.BUSINESS_CALLBACK_TIMEOUT = 3.0
    with HoldingServer(b"quota exceeded " + b"x" * 64 * 1024) as endpoint:
        started = time.monotonic()
        result = callbacks.post(endpoint.url, "s3cret", BODY)
        took = time.monotonic() - started
    assert result.status_code == 500
    assert result.error.startswith("quota exceeded x")
    assert len(result.error) == callbacks.ERROR_BODY_BYTES
    # Not a byte more was waited for than the start of the body.
    assert took < settings.BUSINESS_CALLBACK_TIMEOUT


@pytest.mark.django_db
def test_a_refused_endpoint_keeps_its_delivery_pending_with_the_reason(business):
    endpoint = CallbackEndpoint.objects.create(
        name="Loopback", url=business.url, secret="s3cret"
    )
    message = MessageFactory(direction="outbound", status="sent", wamid=None)
    delivery = CallbackDelivery.objects.create(
        endpoint=endpoint,
        notification=_notification(message),
        event="sent",
        payload={"type": "notification.status", "status": "sent"},
    )

    assert services.deliver_callbacks() == 1

    delivery.refresh_from_db()
    assert delivery.state == CallbackDelivery.State.PENDING
    assert delivery.last_status_code is None
    assert "Refused" in delivery.last_error
    assert business.received == []


def _notification(message) -> Notification:
    return Notification.objects.create(
        to=message.conversation.customer.phone,
        purpose=Notification.Purpose.UTILITY,
        template_name="boarding_pass",
        template_language="en",
        state=Notification.State.QUEUED,
        message=message,
    )
