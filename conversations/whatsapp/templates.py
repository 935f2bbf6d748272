"""Message templates in Meta's shape, in this one place: placeholders, the
components a send carries, the parameters an agent fills in, and the text a
template renders to.

The composer's form, the REST API's check and the payload sent to Meta all
read placeholders through `placeholders()`, so they agree on what a template
asks for. Pure: a template's stored components in, plain values out.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

# A placeholder: {{1}} (positional) or {{first_name}} (named), spaces allowed
# inside the braces. Meta's parameter names are ASCII letters, digits and
# underscores: anything else between braces ({{prénom}}) is text that Meta
# shows as written, so it asks for no value here either. A name used twice
# is one parameter.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
MEDIA_HEADER_KINDS = frozenset({"image", "video", "document"})


class ParametersRefused(ValueError):
    """The parameters do not fit the template; the text says which part."""


def placeholders(text: str) -> list[str]:
    """The template text's parameters in order of first use, each once."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text or "")))


def components_by_type(template) -> dict[str, dict]:
    """The template's stored components by their upper-case type."""
    return {
        str(component.get("type", "")).upper(): component
        for component in template.components or []
    }


def parameter_format(template) -> str:
    """NAMED or POSITIONAL (Meta's default)."""
    # Meta lists parameter_format next to components; sync_templates keeps it
    # as a pseudo-component so the model needs no new column.
    for component in template.components or []:
        if component.get("type") == "PARAMETER_FORMAT":
            return str(component.get("value", "POSITIONAL")).upper()
    return "POSITIONAL"


def body_text(template) -> str:
    return str((components_by_type(template).get("BODY") or {}).get("text", ""))


def fields(template) -> dict:
    """The parameters an agent fills in: the header's, the body's (by name
    when the template's are named) and the URL buttons' variable endings."""
    header = None
    stored = components_by_type(template)
    if "HEADER" in stored:
        component = stored["HEADER"]
        kind = str(component.get("format", "TEXT")).upper()
        if kind == "TEXT":
            names = placeholders(str(component.get("text", "")))
            header = names[0] if names else None
        else:
            header = kind.lower()
    buttons = [
        {
            "index": index,
            "kind": kind,
            "text": str(button.get("text", "")),
            "url": str(button.get("url", "")),
        }
        for index, button in enumerate(_buttons(stored))
        if (kind := _button_kind(button))
    ]
    body = placeholders(body_text(template))
    if any(button["kind"] == "otp" for button in buttons):
        # An authentication template's body shows the code its button copies.
        body = []
    return {
        "header": header,
        "body": body,
        "named": parameter_format(template) == "NAMED",
        "buttons": buttons,
    }


def button_value(button: dict, value: str) -> dict | None:
    """The parameter of a fields() button from one typed value (the
    composer's input), or None for an optional one left empty."""
    key = {"url": "text", "coupon_code": "coupon_code", "otp": "code"}.get(
        button["kind"], "flow_token"
    )
    if button["kind"] == "flow" and not value:
        return None
    return {"index": button["index"], "type": button["kind"], key: value}


def _button_kind(button: dict) -> str:
    """What a template button asks of a send: "url" (a URL's variable
    ending), "coupon_code", "otp" (the one-time code), "flow" (an optional
    flow token and data), or "" for nothing."""
    kind = str(button.get("type", "")).upper()
    if kind == "URL":
        return "url" if placeholders(str(button.get("url", ""))) else ""
    return {"COPY_CODE": "coupon_code", "OTP": "otp", "FLOW": "flow"}.get(kind, "")


def message_payload(template, components: list[dict]) -> dict:
    """The `template` object of a send."""
    return {
        "name": template.name,
        "language": {"code": template.language, "policy": "deterministic"},
        "components": components,
    }


def components(template, parameters: dict) -> list[dict]:
    """Check a send's parameters against the template; Meta's components[].

    parameters: {"header": "text" | {"image"|"video"|"document": {"link"|"id",
    "filename"}} | {"location": {...}}, "body": [positional...] |
    {name: value}, "buttons": [{"index": 0, "type": "url", "text": "..."} |
    {"index": 1, "type": "quick_reply", "payload": "..."}]}.
    Raise ParametersRefused saying what does not fit.
    """
    stored = components_by_type(template)
    body = parameters.get("body")
    code = _otp_code(stored, parameters.get("buttons"))
    if code and not body:
        # Meta wants the one-time code in the body as well as on the button.
        names = placeholders(body_text(template))
        named = template.components and parameter_format(template) == "NAMED"
        body = {name: code for name in names} if named else [code] * len(names)
    built = [
        *_header_component(template, stored.get("HEADER"), parameters.get("header")),
        *_body_component(template, body),
        *_button_components(stored, parameters.get("buttons")),
    ]
    return built


def _otp_code(stored: dict[str, dict], given_list) -> str:
    buttons = _buttons(stored)
    for given in given_list or []:
        index = _index(given)
        if 0 <= index < len(buttons) and _button_kind(buttons[index]) == "otp":
            return str(given.get("code") or given.get("text") or "")
    return ""


def _index(given) -> int:
    try:
        return int(given.get("index", -1)) if isinstance(given, dict) else -1
    except (TypeError, ValueError):
        return -1


def _header_component(template, header: dict | None, given) -> list[dict]:
    if header is None:
        if given:
            raise ParametersRefused("header: this template has no header")
        return []
    kind = str(header.get("format", "TEXT")).lower()
    if kind == "text":
        names = placeholders(header.get("text", ""))
        if not names:
            if given:
                raise ParametersRefused("header: takes no parameter")
            return []
        if not isinstance(given, str) or not given:
            raise ParametersRefused("header: needs 1 text parameter")
        return [
            {
                "type": "header",
                "parameters": [_text_parameter(template, names[0], given)],
            }
        ]
    media = given.get(kind) if isinstance(given, dict) else None
    if not isinstance(media, dict):
        raise ParametersRefused(f"header: needs a {kind} parameter")
    if kind in MEDIA_HEADER_KINDS:
        media = _media_header(kind, media)
    return [{"type": "header", "parameters": [{"type": kind, kind: media}]}]


def _media_header(kind: str, media: dict) -> dict:
    if bool(media.get("id")) == bool(media.get("link")):
        raise ParametersRefused(
            f"header: the {kind} needs exactly one of an id or a link"
        )
    media = {k: v for k, v in media.items() if k in {"id", "link", "filename"}}
    if kind != "document":
        media.pop("filename", None)
        return media
    name = media.get("filename") or str(media.get("link", "")).split("?")[0]
    if media.get("link") and not name.lower().endswith(".pdf"):
        raise ParametersRefused("header: template documents must be PDFs")
    return media


def _body_component(template, given) -> list[dict]:
    names = placeholders(body_text(template))
    given = given or []
    if template.components and parameter_format(template) == "NAMED":
        if not isinstance(given, dict):
            raise ParametersRefused("body: named parameters are needed")
        missing = sorted(set(names) - set(given))
        extra = sorted(set(given) - set(names))
        if missing or extra:
            raise ParametersRefused(
                f"body: missing {', '.join(missing) or 'none'}; "
                f"unknown {', '.join(extra) or 'none'}"
            )
        values = [(name, given[name]) for name in names]
    else:
        if not isinstance(given, list):
            raise ParametersRefused("body: a list of positional parameters")
        if len(given) != len(names):
            raise ParametersRefused(
                f"body: {len(names)} parameters expected, {len(given)} given"
            )
        values = list(zip(names, given, strict=True))
    if any(value in (None, "") for _, value in values):
        raise ParametersRefused("body: parameters may not be empty")
    if not values:
        return []
    return [
        {
            "type": "body",
            "parameters": [
                _body_parameter(template, name, value) for name, value in values
            ],
        }
    ]


CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")


def _body_parameter(template, name: str, value) -> dict:
    """A body value: text, or Meta's currency or date_time object (which the
    customer's app formats, the fallback_value where it cannot)."""
    if not isinstance(value, dict):
        return _text_parameter(template, name, str(value))
    if set(value) == {"currency"} and isinstance(value["currency"], dict):
        currency = value["currency"]
        amount = currency.get("amount_1000")
        if not CURRENCY_CODE.match(str(currency.get("code", ""))):
            raise ParametersRefused(f"body: {name}: currency code like USD needed")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ParametersRefused(
                f"body: {name}: amount_1000 is the amount times 1000, an integer"
            )
        parameter = {
            "type": "currency",
            "currency": {
                "fallback_value": _fallback(name, currency),
                "code": currency["code"],
                "amount_1000": amount,
            },
        }
    elif set(value) == {"date_time"} and isinstance(value["date_time"], dict):
        parameter = {
            "type": "date_time",
            "date_time": {"fallback_value": _fallback(name, value["date_time"])},
        }
    else:
        raise ParametersRefused(
            f"body: {name}: text, or an object with currency or date_time"
        )
    if parameter_format(template) == "NAMED":
        parameter["parameter_name"] = name
    return parameter


# The composer's kinds of body value: text, an amount in a currency, a
# date and time (Meta's currency and date_time parameters).
BODY_KINDS = ("text", "currency", "date_time")


def composer_body_value(
    name: str,
    kind: str,
    *,
    text: str = "",
    amount: str = "",
    code: str = "",
    when: str = "",
    fallback: str = "",
):
    """A body value in the shape components() takes, from the composer's
    inputs: the text, or an amount (a decimal, at most three places) and a
    currency code, or a date and time (an HTML datetime-local value). The
    fallback text is what the customer sees where the app cannot format the
    value; left empty, it is the amount and code, or the date as written."""
    kind = kind or "text"
    if kind not in BODY_KINDS:
        raise ParametersRefused(f"body: {name}: {kind[:40]!r} is not a kind of value")
    fallback = fallback.strip()
    if kind == "text":
        return text
    if kind == "currency":
        code = code.strip().upper()
        amount_1000 = _amount_1000(name, amount.strip())
        fallback = fallback or f"{amount.strip()} {code}"
        return {
            "currency": {
                "fallback_value": fallback,
                "code": code,
                "amount_1000": amount_1000,
            }
        }
    when = when.strip()
    if when:
        try:
            moment = datetime.fromisoformat(when)
        except ValueError:
            raise ParametersRefused(
                f"body: {name}: a date and time like 2026-12-24T15:30"
            ) from None
        fallback = fallback or (
            f"{moment:%B} {moment.day}, {moment.year}, {moment:%H:%M}"
        )
    return {"date_time": {"fallback_value": fallback}}


def _amount_1000(name: str, amount: str) -> int:
    """Meta's amount_1000 (the amount times 1000) of a typed decimal."""
    try:
        value = Decimal(amount)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0:
        raise ParametersRefused(f"body: {name}: an amount like 12.50 needed")
    thousandths = value * 1000
    if thousandths != thousandths.to_integral_value() or thousandths > 10**15:
        raise ParametersRefused(f"body: {name}: at most three decimal places")
    return int(thousandths)


def _fallback(name: str, value: dict) -> str:
    fallback = value.get("fallback_value")
    if not isinstance(fallback, str) or not fallback.strip():
        raise ParametersRefused(f"body: {name}: fallback_value (text) needed")
    return fallback


def _buttons(stored: dict[str, dict]) -> list[dict]:
    return (stored.get("BUTTONS") or {}).get("buttons") or []


# Meta's limit on a coupon code and on a one-time password.
CODE_MAX_LENGTH = 15


def _button_components(stored: dict[str, dict], given_list) -> list[dict]:
    buttons = _buttons(stored)
    given_buttons = {_index(b): b for b in given_list or []}
    for index in given_buttons:
        if not 0 <= index < len(buttons):
            raise ParametersRefused(f"buttons: there is no button {index}")
    built = []
    for index, button in enumerate(buttons):
        kind = str(button.get("type", "")).upper()
        given = given_buttons.get(index)
        wanted = _button_kind(button)
        if wanted and wanted != "flow" and not given:
            raise ParametersRefused(f"buttons: button {index} needs {_NEEDS[wanted]}")
        if given and given.get("type") not in {None, *_GIVEN_TYPES.get(kind, ())}:
            raise ParametersRefused(
                f"buttons: button {index} is a {kind} button"
                + (f"; give {_NEEDS[wanted]}" if wanted else " and takes no value")
            )
        if wanted:
            component = _BUTTON_BUILDERS[wanted](index, given or {})
            if component is not None:
                built.append(component)
        elif kind == "QUICK_REPLY" and given and given.get("payload"):
            parameter = {"type": "payload", "payload": str(given["payload"])}
            built.append(_button(index, "quick_reply", parameter))
        elif given and kind != "QUICK_REPLY":
            raise ParametersRefused(f"buttons: button {index} takes no value")
    return built


# The `type`s a caller may give for each kind of template button (Meta's own
# components send a one-time code as a "url" button's text).
_GIVEN_TYPES = {
    "URL": ("url",),
    "QUICK_REPLY": ("quick_reply",),
    "COPY_CODE": ("coupon_code", "copy_code"),
    "OTP": ("otp", "url"),
    "FLOW": ("flow",),
}
_NEEDS = {
    "url": "its URL suffix (text)",
    "coupon_code": "the coupon_code",
    "otp": "the one-time code (code)",
    "flow": "a flow_token",
}


def _code(index: int, given: dict, key: str) -> str:
    value = given.get(key)
    if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        raise ParametersRefused(f"buttons: button {index} needs {key}")
    value = str(value)
    if len(value) > CODE_MAX_LENGTH:
        raise ParametersRefused(
            f"buttons: button {index}: {key} has at most {CODE_MAX_LENGTH} characters"
        )
    return value


def _url_button(index: int, given: dict) -> dict:
    if not given.get("text"):
        raise ParametersRefused(f"buttons: button {index} needs its URL suffix")
    return _button(index, "url", {"type": "text", "text": str(given["text"])})


def _coupon_button(index: int, given: dict) -> dict:
    code = _code(index, given, "coupon_code")
    return _button(index, "copy_code", {"type": "coupon_code", "coupon_code": code})


def _otp_button(index: int, given: dict) -> dict:
    # Copy-code, one-tap and zero-tap buttons all take the code as a URL
    # button's text parameter.
    key = "text" if "code" not in given and "text" in given else "code"
    return _button(index, "url", {"type": "text", "text": _code(index, given, key)})


def _flow_button(index: int, given: dict) -> dict | None:
    token, data = given.get("flow_token"), given.get("flow_action_data")
    if token is None and data is None:
        return None
    action = {}
    if token is not None:
        if not isinstance(token, str) or not token:
            raise ParametersRefused(f"buttons: button {index}: flow_token is text")
        action["flow_token"] = token
    if data is not None:
        if not isinstance(data, dict):
            raise ParametersRefused(
                f"buttons: button {index}: flow_action_data is an object"
            )
        action["flow_action_data"] = data
    return _button(index, "flow", {"type": "action", "action": action})


_BUTTON_BUILDERS = {
    "url": _url_button,
    "coupon_code": _coupon_button,
    "otp": _otp_button,
    "flow": _flow_button,
}


def _button(index: int, sub_type: str, parameter: dict) -> dict:
    return {
        "type": "button",
        "sub_type": sub_type,
        "index": str(index),
        "parameters": [parameter],
    }


def _text_parameter(template, name: str, value: str) -> dict:
    parameter = {"type": "text", "text": value}
    if parameter_format(template) == "NAMED":
        parameter["parameter_name"] = name
    return parameter


def render_text(template, components: list[dict]) -> str:
    """The body as the customer reads it, with the send's values filled in."""
    text = body_text(template)
    given = [
        parameter.get("text")
        or (parameter.get("currency") or parameter.get("date_time") or {}).get(
            "fallback_value", ""
        )
        for component in components
        if component["type"] == "body"
        for parameter in component.get("parameters", [])
    ]
    values = dict(zip(placeholders(text), given, strict=False))
    # One pass: a value that itself looks like a placeholder stays as written.
    return PLACEHOLDER.sub(lambda match: values.get(match[1], match[0]), text)


def parameters_from_components(sent: list[dict]) -> dict:
    """Meta's template components[] as the parameters components() checks."""
    parameters: dict = {}
    for component in sent:
        kind = str(component.get("type", "")).lower()
        given = component.get("parameters") or []
        if kind == "header" and given:
            first = given[0] if isinstance(given[0], dict) else {}
            media = str(first.get("type", ""))
            parameters["header"] = (
                first.get("text") if media == "text" else {media: first.get(media)}
            )
        elif kind == "body":
            parameters["body"] = _body_parameters(given)
        elif kind == "button":
            first = given[0] if given and isinstance(given[0], dict) else {}
            sub_type = str(component.get("sub_type", "")).lower()
            button = {"index": component.get("index"), "type": sub_type}
            if sub_type == "url":
                button["text"] = first.get("text")
            elif sub_type == "copy_code":
                button = {**button, "type": "coupon_code"}
                button["coupon_code"] = first.get("coupon_code")
            elif sub_type == "flow":
                button.update(_dict(first.get("action")))
            else:
                button["payload"] = first.get("payload")
            parameters.setdefault("buttons", []).append(button)
    return parameters


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _body_parameters(given: list) -> list | dict:
    values = [p if isinstance(p, dict) else {} for p in given]
    texts = [
        {kind: p[kind]}
        if (kind := str(p.get("type", ""))) in {"currency", "date_time"}
        and isinstance(p.get(kind), dict)
        else p.get("text")
        for p in values
    ]
    if any(p.get("parameter_name") for p in values):
        return {
            p.get("parameter_name"): text for p, text in zip(values, texts, strict=True)
        }
    return texts
