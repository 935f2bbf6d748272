"""The Graph API client against the sandbox: bodies, answers and typed errors."""

import hashlib
import http.server
import threading

import pytest

from conversations.whatsapp import client
from tests.fixtures.outbound import sends

CUSTOMER = "4917012345678"
PDF = b"%PDF-1.4 boarding pass"


@pytest.mark.e2e
def test_a_text_send_posts_metas_body_and_returns_the_wamid(
    graph_sandbox, sandbox_number
):
    graph_sandbox.control.open_window(CUSTOMER)
    result = client.send_text(
        sandbox_number,
        f"+{CUSTOMER}",
        "Hello https://example.com",
        preview_url=True,
        callback_data="42",
    )
    assert result.wamid.startswith("wamid.")
    assert result.wa_id == CUSTOMER
    (record,) = sends(graph_sandbox)
    assert record["path"] == f"/v24.0/{sandbox_number.phone_number_id}/messages"
    assert record["has_token"]
    assert record["body"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": f"+{CUSTOMER}",
        "type": "text",
        "text": {"body": "Hello https://example.com", "preview_url": True},
        "biz_opaque_callback_data": "42",
    }


@pytest.mark.e2e
def test_a_meta_error_becomes_a_typed_error_with_every_field(
    graph_sandbox, sandbox_number
):
    graph_sandbox.control.open_window(CUSTOMER)
    graph_sandbox.control.set_faults(error_next=[131056])
    with pytest.raises(client.GraphAPIError) as caught:
        client.send_text(sandbox_number, f"+{CUSTOMER}", "Hi")
    error = caught.value
    assert error.code == 131056
    assert error.retryable
    assert not error.stops_number
    assert error.http_status == 400
    assert error.fbtrace_id
    assert error.details
    assert error.as_dict()["code"] == 131056


@pytest.mark.e2e
def test_a_closed_window_is_a_permanent_error(graph_sandbox, sandbox_number):
    with pytest.raises(client.GraphAPIError) as caught:
        client.send_text(sandbox_number, f"+{CUSTOMER}", "Hi")
    assert caught.value.code == 131047
    assert not caught.value.retryable


@pytest.mark.e2e
def test_a_bad_token_stops_the_number(graph_sandbox, sandbox_number):
    sandbox_number.access_token = "expired"  # noqa: S105
    with pytest.raises(client.GraphAPIError) as caught:
        client.send_text(sandbox_number, f"+{CUSTOMER}", "Hi")
    assert caught.value.code == 190
    assert caught.value.http_status == 401
    assert caught.value.stops_number


@pytest.mark.e2e
def test_server_errors_are_retryable(graph_sandbox, sandbox_number):
    graph_sandbox.control.open_window(CUSTOMER)
    graph_sandbox.control.set_faults(server_error_next=1)
    with pytest.raises(client.GraphAPIError) as caught:
        client.send_text(sandbox_number, f"+{CUSTOMER}", "Hi")
    assert caught.value.retryable


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["hang", "drop"])
def test_no_answer_after_the_request_went_out_is_accepted_but_unknown(
    graph_sandbox, sandbox_number, settings, mode
):
    settings.WHATSAPP_GRAPH_API_TIMEOUT = 0.3
    graph_sandbox.control.open_window(CUSTOMER)
    graph_sandbox.control.set_faults(
        timeout_after_accept_next=1, timeout_mode=mode, hang_seconds=3
    )
    with pytest.raises(client.AcceptedButUnknown):
        client.send_text(sandbox_number, f"+{CUSTOMER}", "Hi")
    assert len(graph_sandbox.control.messages(CUSTOMER)) == 1


@pytest.mark.e2e
def test_an_unreachable_host_is_a_connection_failure_before_sending(
    sandbox_number, settings
):
    settings.WHATSAPP_GRAPH_API_URL = "http://127.0.0.1:9"
    client.reset_session()
    with pytest.raises(client.ConnectionFailed) as caught:
        client.send_text(sandbox_number, f"+{CUSTOMER}", "Hi")
    assert caught.value.retryable


@pytest.mark.e2e
def test_upload_retrieve_and_download_media(graph_sandbox, sandbox_number):
    media_id = client.upload_media(
        sandbox_number, PDF, "application/pdf", "pass.pdf", kind="document"
    )
    info = client.retrieve_media(sandbox_number, media_id)
    assert info.mime_type == "application/pdf"
    assert info.file_size == len(PDF)
    assert info.sha256 == hashlib.sha256(PDF).hexdigest()
    assert client.download_media(sandbox_number, info.url) == PDF
    with pytest.raises(client.MediaTooLarge):
        client.download_media(sandbox_number, info.url, max_bytes=4)


def test_media_checks_refuse_what_meta_refuses():
    with pytest.raises(ValueError, match="image/jpeg"):
        client.check_media("image", "image/gif", 10)
    with pytest.raises(ValueError, match="at most"):
        client.check_media("sticker", "image/webp", 600 * 1024)
    client.check_media("document", "application/pdf", 10)


@pytest.mark.e2e
def test_list_templates_follows_the_pages(graph_sandbox, sandbox_number):
    names = [t["name"] for t in client.list_templates(sandbox_number, limit=2)]
    assert len(names) == len(set(names)) >= 6
    assert "order_shipped" in names


@pytest.mark.e2e
def test_mark_read_of_an_unknown_message_is_refused(graph_sandbox, sandbox_number):
    with pytest.raises(client.GraphAPIError) as caught:
        client.mark_read(sandbox_number, "wamid.unknown")
    assert caught.value.code == 100


# --- Where the token may go ----------------------------------------------------


class RecordingServer:
    """A plain HTTP server on a free port that records each request's path and
    Authorization header; `redirect_to` makes it answer 302 with that Location."""

    def __init__(self, redirect_to: str = ""):
        requests_seen = self.requests = []
        redirect = redirect_to

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                requests_seen.append((self.path, self.headers.get("Authorization")))
                if redirect and self.path.startswith("/media"):
                    self.send_response(302)
                    self.send_header("Location", redirect)
                    self.send_header("Content-Length", "0")
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                self.end_headers()
                if not (redirect and self.path.startswith("/media")):
                    self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_a_media_url_on_a_host_meta_does_not_serve_media_from_gets_no_token(
    sandbox_number, settings
):
    with RecordingServer() as elsewhere:
        settings.WHATSAPP_MEDIA_HOSTS = ["lookaside.fbsbx.com"]
        for url in (
            f"{elsewhere.origin}/media?mid=1",
            # The allowed host's name in the userinfo, the real host after it.
            f"http://lookaside.fbsbx.com@127.0.0.1:{elsewhere.port}/media",
            # The allowed host, but not over HTTPS.
            "http://lookaside.fbsbx.com/media",
        ):
            with pytest.raises(client.UntrustedURL):
                client.download_media(sandbox_number, url)
    assert elsewhere.requests == []


def test_media_urls_on_an_allowed_origin_are_fetched_with_the_token(
    sandbox_number, settings
):
    with RecordingServer() as media_host:
        settings.WHATSAPP_MEDIA_HOSTS = ["lookaside.fbsbx.com", media_host.origin]
        assert client.download_media(sandbox_number, f"{media_host.origin}/m") == b"{}"
    assert media_host.requests == [("/m", f"Bearer {sandbox_number.access_token}")]


def test_a_redirect_is_not_followed_with_the_token(sandbox_number, settings):
    with RecordingServer(redirect_to="/collect") as media_host:
        settings.WHATSAPP_MEDIA_HOSTS = [media_host.origin]
        with pytest.raises(client.GraphAPIError) as caught:
            client.download_media(sandbox_number, f"{media_host.origin}/media?mid=1")
    assert caught.value.http_status == 302
    assert not caught.value.retryable
    assert [path for path, _ in media_host.requests] == ["/media?mid=1"]


def test_template_pages_are_fetched_from_the_graph_api_only(sandbox_number):
    with RecordingServer() as elsewhere:
        with pytest.raises(client.UntrustedURL):
            client.list_templates_page(
                sandbox_number, f"{elsewhere.origin}/v24.0/1/message_templates"
            )
    assert elsewhere.requests == []


@pytest.mark.e2e
def test_ids_are_checked_before_they_go_into_a_path(graph_sandbox, sandbox_number):
    for media_id in (
        f"../{sandbox_number.phone_number_id}/messages",
        "1/../2",
        "123?phone_number_id=9",
        "123#x",
        "12a",
        "",
        "1" * 33,
        "١٢٣",  # digits, but not ASCII ones
    ):
        with pytest.raises(client.InvalidId):
            client.retrieve_media(sandbox_number, media_id)
    assert graph_sandbox.control.requests() == []
    sandbox_number.waba_id = "200000000000001/../../me"
    with pytest.raises(client.InvalidId):
        client.list_templates_page(sandbox_number)
    sandbox_number.phone_number_id = "100000000000001/media"
    with pytest.raises(client.InvalidId):
        client.send_text(sandbox_number, f"+{CUSTOMER}", "Hi")
    assert graph_sandbox.control.requests() == []
