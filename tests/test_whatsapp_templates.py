"""The one template module, without a database: placeholders, components and
the text a send shows."""

import pytest

from conversations.models import MessageTemplate
from conversations.whatsapp import templates


def template(text: str, parameter_format: str = "POSITIONAL") -> MessageTemplate:
    return MessageTemplate(
        name="t",
        language="en",
        components=[
            {"type": "BODY", "text": text},
            {"type": "PARAMETER_FORMAT", "value": parameter_format},
        ],
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Hi {{1}}, order {{2}}", ["1", "2"]),
        ("{{2}} before {{1}}", ["2", "1"]),
        ("Hi {{name}}, yes {{ name }}", ["name"]),
        ("Bonjour {{prénom}} {{ville}}", ["ville"]),
        ("No placeholder {here} or {{ }}", []),
    ],
)
def test_placeholders_are_metas_names_in_order_each_once(text, names):
    assert templates.placeholders(text) == names


def test_a_value_is_shown_as_given_even_when_it_looks_like_a_placeholder():
    positional = template("Hi {{1}}, order {{2}}")
    components = templates.components(positional, {"body": ["{{2}} \\1", "#4711"]})

    assert templates.render_text(positional, components) == "Hi {{2}} \\1, order #4711"


def test_named_parameters_are_checked_by_name_and_sent_once_each():
    named = template("Hi {{first}}! {{first}}, {{order}}", "NAMED")

    with pytest.raises(templates.ParametersRefused, match="missing order"):
        templates.components(named, {"body": {"first": "Anna"}})
    with pytest.raises(templates.ParametersRefused, match="unknown extra"):
        templates.components(named, {"body": {"first": "A", "order": "1", "extra": 2}})
    components = templates.components(named, {"body": {"order": "1", "first": "A"}})

    assert [p["parameter_name"] for p in components[0]["parameters"]] == [
        "first",
        "order",
    ]
    assert templates.render_text(named, components) == "Hi A! A, 1"
    assert templates.fields(named)["body"] == ["first", "order"]


def test_the_composers_amount_and_date_default_their_fallback_text():
    composer_body_value = templates.composer_body_value
    assert composer_body_value("1", "", text="Anna") == "Anna"
    assert composer_body_value("1", "currency", amount="0.125", code=" usd") == {
        "currency": {"fallback_value": "0.125 USD", "code": "USD", "amount_1000": 125}
    }
    assert composer_body_value("2", "date_time", when="2027-01-05T09:05") == {
        "date_time": {"fallback_value": "January 5, 2027, 09:05"}
    }
    assert composer_body_value(
        "2", "date_time", when="2027-01-05T09:05", fallback=" next Tuesday "
    ) == {"date_time": {"fallback_value": "next Tuesday"}}
