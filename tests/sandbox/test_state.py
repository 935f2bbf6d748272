"""A restarted sandbox remembers what Meta would: customers, windows, sends,
templates and the phone page's chats (the run command keeps them in var/)."""

import json

import pytest
import requests

from sandbox.testing import running_sandbox, wait_until
from tests.fixtures.sandbox import CUSTOMER, FAST_STATUSES, Graph

pytestmark = pytest.mark.e2e


def run(receiver, state_file):
    return running_sandbox(
        webhook_url=receiver.url,
        status_delays=FAST_STATUSES,
        state_file=str(state_file),
    )


def test_a_restarted_sandbox_keeps_windows_chats_and_sends(receiver, tmp_path):
    state_file = tmp_path / "sandbox-state.json"
    with run(receiver, state_file) as sandbox:
        sandbox.control.customer_message(
            CUSTOMER, type="text", text="Where is my parcel?", name="Anna Schmidt"
        )
        sent = Graph(sandbox).text("On its way")
        assert sent.status_code == 200
        wamid = sent.json()["messages"][0]["id"]
        wait_until(lambda: "read" in sandbox.control.messages(CUSTOMER)[0]["statuses"])
        sandbox.control.add_template(
            name="restart_check", language="en", category="UTILITY", components=[]
        )
        events_before = sandbox.control._call("GET", "events?timeout=0")["events"]

    # Written when it stopped, whole (no temporary file left behind).
    assert json.loads(state_file.read_text())["version"] == 1
    assert [path.name for path in state_file.parent.iterdir()] == [state_file.name]

    with run(receiver, state_file) as sandbox:
        # The window the customer opened is still open: a reply is accepted
        # and delivered, not refused with 131047.
        again = Graph(sandbox).text("Still on its way")
        assert again.status_code == 200, again.text
        [customer] = sandbox.control._call("GET", "customers")["customers"]
        assert customer["name"] == "Anna Schmidt"
        assert sandbox.number.phone_number_id in customer["last_inbound_at"]
        # The phone page replays its chats from the events: the same history,
        # and new events numbered after it.
        events = sandbox.control._call("GET", "events?timeout=0")["events"]
        assert events[: len(events_before)] == events_before
        assert events[len(events_before)]["seq"] > events_before[-1]["seq"]
        kinds = [event["kind"] for event in events_before]
        assert "customer_message" in kinds and "business_message" in kinds
        # Sends it accepted before are still known by wamid (a quoted reply
        # or a reaction to them is routed as before).
        wamids = [message["wamid"] for message in sandbox.control.messages(CUSTOMER)]
        assert wamid in wamids
        templates = requests.get(
            f"{sandbox.graph_url}/{sandbox.number.waba_id}/message_templates",
            headers={"Authorization": f"Bearer {sandbox.number.access_token}"},
            params={"limit": 100},
            timeout=10,
        ).json()["data"]
        assert "restart_check" in [template["name"] for template in templates]


def test_without_a_state_file_a_restart_forgets(receiver):
    with running_sandbox(webhook_url=receiver.url) as sandbox:
        sandbox.control.customer_message(CUSTOMER, type="text", text="Hi")
    with running_sandbox(webhook_url=receiver.url) as sandbox:
        refused = Graph(sandbox).text("Hello again")
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == 131047


def test_an_unreadable_state_file_starts_the_sandbox_empty(receiver, tmp_path):
    state_file = tmp_path / "sandbox-state.json"
    state_file.write_text("{not json")
    with run(receiver, state_file) as sandbox:
        assert sandbox.control._call("GET", "customers")["customers"] == []
        sandbox.control.customer_message(CUSTOMER, type="text", text="Hi")
    assert json.loads(state_file.read_text())["customers"][0]["wa_id"] == CUSTOMER


def test_a_restarted_sandbox_remembers_deleted_and_shared_messages(receiver, tmp_path):
    state_file = tmp_path / "sandbox-state.json"
    with run(receiver, state_file) as sandbox:
        sent = sandbox.control.customer_message(CUSTOMER, type="text", text="Oops")
        sandbox.control.customer_message(
            CUSTOMER, type="revoke", message_id=sent["wamid"]
        )
        shared = sandbox.control.share_history(CUSTOMER)

    with run(receiver, state_file) as sandbox:
        # A deleted message stays deleted: no second revoke, no edit.
        with pytest.raises(AssertionError, match="deleted already"):
            sandbox.control.customer_message(
                CUSTOMER, type="edit", message_id=sent["wamid"], text="Again"
            )
        # The customer's message from the shared history is still theirs.
        past = shared["wamids"][0]
        sandbox.control.customer_message(CUSTOMER, type="revoke", message_id=past)
        events = sandbox.control._call("GET", "events?timeout=0")["events"]
        kinds = [event["kind"] for event in events]
        assert kinds.count("history") == 1
