"""The message-template store of each WABA, and checks of template sends."""

import copy
import itertools
import re

from .errors import GraphError

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")

_template_ids = itertools.count(900000000000001)


def _seed_templates() -> list[dict]:
    """Realistic templates a new WABA starts with, in Meta's list shape."""
    return [
        {
            "name": "hello_world",
            "language": "en_US",
            "status": "APPROVED",
            "category": "UTILITY",
            "parameter_format": "POSITIONAL",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "Hello World"},
                {
                    "type": "BODY",
                    "text": "Welcome and congratulations!! This message demonstrates "
                    "your ability to send a WhatsApp message notification from "
                    "the Cloud API, hosted by Meta.",
                },
                {"type": "FOOTER", "text": "WhatsApp Business Platform sample message"},
            ],
        },
        {
            "name": "order_shipped",
            "language": "en",
            "status": "APPROVED",
            "category": "UTILITY",
            "parameter_format": "POSITIONAL",
            "components": [
                {
                    "type": "BODY",
                    "text": "Hi {{1}}, your order {{2}} is on its way. "
                    "Reply here if anything looks wrong.",
                    "example": {"body_text": [["Anna", "#4711"]]},
                },
                {
                    "type": "BUTTONS",
                    "buttons": [
                        {"type": "QUICK_REPLY", "text": "Track my order"},
                        {"type": "QUICK_REPLY", "text": "Talk to an agent"},
                    ],
                },
            ],
        },
        {
            "name": "boarding_pass",
            "language": "en",
            "status": "APPROVED",
            "category": "UTILITY",
            "parameter_format": "POSITIONAL",
            "components": [
                {
                    "type": "HEADER",
                    "format": "DOCUMENT",
                    "example": {"header_handle": ["4::YXBwbGljYXRpb24vcGRm:ARZ"]},
                },
                {
                    "type": "BODY",
                    "text": "{{1}}, here is your boarding pass for flight {{2}}. "
                    "Have a good trip!",
                    "example": {"body_text": [["Anna", "LH 2046"]]},
                },
            ],
        },
        {
            "name": "spring_sale",
            "language": "en",
            "status": "APPROVED",
            "category": "MARKETING",
            "parameter_format": "NAMED",
            "components": [
                {
                    "type": "HEADER",
                    "format": "IMAGE",
                    "example": {"header_handle": ["4::aW1hZ2UvanBlZw==:ARb"]},
                },
                {
                    "type": "BODY",
                    "text": "Hi {{first_name}}, our spring sale is on: "
                    "{{discount}} off everything until Sunday.",
                    "example": {
                        "body_text_named_params": [
                            {"param_name": "first_name", "example": "Anna"},
                            {"param_name": "discount", "example": "20%"},
                        ]
                    },
                },
                {
                    "type": "BUTTONS",
                    "buttons": [{"type": "QUICK_REPLY", "text": "Stop promotions"}],
                },
            ],
        },
        {
            "name": "flash_deal",
            "language": "en",
            "status": "REJECTED",
            "category": "MARKETING",
            "parameter_format": "POSITIONAL",
            "rejected_reason": "ABUSIVE_CONTENT",
            "components": [
                {"type": "BODY", "text": "Buy now or regret it forever: {{1}}!"}
            ],
        },
        {
            "name": "win_back",
            "language": "en",
            "status": "PAUSED",
            "category": "MARKETING",
            "parameter_format": "POSITIONAL",
            "components": [{"type": "BODY", "text": "We miss you, {{1}}!"}],
        },
        {
            "name": "spring_coupon",
            "language": "en",
            "status": "APPROVED",
            "category": "MARKETING",
            "parameter_format": "POSITIONAL",
            "components": [
                {
                    "type": "BODY",
                    "text": "Hi {{1}}, take {{2}} off your next order with this code.",
                    "example": {"body_text": [["Anna", "$10.00"]]},
                },
                {
                    "type": "BUTTONS",
                    "buttons": [{"type": "COPY_CODE", "example": "SPRING25"}],
                },
            ],
        },
        {
            "name": "login_code",
            "language": "en",
            "status": "APPROVED",
            "category": "AUTHENTICATION",
            "parameter_format": "POSITIONAL",
            "components": [
                {
                    "type": "BODY",
                    "text": "*{{1}}* is your verification code.",
                    "add_security_recommendation": True,
                },
                {"type": "FOOTER", "text": "This code expires in 10 minutes."},
                {
                    "type": "BUTTONS",
                    "buttons": [
                        {"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy code"}
                    ],
                },
            ],
        },
    ]


class TemplateStore:
    """Templates per WABA, seeded on first use, editable through the control API."""

    def __init__(self):
        self._by_waba: dict[str, list[dict]] = {}

    def for_waba(self, waba_id: str) -> list[dict]:
        if waba_id not in self._by_waba:
            seeded = _seed_templates()
            for template in seeded:
                template["id"] = str(next(_template_ids))
            self._by_waba[waba_id] = seeded
        return self._by_waba[waba_id]

    def find(self, waba_id: str, name: str, language: str) -> dict | None:
        for template in self.for_waba(waba_id):
            if template["name"] == name and template["language"] == language:
                return template
        return None

    def put(self, waba_id: str, template: dict) -> dict:
        """Add a template, or replace the one with the same name and language."""
        for key in ("name", "language", "category", "components"):
            if key not in template:
                raise ValueError(f"a template needs {key}")
        stored = copy.deepcopy(template)
        stored.setdefault("status", "APPROVED")
        stored.setdefault("parameter_format", "POSITIONAL")
        existing = self.find(waba_id, stored["name"], stored["language"])
        templates = self.for_waba(waba_id)
        if existing:
            stored["id"] = existing["id"]
            templates[templates.index(existing)] = stored
        else:
            stored.setdefault("id", str(next(_template_ids)))
            templates.append(stored)
        return stored

    def reset(self):
        self._by_waba.clear()

    def by_waba(self) -> dict[str, list[dict]]:
        """Every WABA's templates (for the state file)."""
        return copy.deepcopy(self._by_waba)

    def load(self, by_waba: dict[str, list[dict]]):
        """Take back what by_waba() gave (a restarted sandbox)."""
        global _template_ids
        self._by_waba.update(copy.deepcopy(by_waba))
        # New templates get ids after the restored ones, as at Meta.
        ids = [
            int(template["id"])
            for templates in by_waba.values()
            for template in templates
            if str(template.get("id", "")).isdigit()
        ]
        if ids:
            _template_ids = itertools.count(max(max(ids) + 1, next(_template_ids)))


def _component(template: dict, kind: str) -> dict | None:
    for component in template["components"]:
        if component["type"] == kind:
            return component
    return None


def _placeholders(text: str) -> list[str]:
    """A template's variables, each once: a name used twice is one value."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text or "")))


def _sent_component(components: list, kind: str) -> dict | None:
    for component in components:
        if str(component.get("type", "")).lower() == kind:
            return component
    return None


def check_template_send(store: TemplateStore, waba_id: str, template: dict) -> dict:
    """Check a send's `template` object as Meta does; return the stored template."""
    name = template.get("name")
    language = (template.get("language") or {}).get("code")
    if not name:
        raise GraphError(131008, "Parameter 'template.name' is required.")
    if not language:
        raise GraphError(131008, "Parameter 'template.language.code' is required.")
    stored = store.find(waba_id, name, language)
    if stored is None:
        raise GraphError(132001, f"template name ({name}) does not exist in {language}")
    if stored["status"] == "PAUSED":
        raise GraphError(132015, f"Template {name} is paused due to low quality.")
    if stored["status"] == "DISABLED":
        raise GraphError(132016, f"Template {name} has been disabled.")
    if stored["status"] != "APPROVED":
        raise GraphError(
            132001, f"template name ({name}) is not approved in {language}"
        )
    sent = template.get("components") or []
    if not isinstance(sent, list):
        raise GraphError(100, "Param template['components'] must be an array.")
    _check_header(stored, _sent_component(sent, "header"))
    _check_body(stored, _sent_component(sent, "body"))
    _check_buttons(stored, sent)
    return stored


# What Meta wants for each kind of template button: the sub_type and the
# parameter type of the button component a send must carry.
BUTTON_PARAMETERS = {"COPY_CODE": ("copy_code", "coupon_code"), "OTP": ("url", "text")}
CODE_LIMIT = 15


def _check_buttons(stored: dict, sent: list):
    buttons = (_component(stored, "BUTTONS") or {}).get("buttons") or []
    sent_buttons = {
        str(component.get("index")): component
        for component in sent
        if isinstance(component, dict) and component.get("type") == "button"
    }
    for index, button in enumerate(buttons):
        wanted = BUTTON_PARAMETERS.get(button["type"])
        if wanted is None:
            continue
        sub_type, kind = wanted
        component = sent_buttons.get(str(index))
        parameters = (component or {}).get("parameters") or [{}]
        value = parameters[0].get(kind)
        if (component or {}).get("sub_type") != sub_type or not value:
            raise GraphError(
                131008,
                f"button {index}: a {button['type']} button needs a {sub_type} "
                f"button component with a {kind} parameter.",
            )
        if len(str(value)) > CODE_LIMIT:
            raise GraphError(
                131009, f"button {index}: {kind} has at most {CODE_LIMIT} characters."
            )


def _check_header(stored: dict, sent: dict | None):
    header = _component(stored, "HEADER")
    parameters = (sent or {}).get("parameters") or []
    if header is None or (
        header["format"] == "TEXT" and not _placeholders(header["text"])
    ):
        expected = 0
    else:
        expected = 1
    if len(parameters) != expected:
        raise GraphError(
            132000,
            f"header: number of localizable_params ({len(parameters)}) does not "
            f"match the expected number of params ({expected})",
        )
    if expected and header["format"] != "TEXT":
        kind = header["format"].lower()
        parameter = parameters[0]
        if parameter.get("type") != kind:
            raise GraphError(
                132012,
                f"header: Format mismatch, expected {header['format']}, "
                f"received {str(parameter.get('type')).upper()}",
            )
        media = parameter.get(kind) or {}
        if not media.get("id") and not media.get("link"):
            raise GraphError(
                131008, f"Parameter 'header.{kind}' needs an id or a link."
            )


def _check_body(stored: dict, sent: dict | None):
    body = _component(stored, "BODY")
    names = _placeholders(body["text"]) if body else []
    parameters = (sent or {}).get("parameters") or []
    if len(parameters) != len(names):
        raise GraphError(
            132000,
            f"body: number of localizable_params ({len(parameters)}) does not "
            f"match the expected number of params ({len(names)})",
        )
    for parameter in parameters:
        if parameter.get("type") not in {"text", "currency", "date_time"}:
            raise GraphError(
                132012, f"body: parameter type {parameter.get('type')!r} is not text"
            )
        currency = parameter.get("currency")
        if parameter.get("type") == "currency" and not (
            isinstance(currency, dict)
            and currency.get("fallback_value")
            and currency.get("code")
            and isinstance(currency.get("amount_1000"), int)
        ):
            raise GraphError(
                131008,
                "body: a currency parameter needs fallback_value, code and "
                "amount_1000.",
            )
    if stored.get("parameter_format") == "NAMED":
        given = {parameter.get("parameter_name") for parameter in parameters}
        missing = sorted(set(names) - given)
        if missing:
            raise GraphError(
                132000, f"body: missing named parameters {', '.join(missing)}"
            )


def render_template(stored: dict, template: dict) -> dict:
    """What the customer's phone shows for a template send: texts and buttons."""
    sent = template.get("components") or []
    values = {}
    body_sent = _sent_component(sent, "body") or {}
    for position, parameter in enumerate(body_sent.get("parameters") or [], start=1):
        text = parameter.get("text") or (
            parameter.get("currency") or parameter.get("date_time") or {}
        ).get("fallback_value", "")
        values[parameter.get("parameter_name") or str(position)] = str(text)

    def fill(text: str) -> str:
        return PLACEHOLDER.sub(lambda match: values.get(match.group(1), ""), text)

    body = _component(stored, "BODY")
    header = _component(stored, "HEADER")
    footer = _component(stored, "FOOTER")
    buttons_component = _component(stored, "BUTTONS") or {"buttons": []}
    payloads = {}
    for component in sent:
        if component.get("sub_type") == "quick_reply":
            for parameter in component.get("parameters") or []:
                payloads[int(component.get("index", 0))] = parameter.get("payload")
    buttons = [
        {
            "type": button["type"],
            "text": button.get("text", ""),
            "payload": payloads.get(index, button.get("text", "")),
        }
        for index, button in enumerate(buttons_component["buttons"])
    ]
    return {
        "header": header.get("text", header["format"].lower()) if header else "",
        "body": fill(body["text"]) if body else "",
        "footer": footer["text"] if footer else "",
        "buttons": buttons,
    }
