"""Fixtures: a sandbox on a free port posting to a recording webhook receiver."""

import pytest
import requests

from sandbox.testing import running_sandbox, webhook_receiver

# Fast statuses keep tests quick; the order is what matters.
FAST_STATUSES = {"sent": 0.0, "delivered": 0.02, "read": 0.04}
CUSTOMER = "4917012345678"


@pytest.fixture
def receiver():
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def sandbox(receiver):
    with running_sandbox(
        webhook_url=receiver.url, status_delays=FAST_STATUSES
    ) as sandbox:
        yield sandbox


class Graph:
    """Calls the sandbox's Graph API as the helpdesk would."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.number = sandbox.number
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.number.access_token}"

    def send(self, body: dict, **kwargs) -> requests.Response:
        url = f"{self.sandbox.graph_url}/{self.number.phone_number_id}/messages"
        return self.http.post(
            url, json={"messaging_product": "whatsapp", **body}, **kwargs
        )

    def text(self, text="Hello", to=f"+{CUSTOMER}", timeout=10, **extra):
        body = {"to": to, "type": "text", "text": {"body": text}, **extra}
        return self.send(body, timeout=timeout)


@pytest.fixture
def graph(sandbox):
    return Graph(sandbox)


@pytest.fixture
def open_window(sandbox):
    """The customer has written, so free-form replies are allowed."""
    sandbox.control.open_window(CUSTOMER)
    return CUSTOMER
