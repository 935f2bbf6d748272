"""Fixtures for outbound tests: a sandbox on a real port and a number wired to it."""

import pytest

from conversations.whatsapp import client
from sandbox.testing import running_sandbox
from tests.factories import WhatsAppNumberFactory

# Statuses arrive quickly; their order is what the tests look at.
FAST_STATUSES = {"sent": 0.0, "delivered": 0.02, "read": 0.04}


@pytest.fixture
def graph_sandbox(settings):
    """A Cloud API sandbox the helpdesk's client talks to."""
    with running_sandbox(status_delays=FAST_STATUSES) as sandbox:
        settings.WHATSAPP_GRAPH_API_URL = sandbox.base_url
        settings.WHATSAPP_GRAPH_API_VERSION = "v24.0"
        settings.WHATSAPP_GRAPH_API_TIMEOUT = 2.0
        settings.WHATSAPP_GRAPH_API_CONNECT_TIMEOUT = 2.0
        client.reset_session()
        yield sandbox
        client.reset_session()


@pytest.fixture
def sandbox_number(db, graph_sandbox, team):
    """The helpdesk's WhatsAppNumber for the sandbox's demo number."""
    demo = graph_sandbox.number
    number = WhatsAppNumberFactory(
        phone_number_id=demo.phone_number_id,
        display_phone_number=demo.display_phone_number,
        waba_id=demo.waba_id,
        access_token=demo.access_token,
        throughput=demo.throughput,
    )
    number.teams.add(team)
    return number


def sends(sandbox) -> list[dict]:
    """The message sends the sandbox recorded, oldest first."""
    return [
        record
        for record in sandbox.control._call(
            "GET", "requests", params={"path": "/messages", "limit": 100000}
        )["requests"]
        if record["method"] == "POST"
    ]
