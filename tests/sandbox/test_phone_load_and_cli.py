"""The customer phone page, its event feed, the load command and the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from sandbox.config import DEMO_NUMBER
from sandbox.load import parse_mix, run_load
from tests.fixtures.sandbox import CUSTOMER

STATIC = Path(__file__).resolve().parents[2] / "sandbox" / "static"


@pytest.mark.e2e
def test_phone_page_is_marked_and_labelled(sandbox):
    page = requests.get(f"{sandbox.base_url}/")
    assert page.status_code == 200
    assert "WhatsApp sandbox: simulated customers" in page.text
    assert "Nothing here reaches WhatsApp" in page.text
    assert 'aria-label="Message"' in page.text
    assert ">Send</button>" in page.text
    assert "click-to-WhatsApp ad" in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    script = requests.get(f"{sandbox.base_url}/static/phone.js")
    assert script.status_code == 200


def test_phone_script_never_writes_html():
    script = (STATIC / "phone.js").read_text()
    assert "innerHTML" not in script
    assert "outerHTML" not in script
    assert "insertAdjacentHTML" not in script


@pytest.mark.e2e
def test_event_feed_shows_both_sides_and_ticks(sandbox, graph):
    sandbox.control.customer_message(CUSTOMER, type="text", text="Hi")
    graph.text("Hello, how can I help?")
    kinds = []
    after = 0
    while "status" not in kinds or kinds.count("status") < 3:
        events = sandbox.control._call(
            "GET", "events", params={"after": after, "timeout": 5}
        )
        assert events["events"], "the event feed went quiet"
        kinds += [event["kind"] for event in events["events"]]
        after = events["events"][-1]["seq"]
    assert kinds[:2] == ["customer_message", "business_message"]
    assert kinds.count("status") == 3


@pytest.mark.e2e
def test_phone_upload_then_send_an_image(sandbox, receiver):
    uploaded = requests.post(
        f"{sandbox.base_url}/_sandbox/media",
        data={"phone_number_id": sandbox.number.phone_number_id},
        files={"file": ("cat.png", b"\x89PNG cat", "image/png")},
    ).json()
    sandbox.control.customer_message(
        CUSTOMER, type="image", media_id=uploaded["id"], caption="Cat"
    )
    image = receiver.wait_for(1)[0].json()["entry"][0]["changes"][0]["value"][
        "messages"
    ][0]
    assert image["image"]["id"] == uploaded["id"]
    assert image["image"]["mime_type"] == "image/png"
    assert image["image"]["caption"] == "Cat"


def test_parse_mix_rejects_unknown_types():
    assert parse_mix("text=7,image=3") == {"text": 7, "image": 3}
    try:
        parse_mix("text=7,fax=3")
    except ValueError as error:
        assert "fax" in str(error)
    else:
        raise AssertionError("an unknown type was accepted")


@pytest.mark.e2e
async def test_load_sends_signed_traffic_at_the_rate(receiver):
    report = await run_load(
        webhook_url=receiver.url,
        number=DEMO_NUMBER,
        customers=20,
        rate=200,
        duration=1.0,
        mix={"text": 6, "image": 2, "status": 2},
        concurrency=32,
    )
    assert report["sent"] == 200
    assert report["by_status"] == {"200": 200}
    assert sum(report["by_type"].values()) == 200
    assert set(report["by_type"]) <= {"text", "image", "status"}
    assert report["achieved_rate"] > 100
    assert report["ack_latency_ms"]["p50"] is not None
    received = receiver.wait_for(200)
    assert all(item.verifies(DEMO_NUMBER.app_secret) for item in received)
    wamids = {
        message["id"]
        for item in received
        for message in item.json()["entry"][0]["changes"][0]["value"].get(
            "messages", []
        )
    }
    assert len(wamids) == report["sent"] - report["by_type"].get("status", 0)


@pytest.mark.e2e
def test_load_registers_media_and_windows_in_a_sandbox(sandbox, receiver, graph):
    from sandbox.load import main

    main(
        [
            "--webhook-url",
            receiver.url,
            "--sandbox-url",
            sandbox.base_url,
            "--customers",
            "3",
            "--rate",
            "20",
            "--duration",
            "0.5",
            "--mix",
            "image=1",
        ]
    )
    image = receiver.wait_for(10)[0].json()["entry"][0]["changes"][0]["value"][
        "messages"
    ][0]
    info = graph.http.get(f"{sandbox.graph_url}/{image['image']['id']}")
    assert info.status_code == 200
    assert graph.text(to="+4917000000000").status_code == 200


@pytest.mark.e2e
def test_command_line_prints_its_address_and_serves(tmp_path):
    config = tmp_path / "sandbox.json"
    config.write_text(json.dumps({"status_delays": {"read": None}}))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            "0",
            "--config",
            str(config),
            "--number",
            "phone_number_id=777,display_phone_number=+15550100777,"
            "waba_id=888,access_token=tok,app_secret=sec,throughput=5",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        first_line = process.stdout.readline()
        assert first_line.startswith("WhatsApp sandbox listening on http://127.0.0.1:")
        base_url = first_line.rsplit(" ", 1)[1].strip()
        numbers = requests.get(f"{base_url}/_sandbox/numbers", timeout=5).json()[
            "numbers"
        ]
        assert [(n["phone_number_id"], n["throughput"]) for n in numbers] == [
            ("777", 5)
        ]
        config_now = requests.get(f"{base_url}/_sandbox/config", timeout=5).json()
        assert config_now["status_delays"]["read"] is None
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()
    assert process.returncode == 0
