"""The sandbox forwards the phone page's business clock to the helpdesk,
signed with the number's app secret, and says clearly when it cannot."""

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from sandbox.payloads import verify
from sandbox.testing import running_sandbox


@contextlib.contextmanager
def helpdesk_stand_in(status: int, answer: dict):
    """An HTTP server that records each POST and answers `status`, `answer`."""
    posted = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posted.append((self.path, dict(self.headers), body))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", posted
    finally:
        server.shutdown()
        server.server_close()


def clock(sandbox, **move) -> requests.Response:
    return requests.post(
        f"{sandbox.base_url}/_sandbox/business-clock",
        json={"phone_number_id": sandbox.number.phone_number_id, **move},
        timeout=10,
    )


@pytest.mark.e2e
def test_the_request_goes_to_the_helpdesk_signed_with_only_known_fields():
    with (
        helpdesk_stand_in(200, {"open": False}) as (url, posted),
        running_sandbox(webhook_url=f"{url}/webhooks/whatsapp/") as sandbox,
    ):
        answer = clock(sandbox, jump="closed", secret="x")

        assert (answer.status_code, answer.json()) == (200, {"open": False})
        [(path, headers, body)] = posted
        assert path == "/dev/business-clock/"
        assert verify(body, headers["X-Hub-Signature-256"], sandbox.number.app_secret)
        assert json.loads(body) == {
            "jump": "closed",
            "phone_number_id": sandbox.number.phone_number_id,
        }


@pytest.mark.e2e
def test_a_helpdesk_with_the_clock_off_or_away_is_named():
    with (
        helpdesk_stand_in(404, {}) as (url, _),
        running_sandbox(webhook_url="") as sandbox,
    ):
        assert clock(sandbox).status_code == 409
        sandbox.control.configure(helpdesk_url=url)
        off = clock(sandbox, jump="closed")
        assert off.status_code == 404
        assert "SANDBOX_CLOCK=1" in off.json()["error"]
        sandbox.control.configure(helpdesk_url="http://127.0.0.1:9")
        away = clock(sandbox)
        assert away.status_code == 502
        assert "did not answer" in away.json()["error"]
