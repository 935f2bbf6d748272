"""Media upload, retrieval and download; the template list with Meta's paging."""

import hashlib

import pytest
import requests

from tests.fixtures.sandbox import CUSTOMER

from .test_graph_errors import assert_meta_error

pytestmark = pytest.mark.e2e

PDF = b"%PDF-1.4 boarding pass"


def upload(sandbox, graph, data=PDF, mime_type="application/pdf"):
    return graph.http.post(
        f"{sandbox.graph_url}/{sandbox.number.phone_number_id}/media",
        data={"messaging_product": "whatsapp", "type": mime_type},
        files={"file": ("pass.pdf", data, mime_type)},
    )


def test_upload_retrieve_and_download_with_the_token(sandbox, graph):
    response = upload(sandbox, graph)
    assert response.status_code == 200
    media_id = response.json()["id"]
    info = graph.http.get(f"{sandbox.graph_url}/{media_id}").json()
    assert info == {
        "messaging_product": "whatsapp",
        "url": info["url"],
        "mime_type": "application/pdf",
        "sha256": hashlib.sha256(PDF).hexdigest(),
        "file_size": len(PDF),
        "id": media_id,
    }
    download = graph.http.get(info["url"])
    assert download.status_code == 200
    assert download.content == PDF
    assert download.headers["Content-Type"] == "application/pdf"


def test_the_next_uploads_can_be_refused(sandbox, graph):
    sandbox.control.set_faults(upload_error_next=1)
    assert_meta_error(upload(sandbox, graph), 400, 131053)
    assert upload(sandbox, graph).status_code == 200


def test_download_without_the_token_is_refused(sandbox, graph):
    media_id = upload(sandbox, graph).json()["id"]
    url = graph.http.get(f"{sandbox.graph_url}/{media_id}").json()["url"]
    assert_meta_error(requests.get(url), 401, 190)
    assert_meta_error(requests.get(f"{sandbox.graph_url}/{media_id}"), 401, 190)


def test_expired_or_forged_urls_answer_404(sandbox, graph):
    sandbox.control.configure(media_url_ttl=-1)
    media_id = upload(sandbox, graph).json()["id"]
    url = graph.http.get(f"{sandbox.graph_url}/{media_id}").json()["url"]
    assert graph.http.get(url).status_code == 404
    sandbox.control.configure(media_url_ttl=300)
    url = graph.http.get(f"{sandbox.graph_url}/{media_id}").json()["url"]
    assert graph.http.get(url.replace("hash=", "hash=0")).status_code == 404


def test_unknown_media_id_is_refused_with_100_subcode_33(sandbox, graph):
    assert_meta_error(
        graph.http.get(f"{sandbox.graph_url}/1234567890"), 400, 100, subcode=33
    )


def test_media_scoped_to_another_number_is_refused(sandbox, graph):
    media_id = upload(sandbox, graph).json()["id"]
    url = f"{sandbox.graph_url}/{media_id}?phone_number_id=999"
    assert_meta_error(graph.http.get(url), 400, 100, subcode=33)


def test_upload_needs_messaging_product_and_file(sandbox, graph):
    url = f"{sandbox.graph_url}/{sandbox.number.phone_number_id}/media"
    response = graph.http.post(url, files={"file": ("a.pdf", PDF, "application/pdf")})
    assert_meta_error(response, 400, 100)
    response = graph.http.post(url, files={"messaging_product": (None, "whatsapp")})
    assert_meta_error(response, 400, 100)


def test_customer_media_is_downloadable_by_the_number(sandbox, graph, receiver):
    sandbox.control.customer_message(CUSTOMER, type="document", filename="invoice.pdf")
    document = receiver.wait_for(1)[0].json()["entry"][0]["changes"][0]["value"][
        "messages"
    ][0]["document"]
    info = graph.http.get(f"{sandbox.graph_url}/{document['id']}").json()
    content = graph.http.get(info["url"]).content
    assert content.startswith(b"%PDF")
    assert graph.http.get(document["url"]).content == content


def test_sending_an_unknown_media_id_fails_by_webhook_with_131053(
    sandbox, graph, receiver, open_window
):
    response = graph.send({"to": CUSTOMER, "type": "image", "image": {"id": "404"}})
    assert response.status_code == 200
    webhook = receiver.wait_for(1)[0].json()
    [status] = webhook["entry"][0]["changes"][0]["value"]["statuses"]
    assert status["status"] == "failed"
    assert status["errors"][0]["code"] == 131053


def list_templates(sandbox, graph, **params):
    url = f"{sandbox.graph_url}/{sandbox.number.waba_id}/message_templates"
    return graph.http.get(url, params=params)


def test_templates_are_listed_with_metas_paging(sandbox, graph):
    first = list_templates(sandbox, graph, limit=4).json()
    assert len(first["data"]) == 4
    assert set(first["paging"]["cursors"]) == {"before", "after"}
    second = graph.http.get(first["paging"]["next"]).json()
    assert "next" not in second["paging"]
    names = [t["name"] for t in first["data"] + second["data"]]
    assert names == [
        "hello_world",
        "order_shipped",
        "boarding_pass",
        "spring_sale",
        "flash_deal",
        "win_back",
        "spring_coupon",
        "login_code",
    ]
    statuses = {t["name"]: t["status"] for t in first["data"] + second["data"]}
    assert statuses["flash_deal"] == "REJECTED"
    assert statuses["win_back"] == "PAUSED"
    hello = first["data"][0]
    assert (hello["language"], hello["category"]) == ("en_US", "UTILITY")
    assert hello["id"].isdigit()
    assert [c["type"] for c in first["data"][2]["components"]][:2] == ["HEADER", "BODY"]


def test_templates_of_another_waba_or_without_token_are_refused(sandbox, graph):
    url = f"{sandbox.graph_url}/999/message_templates"
    assert_meta_error(graph.http.get(url), 400, 100, subcode=33)
    url = f"{sandbox.graph_url}/{sandbox.number.waba_id}/message_templates"
    assert_meta_error(requests.get(url), 401, 190)


def test_templates_added_and_approved_through_the_control_api(sandbox, graph):
    sandbox.control.add_template(
        name="ticket_update",
        language="en",
        category="UTILITY",
        status="PENDING",
        components=[{"type": "BODY", "text": "Ticket {{1}} is now {{2}}."}],
    )
    template = {
        "name": "ticket_update",
        "language": {"code": "en"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "T-1"},
                    {"type": "text", "text": "open"},
                ],
            }
        ],
    }
    body = {"to": CUSTOMER, "type": "template", "template": template}
    assert_meta_error(graph.send(body), 404, 132001)
    sandbox.control.set_template_status("ticket_update", "APPROVED")
    assert graph.send(body).status_code == 200
    listed = list_templates(sandbox, graph, name="ticket_update").json()["data"]
    assert [t["status"] for t in listed] == ["APPROVED"]
