"""Templates beyond text parameters: currency and date_time values, coupon
codes, one-time passwords and flow buttons, checked against the synced
template before any request and sent in Meta's shape (the sandbox checks
it as Meta does), from the API, the notifications API and the workspace."""

from types import SimpleNamespace

import pytest
from django.urls import reverse

from conversations import services
from conversations.models import ConsentRecord, Message, MessageTemplate
from conversations.whatsapp import templates
from tests.factories import ConversationFactory, CustomerFactory
from tests.fixtures.business import NOTIFY_URL, api_client_for, consent
from tests.fixtures.outbound import sends, sends_for, wait_for_status

PRICE = {"currency": {"fallback_value": "$10.00", "code": "USD", "amount_1000": 10000}}
COUPON = {
    "type": "button",
    "sub_type": "copy_code",
    "index": "0",
    "parameters": [{"type": "coupon_code", "coupon_code": "SPRING25"}],
}


def template(*buttons, body="Hi {{1}}, take {{2}} off.", category="MARKETING"):
    components = [{"type": "BODY", "text": body}]
    if buttons:
        components.append({"type": "BUTTONS", "buttons": list(buttons)})
    return SimpleNamespace(
        name="t", language="en", category=category, components=components
    )


COUPON_TEMPLATE = template({"type": "COPY_CODE", "example": "SPRING25"})
OTP_TEMPLATE = template(
    {"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy code"},
    body="*{{1}}* is your verification code.",
    category="AUTHENTICATION",
)


# --- The shapes, pure -------------------------------------------------------------


def test_currency_and_date_time_values_go_out_as_meta_documents_them():
    built = templates.components(
        template(body="Pay {{1}} by {{2}}."),
        {"body": [PRICE, {"date_time": {"fallback_value": "June 1, 2026"}}]},
    )
    assert built == [
        {
            "type": "body",
            "parameters": [
                {"type": "currency", **PRICE},
                {"type": "date_time", "date_time": {"fallback_value": "June 1, 2026"}},
            ],
        }
    ]
    assert (
        templates.render_text(template(body="Pay {{1}} by {{2}}."), built)
        == "Pay $10.00 by June 1, 2026."
    )


@pytest.mark.parametrize(
    "value, refusal",
    [
        ({"currency": {**PRICE["currency"], "code": "usd"}}, "currency code"),
        ({"currency": {**PRICE["currency"], "amount_1000": "10"}}, "amount_1000"),
        ({"currency": {**PRICE["currency"], "fallback_value": ""}}, "fallback_value"),
        ({"price": 10}, "currency or date_time"),
    ],
)
def test_a_currency_that_does_not_fit_is_refused_saying_why(value, refusal):
    with pytest.raises(templates.ParametersRefused, match=refusal):
        templates.components(template(body="Pay {{1}}."), {"body": [value]})


def test_a_coupon_button_carries_its_code():
    built = templates.components(
        COUPON_TEMPLATE,
        {
            "body": ["Anna", PRICE],
            "buttons": [{"index": 0, "type": "coupon_code", "coupon_code": "SPRING25"}],
        },
    )
    assert built[-1] == COUPON


@pytest.mark.parametrize(
    "buttons, refusal",
    [
        ([], "button 0 needs the coupon_code"),
        ([{"index": 0, "type": "url", "text": "x"}], "COPY_CODE button"),
        (
            [{"index": 0, "type": "coupon_code", "coupon_code": "X" * 16}],
            "at most 15",
        ),
        ([{"index": 3, "type": "coupon_code", "coupon_code": "X"}], "no button 3"),
    ],
)
def test_a_coupon_template_without_a_fitting_code_is_refused(buttons, refusal):
    with pytest.raises(templates.ParametersRefused, match=refusal):
        templates.components(
            COUPON_TEMPLATE, {"body": ["Anna", "$10"], "buttons": buttons}
        )


def test_an_otp_fills_the_body_and_the_copy_code_button():
    built = templates.components(
        OTP_TEMPLATE, {"buttons": [{"index": 0, "type": "otp", "code": "482913"}]}
    )
    assert built == [
        {"type": "body", "parameters": [{"type": "text", "text": "482913"}]},
        {
            "type": "button",
            "sub_type": "url",
            "index": "0",
            "parameters": [{"type": "text", "text": "482913"}],
        },
    ]
    assert templates.fields(OTP_TEMPLATE)["body"] == []
    assert templates.fields(OTP_TEMPLATE)["buttons"][0]["kind"] == "otp"


def test_metas_own_components_for_an_otp_are_read_back():
    sent = templates.components(
        OTP_TEMPLATE, {"buttons": [{"index": 0, "type": "otp", "code": "482913"}]}
    )
    again = templates.components(
        OTP_TEMPLATE, templates.parameters_from_components(sent)
    )
    assert again == sent


def test_a_flow_button_takes_an_optional_token_and_data():
    flow = template(
        {"type": "FLOW", "text": "Book", "flow_id": "123", "flow_action": "navigate"},
        body="Book a slot.",
    )
    assert templates.components(flow, {}) == []
    built = templates.components(
        flow,
        {
            "buttons": [
                {
                    "index": 0,
                    "type": "flow",
                    "flow_token": "booking-4711",
                    "flow_action_data": {"slot": "10:00"},
                }
            ]
        },
    )
    assert built == [
        {
            "type": "button",
            "sub_type": "flow",
            "index": "0",
            "parameters": [
                {
                    "type": "action",
                    "action": {
                        "flow_token": "booking-4711",
                        "flow_action_data": {"slot": "10:00"},
                    },
                }
            ],
        }
    ]


# --- Through the API, the workspace and the sandbox ---------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_coupon_template_goes_out_in_metas_shape_from_the_api(
    graph_sandbox, conversation, agent, delivery_worker
):
    services.sync_templates(number=conversation.number)
    ConsentRecord.objects.create(
        customer=conversation.customer,
        purpose=ConsentRecord.Purpose.MARKETING,
        status=ConsentRecord.Status.OPT_IN,
        source=ConsentRecord.Source.CHECKOUT,
    )
    api = api_client_for(agent)
    url = f"/api/v1/conversations/{conversation.pk}/messages/"
    body = {
        "type": "template",
        "template": {
            "name": "spring_coupon",
            "language": "en",
            "parameters": {"body": ["Anna", PRICE]},
        },
    }

    refused = api.post(url, body, format="json")
    assert refused.status_code == 422
    assert refused.json()["code"] == "template_parameters"
    assert "coupon_code" in refused.json()["detail"]

    body["template"]["parameters"] = {
        "body": ["Anna", PRICE],
        "buttons": [{"index": 0, "type": "coupon_code", "coupon_code": "SPRING25"}],
    }
    response = api.post(url, body, format="json")
    assert response.status_code == 201, response.content
    message = Message.objects.get(pk=response.json()["id"])
    assert message.text == "Hi Anna, take $10.00 off your next order with this code."
    wait_for_status(message, Message.Status.SENT)
    (record,) = sends_for(graph_sandbox, message)
    assert record["status"] == 200
    assert record["body"]["template"]["components"] == [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Anna"},
                {"type": "currency", **PRICE},
            ],
        },
        COUPON,
    ]
    assert len(sends(graph_sandbox)) == 1, "the refusal sent nothing"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_otp_notification_goes_to_a_phone_and_is_refused_without_one(
    graph_sandbox, sandbox_number, shop, templates, delivery_worker
):
    api = api_client_for(shop)
    consent(api, "+4917012345678")
    otp = {
        "to": "+4917012345678",
        "purpose": "utility",
        "template": {"name": "login_code", "language": "en"},
        "parameters": {"buttons": [{"index": 0, "type": "otp", "code": "482913"}]},
    }

    response = api.post(NOTIFY_URL, otp, format="json")

    assert response.status_code == 202, response.content
    message = Message.objects.get(pk=response.json()["message"])
    wait_for_status(message, Message.Status.SENT)
    (record,) = sends_for(graph_sandbox, message)
    assert record["body"]["to"] == "+4917012345678"
    assert record["body"]["template"]["components"] == [
        {"type": "body", "parameters": [{"type": "text", "text": "482913"}]},
        {
            "type": "button",
            "sub_type": "url",
            "index": "0",
            "parameters": [{"type": "text", "text": "482913"}],
        },
    ]

    username_only = CustomerFactory(wa_id="", phone="", user_id="DE.31415926535")
    ConsentRecord.objects.create(
        customer=username_only,
        purpose=ConsentRecord.Purpose.UTILITY,
        status=ConsentRecord.Status.OPT_IN,
        source=ConsentRecord.Source.CHECKOUT,
    )
    by_bsuid = {**otp, "user_id": "DE.31415926535"}
    del by_bsuid["to"]
    refused = api.post(NOTIFY_URL, by_bsuid, format="json")
    assert refused.status_code == 422
    assert refused.json()["code"] == "phone_required"
    assert len(sends(graph_sandbox)) == 1, "nothing was requested for the refusal"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_composer_sends_a_coupon_and_an_otp(
    graph_sandbox, sandbox_number, agent, agent_client, delivery_worker
):
    services.sync_templates(number=sandbox_number)
    conversation = ConversationFactory(number=sandbox_number)
    ConsentRecord.objects.create(
        customer=conversation.customer,
        purpose=ConsentRecord.Purpose.MARKETING,
        status=ConsentRecord.Status.OPT_IN,
        source=ConsentRecord.Source.CHECKOUT,
    )
    page = agent_client.get(
        reverse("conversations:detail", args=[conversation.pk])
    ).content.decode()
    assert "Coupon code" in page and "One-time code" in page
    send = reverse("conversations:send-template", args=[conversation.pk])
    coupon = MessageTemplate.objects.get(name="spring_coupon")
    login = MessageTemplate.objects.get(name="login_code")

    for form in (
        {"template": coupon.pk, "body_1": "Anna", "body_2": "$10", "button_0": "X1"},
        {"template": login.pk, "button_0": "482913"},
    ):
        response = agent_client.post(send, form, HTTP_HX_REQUEST="true")
        assert response.status_code == 201, response.content

    coupon_sent, otp_sent = conversation.messages.order_by("id")
    for message in (coupon_sent, otp_sent):
        wait_for_status(message, Message.Status.SENT)
    assert sends_for(graph_sandbox, coupon_sent)[0]["body"]["template"]["components"][
        -1
    ]["parameters"] == [{"type": "coupon_code", "coupon_code": "X1"}]
    assert otp_sent.text == "*482913* is your verification code."
