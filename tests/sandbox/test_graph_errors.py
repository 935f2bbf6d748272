"""The sandbox rejects what Meta rejects, with Meta's codes and error shape."""

import pytest
import requests

from tests.fixtures.sandbox import CUSTOMER

pytestmark = pytest.mark.e2e


def assert_meta_error(response, http_status: int, code: int, subcode=None) -> dict:
    assert response.status_code == http_status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["type"]
    assert error["fbtrace_id"]
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert error["error_data"]["details"]
    if subcode is None:
        assert "error_subcode" not in error
    else:
        assert error["error_subcode"] == subcode
    return error


def test_missing_token_is_refused_with_190(sandbox, open_window):
    url = f"{sandbox.graph_url}/{sandbox.number.phone_number_id}/messages"
    body = {"messaging_product": "whatsapp", "to": CUSTOMER, "text": {"body": "x"}}
    error = assert_meta_error(requests.post(url, json=body), 401, 190)
    assert error["type"] == "OAuthException"


def test_wrong_token_is_refused_with_190(sandbox, graph, open_window):
    graph.http.headers["Authorization"] = "Bearer not-a-token"
    assert_meta_error(graph.text(), 401, 190)


def test_unknown_phone_number_id_is_refused_with_100_subcode_33(graph, open_window):
    graph.number = type(graph.number)(
        **{**graph.number.public_dict(), "phone_number_id": "999"}
    )
    error = assert_meta_error(graph.text(), 400, 100, subcode=33)
    assert "999" in error["message"]


def test_missing_messaging_product_and_recipient_are_refused(sandbox, graph):
    url = f"{sandbox.graph_url}/{sandbox.number.phone_number_id}/messages"
    response = graph.http.post(url, json={"to": CUSTOMER, "text": {"body": "x"}})
    assert_meta_error(response, 400, 100)
    assert_meta_error(graph.send({"type": "text", "text": {"body": "x"}}), 400, 100)


def test_missing_type_object_is_refused_with_131008(graph, open_window):
    response = graph.send({"to": CUSTOMER, "type": "image"})
    assert_meta_error(response, 400, 131008)


def test_text_over_4096_characters_is_refused_with_100(graph, open_window):
    assert graph.text("x" * 4096).status_code == 200
    error = assert_meta_error(graph.text("x" * 4097), 400, 100)
    assert "4096" in error["error_data"]["details"]


def test_caption_over_1024_characters_is_refused(graph, open_window):
    image = {"link": "https://example.com/a.jpg", "caption": "c" * 1025}
    response = graph.send({"to": CUSTOMER, "type": "image", "image": image})
    assert_meta_error(response, 400, 100)


def test_media_with_both_id_and_link_is_refused(graph, open_window):
    image = {"id": "1", "link": "https://example.com/a.jpg"}
    response = graph.send({"to": CUSTOMER, "type": "image", "image": image})
    assert_meta_error(response, 400, 100)


def template(name: str, language: str = "en", components=None) -> dict:
    return {
        "to": CUSTOMER,
        "type": "template",
        "template": {
            "name": name,
            "language": {"code": language},
            "components": components or [],
        },
    }


def body_parameters(*texts: str) -> list[dict]:
    return [
        {"type": "body", "parameters": [{"type": "text", "text": t} for t in texts]}
    ]


def test_unknown_template_is_refused_with_132001(graph):
    error = assert_meta_error(graph.send(template("no_such_template")), 404, 132001)
    assert "no_such_template" in error["error_data"]["details"]


def test_template_in_a_missing_language_is_refused_with_132001(graph):
    assert_meta_error(graph.send(template("order_shipped", "de")), 404, 132001)


def test_wrong_template_parameter_count_is_refused_with_132000(graph):
    response = graph.send(template("order_shipped", components=body_parameters("Anna")))
    error = assert_meta_error(response, 400, 132000)
    assert "(1)" in error["error_data"]["details"]
    assert "(2)" in error["error_data"]["details"]


def test_missing_media_header_is_refused_with_132000(graph):
    components = body_parameters("Anna", "LH 2046")
    assert_meta_error(
        graph.send(template("boarding_pass", components=components)), 400, 132000
    )


def test_header_of_the_wrong_kind_is_refused_with_132012(graph):
    header = {
        "type": "header",
        "parameters": [{"type": "image", "image": {"link": "https://e.com/a.jpg"}}],
    }
    components = [header, *body_parameters("Anna", "LH 2046")]
    response = graph.send(template("boarding_pass", components=components))
    assert_meta_error(response, 400, 132012)


def test_named_template_needs_its_parameter_names(graph):
    header = {
        "type": "header",
        "parameters": [{"type": "image", "image": {"link": "https://e.com/a.jpg"}}],
    }
    components = [header, *body_parameters("Anna", "20%")]
    response = graph.send(template("spring_sale", components=components))
    assert_meta_error(response, 400, 132000)


def test_rejected_template_is_refused_as_not_approved(graph):
    response = graph.send(template("flash_deal", components=body_parameters("x")))
    error = assert_meta_error(response, 404, 132001)
    assert "not approved" in error["error_data"]["details"]


def test_paused_template_is_refused_with_132015(graph):
    response = graph.send(template("win_back", components=body_parameters("Anna")))
    assert_meta_error(response, 400, 132015)


def test_free_form_outside_the_window_is_refused_with_131047(graph):
    assert_meta_error(graph.text(), 400, 131047)


def test_window_closes_after_24_hours(sandbox, graph):
    sandbox.control.open_window(CUSTOMER, hours_ago=24.01)
    assert_meta_error(graph.text(), 400, 131047)
    sandbox.control.open_window(CUSTOMER, hours_ago=23.99)
    assert graph.text().status_code == 200


def test_a_customer_message_opens_the_window(sandbox, graph):
    assert graph.text().status_code == 400
    sandbox.control.customer_message(CUSTOMER, type="text", text="Hi")
    assert graph.text().status_code == 200


def test_template_outside_the_window_is_accepted(graph):
    response = graph.send(template("hello_world", "en_US"))
    assert response.status_code == 200


def test_window_error_by_webhook_mode_accepts_then_fails(sandbox, graph, receiver):
    sandbox.control.configure(window_error_mode="webhook")
    response = graph.text()
    assert response.status_code == 200
    wamid = response.json()["messages"][0]["id"]
    webhook = receiver.wait_for(1)[0].json()
    status = webhook["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert (status["id"], status["status"]) == (wamid, "failed")
    assert status["errors"][0]["code"] == 131047


def test_mark_as_read_of_an_unknown_message_is_refused(graph):
    response = graph.send({"status": "read", "message_id": "wamid.unknown"})
    assert_meta_error(response, 400, 100)


def test_refusals_are_recorded_with_their_answers(sandbox, graph):
    graph.text("x" * 5000)
    [record] = sandbox.control.requests("/messages")
    assert record["status"] == 400
    assert record["response"]["error"]["code"] == 100
    assert record["body"]["text"]["body"] == "x" * 5000
    assert record["has_token"] is True
