"""Injected faults behave as configured, measured from the sandbox's own records."""

import asyncio
import concurrent.futures

import aiohttp
import pytest
import requests

from sandbox.testing import wait_until
from tests.fixtures.sandbox import CUSTOMER

from .test_webhooks import statuses_for

pytestmark = pytest.mark.e2e


def test_server_errors_for_the_next_sends(sandbox, graph, open_window):
    sandbox.control.set_faults(server_error_next=2)
    codes = [graph.text().status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert (
        sandbox.control.stats()["numbers"][sandbox.number.phone_number_id]["sends"] == 1
    )


def test_server_error_rate_is_applied(sandbox, graph, open_window):
    sandbox.control.set_faults(server_error_rate=1.0)
    response = graph.text()
    assert response.status_code == 500
    assert response.json()["error"]["code"] == 131000
    assert response.json()["error"]["is_transient"] is True


@pytest.mark.parametrize("code", [130429, 131056])
def test_next_sends_answer_the_given_error(sandbox, graph, open_window, code):
    sandbox.control.set_faults(error_next={"code": code, "count": 2})
    answers = [graph.text() for _ in range(3)]
    assert [a.status_code for a in answers] == [400, 400, 200]
    assert [a.json()["error"]["code"] for a in answers[:2]] == [code, code]


async def test_throughput_cap_answers_130429_above_80_per_second(sandbox, open_window):
    number = sandbox.number
    url = f"{sandbox.graph_url}/{number.phone_number_id}/messages"
    body = {"messaging_product": "whatsapp", "to": CUSTOMER, "text": {"body": "burst"}}
    headers = {"Authorization": f"Bearer {number.access_token}"}

    async def send(session):
        async with session.post(url, json=body, headers=headers) as response:
            answer = await response.json()
            return response.status, answer

    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(send(session) for _ in range(200)))
    accepted = [answer for status, answer in results if status == 200]
    limited = [answer for status, answer in results if status == 400]
    assert len(accepted) + len(limited) == 200
    assert {answer["error"]["code"] for answer in limited} == {130429}
    stats = sandbox.control.stats()["numbers"][number.phone_number_id]
    assert stats["max_per_second"] == 80
    assert stats["sends"] == len(accepted)
    assert stats["rejected_by_throughput"] == len(limited)
    assert all(count <= 80 for count in stats["per_second"].values())


def test_throughput_cap_follows_the_numbers_setting(sandbox, receiver):
    sandbox.control.add_number(
        phone_number_id="300",
        display_phone_number="+15550100300",
        waba_id="400",
        access_token="token-300",
        app_secret="secret-300",
        throughput=3,
    )
    sandbox.control.open_window(CUSTOMER, phone_number_id="300")
    url = f"{sandbox.graph_url}/300/messages"
    body = {"messaging_product": "whatsapp", "to": CUSTOMER, "text": {"body": "x"}}
    with requests.Session() as http:
        http.headers["Authorization"] = "Bearer token-300"
        codes = [http.post(url, json=body).status_code for _ in range(10)]
    assert codes.count(200) <= 6
    assert sandbox.control.stats()["numbers"]["300"]["max_per_second"] == 3


def test_timeout_after_accept_hangs_yet_sends_statuses(
    sandbox, graph, receiver, open_window
):
    sandbox.control.set_faults(timeout_after_accept_next=1, hang_seconds=5)
    with pytest.raises(requests.Timeout):
        graph.text("lost answer", timeout=0.5, biz_opaque_callback_data="m-9")
    [sent] = sandbox.control.messages(CUSTOMER)
    wait_until(lambda: len(statuses_for(receiver, sent["wamid"])) == 3)
    assert statuses_for(receiver, sent["wamid"])[0]["biz_opaque_callback_data"] == "m-9"
    [record] = sandbox.control.requests("/messages")
    assert record["timed_out"] == "hang"
    assert record["response"]["messages"][0]["id"] == sent["wamid"]


def test_timeout_after_accept_can_drop_the_connection(
    sandbox, graph, receiver, open_window
):
    sandbox.control.set_faults(timeout_after_accept_next=1, timeout_mode="drop")
    with pytest.raises(requests.ConnectionError):
        graph.text("dropped", timeout=5)
    [sent] = sandbox.control.messages(CUSTOMER)
    wait_until(lambda: len(statuses_for(receiver, sent["wamid"])) == 3)
    assert graph.text("next one").status_code == 200


def test_latency_delays_every_answer(sandbox, graph, open_window):
    sandbox.control.set_faults(latency_ms=150)
    response = graph.text()
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.15


def test_held_sends_are_accepted_on_arrival_and_answered_later(
    sandbox, graph, open_window
):
    sandbox.control.set_faults(hold_sends_ms=1500)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(graph.text, "held")
        # On the sandbox's books while the client still waits for its answer.
        wait_until(lambda: sandbox.control.messages(CUSTOMER), timeout=5)
        assert not answer.done()
        [record] = sandbox.control.requests("/messages")
        assert record["body"]["text"] == {"body": "held"}
        response = answer.result(timeout=10)
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 1.5
    [sent] = sandbox.control.messages(CUSTOMER)
    assert response.json()["messages"][0]["id"] == sent["wamid"]


def test_changing_the_faults_releases_held_sends(sandbox, graph, open_window):
    sandbox.control.set_faults(hold_sends_ms=60_000)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(graph.text, "held", timeout=30)
        wait_until(lambda: sandbox.control.messages(CUSTOMER), timeout=5)
        sandbox.control.set_faults()
        response = answer.result(timeout=10)
    assert response.status_code == 200
    assert response.elapsed.total_seconds() < 10


def test_duplicate_webhooks(sandbox, receiver):
    sandbox.control.set_faults(webhook_duplicate_rate=1.0)
    sandbox.control.customer_message(CUSTOMER, type="text", text="once")
    first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert first.headers["X-Hub-Signature-256"] == second.headers["X-Hub-Signature-256"]


def test_out_of_order_statuses(sandbox, graph, receiver, open_window):
    sandbox.control.set_faults(webhook_out_of_order=True)
    wamid = graph.text().json()["messages"][0]["id"]
    wait_until(lambda: len(statuses_for(receiver, wamid)) == 3)
    order = [s["status"] for s in statuses_for(receiver, wamid)]
    assert order == ["read", "delivered", "sent"]


def test_statuses_are_batched_into_one_post(sandbox, graph, receiver, open_window):
    sandbox.control.configure(status_delays={"sent": 0, "delivered": 0, "read": 0})
    sandbox.control.set_faults(webhook_batch_ms=200)
    wamids = {graph.text(f"m{i}").json()["messages"][0]["id"] for i in range(3)}
    [webhook] = receiver.wait_for(1)
    assert webhook.verifies(sandbox.number.app_secret)
    [entry] = webhook.json()["entry"]
    [change] = entry["changes"]
    statuses = change["value"]["statuses"]
    assert len(statuses) == 9
    assert {s["id"] for s in statuses} == wamids


def test_batch_of_entries_changes_and_messages(sandbox, receiver):
    for suffix in ("2", "3"):
        sandbox.control.add_number(
            phone_number_id=f"10{suffix}",
            display_phone_number=f"+1555010010{suffix}",
            waba_id="waba-b",
            access_token="token-b",
            app_secret=sandbox.number.app_secret,
        )

    def messages(prefix):
        return [
            {"from": f"49170000{prefix}{i}", "type": "text", "text": f"{prefix}{i}"}
            for i in range(3)
        ]

    changes = [
        {"phone_number_id": sandbox.number.phone_number_id, "messages": messages("a")},
        {"phone_number_id": sandbox.number.phone_number_id, "messages": messages("b")},
        {"phone_number_id": "102", "messages": messages("c")},
        {"phone_number_id": "103", "messages": messages("d")},
    ]
    result = sandbox.control.batch(changes)
    assert result["webhook_status"] == 200
    assert len(set(result["wamids"])) == 12
    [webhook] = receiver.wait_for(1)
    assert webhook.verifies(sandbox.number.app_secret)
    entries = webhook.json()["entry"]
    assert [entry["id"] for entry in entries] == [sandbox.number.waba_id, "waba-b"]
    for entry in entries:
        assert len(entry["changes"]) == 2
        for change in entry["changes"]:
            value = change["value"]
            assert len(value["messages"]) == 3
            assert len(value["contacts"]) == 3


def test_failed_webhook_deliveries_are_retried(sandbox, receiver):
    receiver.answer_status = 500
    result = sandbox.control.customer_message(CUSTOMER, type="text", text="retry me")
    assert result["webhook_status"] == 500
    receiver.answer_status = 200
    first, retry = receiver.wait_for(2, timeout=5)
    assert first.body == retry.body
    attempts = [w["attempt"] for w in sandbox.control.webhooks()]
    assert attempts == [1, 2]


def test_reset_forgets_records_and_faults(sandbox, graph, open_window):
    sandbox.control.set_faults(server_error_next=5)
    graph.text()
    sandbox.control.reset()
    assert sandbox.control.requests() == []
    assert sandbox.control.stats()["total_sends"] == 0
    assert sandbox.control._call("GET", "faults")["server_error_next"] == 0
