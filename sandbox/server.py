"""The sandbox's HTTP server: the fake Graph API, media, control API and phone page."""

import asyncio
import base64
import functools
import json
import time
from pathlib import Path

from aiohttp import web

from . import business_app, clock, identity, payloads
from .config import Number, SandboxConfig, StatusDelays
from .errors import (
    GraphError,
    invalid_parameter,
    invalid_token,
    missing_token,
    unknown_object,
)
from .faults import Faults
from .inbound import DescriptionError
from .sends import check_send, recipient_wa_id
from .simulator import Sandbox

SANDBOX_KEY = web.AppKey("sandbox", Sandbox)
# The request record a Graph API handler fills in with the body and answer.
RECORD_KEY = web.RequestKey("record", dict)
STATIC_DIR = Path(__file__).parent / "static"
VERSION = r"{version:v\d+\.\d+}"
MAX_UPLOAD = 100 * 1024 * 1024
TEMPLATE_PAGE_LIMIT = 25


def _sandbox(request: web.Request) -> Sandbox:
    return request.app[SANDBOX_KEY]


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _authorise_number(request: web.Request, phone_number_id: str) -> Number:
    """Meta's checks in Meta's order: token first, then the object's existence."""
    sandbox = _sandbox(request)
    token = _bearer(request)
    if token is None:
        raise missing_token()
    if all(number.access_token != token for number in sandbox.numbers.values()):
        raise invalid_token("The access token could not be decrypted.")
    number = sandbox.numbers.get(phone_number_id)
    if number is None or number.access_token != token:
        raise unknown_object(phone_number_id, request.method)
    return number


def graph_endpoint(handler):
    """Apply the latency fault, answer GraphErrors in Meta's shape, record it all."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        sandbox = _sandbox(request)
        if sandbox.faults.latency_ms > 0:
            await asyncio.sleep(sandbox.faults.latency_ms / 1000)
        record = {
            "seq": sandbox.request_count + 1,
            "time": time.time(),
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "has_token": _bearer(request) is not None,
            "body": None,
            "status": None,
            "response": None,
        }
        sandbox.request_count += 1
        sandbox.requests.append(record)
        request[RECORD_KEY] = record
        try:
            response = await handler(request)
        except GraphError as error:
            response = _json(error.body(), error.status)
            record["response"] = json.loads(response.body)
        record["status"] = response.status
        return response

    return wrapper


async def _read_json(request: web.Request):
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise invalid_parameter("The request body is not valid JSON.") from None
    request[RECORD_KEY]["body"] = body
    return body


# --- Graph API: messages --------------------------------------------------------


@graph_endpoint
async def send_message(request: web.Request) -> web.StreamResponse:
    sandbox = _sandbox(request)
    phone_number_id = request.match_info["phone_number_id"]
    number = _authorise_number(request, phone_number_id)
    body = await _read_json(request)
    stats = sandbox.stats[phone_number_id]
    try:
        if sandbox.faults.take_server_error():
            raise GraphError(131000, "The sandbox was told to fail this request.")
        kind = check_send(body)
        if kind != "message":
            return _status_update(request, number, body, kind)
        stored_template = None
        if body.get("type") == "template":
            stored_template = sandbox.check_template(number, body["template"])
        identity.check_recipient_template(body, stored_template)
        customer = identity.addressed_customer(sandbox, body)
        wa_id = customer.wa_id
        if (
            body.get("type", "text") != "template"
            and sandbox.config.window_error_mode == "sync"
            and not customer.window_open(phone_number_id, time.time())
        ):
            raise GraphError(
                131047,
                "Message failed to send because more than 24 hours have passed "
                "since the customer last replied to this number.",
            )
        second = int(time.time())
        if (
            sandbox.faults.enforce_throughput
            and stats.per_second.get(second, 0) >= number.throughput
        ):
            stats.rejected_by_throughput += 1
            raise GraphError(
                130429,
                f"Message failed to send because there were too many messages sent "
                f"from this phone number ({number.throughput} per second).",
            )
        injected = sandbox.faults.take_error_code()
        if injected is not None:
            raise GraphError(injected, "The sandbox was told to answer this error.")
    except GraphError as error:
        stats.errors_by_code[error.code] += 1
        raise
    stats.count_send(second)
    message = sandbox.accept_send(number, body, wa_id, stored_template)
    result = {
        "messaging_product": "whatsapp",
        "contacts": [identity.answer_contact(body, wa_id, customer.user_id)],
        "messages": [{"id": message.wamid}],
    }
    if stored_template:
        result["messages"][0]["message_status"] = "accepted"
    request[RECORD_KEY]["response"] = result
    if sandbox.faults.hold_sends_ms > 0:
        await _hold(sandbox)
    if sandbox.faults.take_timeout():
        return await _time_out(request, sandbox)
    return _json(result)


async def _hold(sandbox: Sandbox) -> None:
    """Hold an accepted send's answer for hold_sends_ms, or until the faults change."""
    faults = sandbox.faults
    until = time.monotonic() + faults.hold_sends_ms / 1000
    while sandbox.faults is faults and (left := until - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.05))


async def _time_out(request: web.Request, sandbox: Sandbox) -> web.StreamResponse:
    """The send is accepted and recorded; the client just never hears so."""
    request[RECORD_KEY]["timed_out"] = sandbox.faults.timeout_mode
    if sandbox.faults.timeout_mode == "drop":
        request.transport.close()
        return web.Response(status=499)
    await asyncio.sleep(sandbox.faults.hang_seconds)
    return _json(request[RECORD_KEY]["response"])


def _status_update(request, number: Number, body: dict, kind: str) -> web.Response:
    sandbox = _sandbox(request)
    message_id = body["message_id"]
    owner = sandbox.inbound.get(message_id)
    if owner is None or owner[0] != number.phone_number_id:
        raise invalid_parameter(
            f"Message {message_id} is not a message this number received."
        )
    sandbox.publish(
        "typing" if kind == "typing" else "read",
        phone_number_id=number.phone_number_id,
        wa_id=owner[1],
        wamid=message_id,
    )
    result = {"success": True}
    request[RECORD_KEY]["response"] = result
    return _json(result)


# --- Graph API: media -----------------------------------------------------------


@graph_endpoint
async def upload_media(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    number = _authorise_number(request, request.match_info["phone_number_id"])
    fields, upload = await _read_multipart(request)
    request[RECORD_KEY]["body"] = {
        **fields,
        "file_size": len(upload["data"]) if upload else None,
    }
    if fields.get("messaging_product") != "whatsapp":
        raise GraphError(100, "The parameter messaging_product is required.")
    if upload is None:
        raise GraphError(100, "The parameter file is required.")
    if sandbox.faults.take_upload_error():
        raise GraphError(131053, "The sandbox was told to refuse this upload.")
    mime_type = fields.get("type") or upload["content_type"]
    if not mime_type:
        raise GraphError(100, "The parameter type is required.")
    media = sandbox.media.add(
        upload["data"], mime_type, number.phone_number_id, upload["filename"]
    )
    result = {"id": media.id}
    request[RECORD_KEY]["response"] = result
    return _json(result)


async def _read_multipart(request: web.Request):
    if not request.content_type.startswith("multipart/"):
        raise invalid_parameter("Media uploads must be multipart/form-data.")
    reader = await request.multipart()
    fields, upload = {}, None
    async for part in reader:
        if part.filename is not None or part.name == "file":
            data = await part.read(decode=False)
            if len(data) > MAX_UPLOAD:
                raise invalid_parameter("The file is larger than 100 MB.")
            upload = {
                "data": bytes(data),
                "filename": part.filename or "",
                "content_type": part.headers.get("Content-Type", ""),
            }
        else:
            fields[part.name] = await part.text()
    return fields, upload


def _authorise_media(request: web.Request, media_id: str):
    sandbox = _sandbox(request)
    token = _bearer(request)
    if token is None:
        raise missing_token()
    owners = [
        number for number in sandbox.numbers.values() if number.access_token == token
    ]
    if not owners:
        raise invalid_token("The access token could not be decrypted.")
    media = sandbox.media.get(media_id)
    allowed = {number.phone_number_id for number in owners}
    wanted = request.query.get("phone_number_id")
    if (
        media is None
        or media.phone_number_id not in allowed
        or (wanted and wanted != media.phone_number_id)
    ):
        raise unknown_object(media_id, request.method)
    return media


@graph_endpoint
async def graph_object(request: web.Request) -> web.Response:
    """GET /{version}/{id}: a media id, or a phone number's own fields."""
    sandbox = _sandbox(request)
    object_id = request.match_info["object_id"]
    number = sandbox.numbers.get(object_id)
    if number is not None:
        _authorise_number(request, object_id)
        return _json(
            {
                "id": number.phone_number_id,
                "display_phone_number": number.display_phone_number,
                "verified_name": number.verified_name,
                "quality_rating": "GREEN",
                "throughput": {
                    "level": "STANDARD" if number.throughput <= 80 else "HIGH"
                },
            }
        )
    media = _authorise_media(request, object_id)
    result = {
        "messaging_product": "whatsapp",
        "url": sandbox.media.download_url(
            sandbox.base_url, media.id, sandbox.config.media_url_ttl
        ),
        "mime_type": media.mime_type,
        "sha256": media.sha256_hex,
        "file_size": len(media.data),
        "id": media.id,
    }
    request[RECORD_KEY]["response"] = result
    return _json(result)


@graph_endpoint
async def delete_media(request: web.Request) -> web.Response:
    media = _authorise_media(request, request.match_info["object_id"])
    _sandbox(request).media.delete(media.id)
    return _json({"success": True})


@graph_endpoint
async def download_media(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    token = _bearer(request)
    if token is None:
        raise missing_token()
    media = sandbox.media.resolve_url(
        request.query.get("mid", ""),
        request.query.get("ext", ""),
        request.query.get("hash", ""),
    )
    if media is None:
        return web.Response(status=404, text="URL signature mismatch or expired")
    owner = sandbox.numbers.get(media.phone_number_id)
    if owner is None or owner.access_token != token:
        raise invalid_token("The access token may not download this media.")
    return web.Response(body=media.data, content_type=media.mime_type.split(";")[0])


# --- Graph API: templates -------------------------------------------------------


@graph_endpoint
async def list_templates(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    waba_id = request.match_info["waba_id"]
    token = _bearer(request)
    if token is None:
        raise missing_token()
    numbers = [n for n in sandbox.numbers.values() if n.access_token == token]
    if not numbers:
        raise invalid_token("The access token could not be decrypted.")
    if waba_id not in {number.waba_id for number in numbers}:
        raise unknown_object(waba_id, request.method)
    templates = sandbox.templates.for_waba(waba_id)
    for key in ("name", "status", "category", "language"):
        if request.query.get(key):
            wanted = request.query[key]
            templates = [t for t in templates if wanted.lower() in str(t[key]).lower()]
    try:
        limit = max(1, min(int(request.query.get("limit", TEMPLATE_PAGE_LIMIT)), 1000))
        start = int(_decode_cursor(request.query.get("after", "")) or 0)
    except ValueError:
        raise invalid_parameter("Invalid limit or after cursor.") from None
    page = templates[start : start + limit]
    result = {"data": page}
    if page:
        paging = {
            "cursors": {
                "before": _encode_cursor(start),
                "after": _encode_cursor(start + len(page)),
            }
        }
        if start + limit < len(templates):
            query = {
                **request.query,
                "after": paging["cursors"]["after"],
                "limit": str(limit),
            }
            paging["next"] = str(request.url.with_query(query))
        result["paging"] = paging
    return _json(result)


def _encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(str(position).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    if not cursor:
        return ""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        return base64.urlsafe_b64decode(padded).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("bad cursor") from None


# --- control API ----------------------------------------------------------------


class ControlError(Exception):
    def __init__(self, message: str, status: int = 400):
        self.message = message
        self.status = status
        super().__init__(message)


def control_endpoint(handler):
    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (ControlError, ValueError, KeyError, TypeError) as error:
            status = getattr(error, "status", 400)
            message = getattr(error, "message", None) or str(error)
            return _json({"error": message}, status)

    return wrapper


async def _control_json(request: web.Request) -> dict:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ControlError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    return body


def _number_or_404(sandbox: Sandbox, phone_number_id: str | None) -> Number:
    try:
        return sandbox.number_for(phone_number_id)
    except KeyError:
        raise ControlError(f"unknown phone_number_id {phone_number_id}", 404) from None


@control_endpoint
async def control_numbers(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    if request.method == "POST":
        number = Number.from_dict(await _control_json(request))
        sandbox.add_number(number)
        return _json(number.public_dict(), 201)
    return _json({"numbers": [n.public_dict() for n in sandbox.numbers.values()]})


@control_endpoint
async def control_config(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    config = sandbox.config
    if request.method == "PATCH":
        changes = await _control_json(request)
        unknown = set(changes) - {
            "webhook_url",
            "status_delays",
            "media_url_ttl",
            "window_error_mode",
            "helpdesk_url",
        }
        if unknown:
            raise ControlError(f"unknown settings: {', '.join(sorted(unknown))}")
        if "window_error_mode" in changes:
            if changes["window_error_mode"] not in {"sync", "webhook"}:
                raise ControlError("window_error_mode must be 'sync' or 'webhook'")
            config.window_error_mode = changes["window_error_mode"]
        if "webhook_url" in changes:
            config.webhook_url = str(changes["webhook_url"])
        if "helpdesk_url" in changes:
            config.helpdesk_url = str(changes["helpdesk_url"])
        if "media_url_ttl" in changes:
            config.media_url_ttl = float(changes["media_url_ttl"])
        if "status_delays" in changes:
            current = vars(config.status_delays)
            config.status_delays = StatusDelays.from_dict(
                {**current, **changes["status_delays"]}
            )
    return _json(
        {
            "webhook_url": config.webhook_url,
            "status_delays": vars(config.status_delays),
            "media_url_ttl": config.media_url_ttl,
            "window_error_mode": config.window_error_mode,
            "helpdesk_url": config.helpdesk_url,
        }
    )


@control_endpoint
async def control_faults(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    if request.method == "PUT":
        sandbox.faults = Faults.from_dict(await _control_json(request))
    elif request.method == "PATCH":
        sandbox.faults = Faults.from_dict(
            await _control_json(request), base=sandbox.faults
        )
    elif request.method == "DELETE":
        sandbox.faults = Faults()
    return _json(sandbox.faults.to_dict())


@control_endpoint
async def control_requests(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    after = int(request.query.get("after", 0))
    path = request.query.get("path", "")
    items = [r for r in sandbox.requests if r["seq"] > after and path in r["path"]]
    limit = int(request.query.get("limit", 1000))
    return _json({"requests": items[-limit:], "total": sandbox.request_count})


@control_endpoint
async def control_stats(request: web.Request) -> web.Response:
    return _json(_sandbox(request).stats_dict())


@control_endpoint
async def control_reset(request: web.Request) -> web.Response:
    await _sandbox(request).reset()
    return _json({"reset": True})


@control_endpoint
async def control_messages(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    wa_id = request.query.get("wa_id", "")
    items = [
        message.public_dict()
        for message in sandbox.outbound.values()
        if not wa_id or message.wa_id == wa_id
    ]
    return _json({"messages": items})


@control_endpoint
async def control_webhooks(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    after = int(request.query.get("after", 0))
    items = [w for w in sandbox.webhooks if w["seq"] > after]
    return _json({"webhooks": items, "total": sandbox.webhook_count})


@control_endpoint
async def control_customers(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    if request.method == "POST":
        body = await _control_json(request)
        wa_id = recipient_wa_id(str(body.get("wa_id", "")))
        if not wa_id:
            raise ControlError("a customer needs a wa_id (digits)")
        customer = sandbox.customer(
            wa_id, body.get("name", ""), body.get("user_id", "")
        )
        return _json(customer.public_dict(), 201)
    return _json({"customers": [c.public_dict() for c in sandbox.customers.values()]})


@control_endpoint
async def control_customer_message(request: web.Request) -> web.Response:
    """Build a customer's message as Meta would, sign it, post it, report the status."""
    sandbox = _sandbox(request)
    description = await _control_json(request)
    wa_id = recipient_wa_id(request.match_info["wa_id"])
    number = _number_or_404(sandbox, description.pop("phone_number_id", None))
    customer = sandbox.customer(
        wa_id, description.pop("name", ""), description.pop("user_id", "")
    )
    try:
        identity.apply_description(customer, description)
        message = sandbox.build_customer_message(number, customer, description)
    except (DescriptionError, ValueError) as error:
        raise ControlError(str(error)) from None
    sandbox.receive_customer_message(number, customer, message)
    value = sandbox.customer_value(number, customer, [message])
    payload = payloads.envelope([(number, "messages", value)])
    sandbox.publish(
        "customer_message",
        phone_number_id=number.phone_number_id,
        wa_id=wa_id,
        name=customer.name,
        message=message,
    )
    status = await sandbox.post_webhook(number, payload, "message")
    return _json(
        {"wamid": message["id"], "webhook_status": status, "payload": payload}, 201
    )


@control_endpoint
async def control_business_app_message(request: web.Request) -> web.Response:
    """The business writes to a customer from its WhatsApp Business app."""
    sandbox = _sandbox(request)
    body = await _control_json(request)
    number = _number_or_404(sandbox, body.get("phone_number_id"))
    customer = sandbox.customer(recipient_wa_id(request.match_info["wa_id"]))
    wamid, value = business_app.echo_value(number, customer, text=str(body["text"]))
    payload = payloads.envelope([(number, "smb_message_echoes", value)])
    status = await sandbox.post_webhook(number, payload, "echo")
    return _json({"wamid": wamid, "webhook_status": status, "payload": payload}, 201)


@control_endpoint
async def control_history(request: web.Request) -> web.Response:
    """The business shares its app's past chat with a customer (Meta's
    `history` webhook); `messages` names them, or a sample is shared."""
    sandbox = _sandbox(request)
    body = await _control_json(request)
    number = _number_or_404(sandbox, body.get("phone_number_id"))
    customer = sandbox.customer(recipient_wa_id(request.match_info["wa_id"]))
    try:
        past, value = business_app.history_value(
            number, customer, list(body.get("messages") or business_app.SAMPLE_HISTORY)
        )
    except (AttributeError, TypeError, ValueError) as error:
        raise ControlError(str(error)) from None
    sandbox.receive_history(number, customer, past)
    payload = payloads.envelope([(number, "history", value)])
    status = await sandbox.post_webhook(number, payload, "history")
    wamids = [message["id"] for message in past]
    return _json({"wamids": wamids, "webhook_status": status, "payload": payload}, 201)


@control_endpoint
async def control_batch(request: web.Request) -> web.Response:
    """Post many customer messages in one webhook: entries x changes x messages."""
    sandbox = _sandbox(request)
    body = await _control_json(request)
    changes = []
    wamids = []
    for change in body.get("changes") or []:
        number = _number_or_404(sandbox, change.get("phone_number_id"))
        messages, customers = [], {}
        for description in change.get("messages") or []:
            description = dict(description)
            wa_id = recipient_wa_id(str(description.pop("from", "")))
            if not wa_id:
                raise ControlError("each batched message needs a 'from' wa_id")
            customer = sandbox.customer(
                wa_id, description.pop("name", ""), description.pop("user_id", "")
            )
            try:
                message = sandbox.build_customer_message(number, customer, description)
            except DescriptionError as error:
                raise ControlError(str(error)) from None
            sandbox.receive_customer_message(number, customer, message)
            customers[customer.wa_id] = customer
            messages.append(message)
            wamids.append(message["id"])
        contacts = [identity.webhook_contact(c) for c in customers.values()]
        changes.append(
            (number, "messages", payloads.inbound_value(number, contacts, messages))
        )
    if not changes:
        raise ControlError("a batch needs at least one change with messages")
    payload = payloads.envelope(changes)
    status = await sandbox.post_webhook(changes[0][0], payload, "batch")
    return _json({"wamids": wamids, "webhook_status": status, "payload": payload}, 201)


@control_endpoint
async def control_windows(request: web.Request) -> web.Response:
    """Open (or close, with hours_ago >= 24) customers' service windows directly."""
    sandbox = _sandbox(request)
    body = await _control_json(request)
    number = _number_or_404(sandbox, body.get("phone_number_id"))
    opened_at = time.time() - float(body.get("hours_ago", 0)) * 3600
    wa_ids = [recipient_wa_id(str(wa_id)) for wa_id in body.get("wa_ids") or []]
    for wa_id in wa_ids:
        customer = sandbox.customer(wa_id)
        customer.last_inbound_at[number.phone_number_id] = opened_at
        if body.get("referral"):
            customer.referral_at[number.phone_number_id] = opened_at
    return _json({"opened": len(wa_ids), "opened_at": opened_at})


@control_endpoint
async def control_templates(request: web.Request) -> web.Response:
    sandbox = _sandbox(request)
    waba_id = request.query.get("waba_id") or sandbox.default_number().waba_id
    if request.method == "POST":
        body = await _control_json(request)
        waba_id = body.pop("waba_id", waba_id)
        return _json(sandbox.templates.put(waba_id, body), 201)
    return _json({"waba_id": waba_id, "templates": sandbox.templates.for_waba(waba_id)})


@control_endpoint
async def control_template_status(request: web.Request) -> web.Response:
    """Change a template's status and post Meta's message_template_status_update."""
    sandbox = _sandbox(request)
    body = await _control_json(request)
    number = _number_or_404(sandbox, body.get("phone_number_id"))
    name = request.match_info["name"]
    language = body.get("language", "en")
    template = sandbox.templates.find(number.waba_id, name, language)
    if template is None:
        raise ControlError(f"no template {name} in {language}", 404)
    event = str(body.get("status", "")).upper()
    if not event:
        raise ControlError("a status is needed, e.g. APPROVED, PAUSED, REJECTED")
    reason = body.get("reason", "NONE" if event != "REJECTED" else "INCORRECT_CATEGORY")
    # A REINSTATED template is approved again; other events are its new status.
    template["status"] = "APPROVED" if event == "REINSTATED" else event
    value = payloads.template_status_value(template, event, reason)
    payload = payloads.envelope([(number, "message_template_status_update", value)])
    status = await sandbox.post_webhook(number, payload, "template_status")
    return _json({"template": template, "webhook_status": status, "payload": payload})


@control_endpoint
async def control_upload(request: web.Request) -> web.Response:
    """Store a file a simulated customer will send (the phone page uploads here)."""
    sandbox = _sandbox(request)
    fields, upload = await _read_multipart(request)
    if upload is None:
        raise ControlError("a file is needed")
    number = _number_or_404(sandbox, fields.get("phone_number_id"))
    mime_type = upload["content_type"] or "application/octet-stream"
    media = sandbox.media.add(
        upload["data"], mime_type, number.phone_number_id, upload["filename"]
    )
    return _json(
        {"id": media.id, "mime_type": media.mime_type, "filename": media.filename}, 201
    )


@control_endpoint
async def control_media_content(request: web.Request) -> web.Response:
    """The bytes of stored media, for the phone page (no token: local use only)."""
    media = _sandbox(request).media.get(request.match_info["media_id"])
    if media is None:
        raise ControlError("no such media", 404)
    return web.Response(
        body=media.data,
        content_type=media.mime_type.split(";")[0],
        headers={"Content-Disposition": "inline", "X-Content-Type-Options": "nosniff"},
    )


@control_endpoint
async def control_events(request: web.Request) -> web.Response:
    after = int(request.query.get("after", 0))
    timeout = min(float(request.query.get("timeout", 25)), 60.0)
    events = await _sandbox(request).events_after(after, timeout)
    return _json({"events": events})


@control_endpoint
async def control_verify_webhook(request: web.Request) -> web.Response:
    """Run Meta's GET handshake against the webhook URL, as the dashboard does."""
    sandbox = _sandbox(request)
    body = await _control_json(request)
    number = _number_or_404(sandbox, body.get("phone_number_id"))
    url = sandbox.webhook_url_for(number)
    if not url:
        raise ControlError("no webhook URL configured")
    challenge = str(int(time.time() * 1000) % 10**10)
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": body.get("verify_token", number.verify_token),
        "hub.challenge": challenge,
    }
    async with sandbox.session.get(url, params=params) as response:
        text = await response.text()
        return _json(
            {
                "status": response.status,
                "verified": response.status == 200 and text == challenge,
            }
        )


@control_endpoint
async def control_business_clock(request: web.Request) -> web.Response:
    """The helpdesk's business clock for a number: GET reads it, POST moves
    it (`at`, `jump`, `reset`), forwarded signed (sandbox/clock.py)."""
    sandbox = _sandbox(request)
    if request.method == "GET":
        body = {"phone_number_id": request.query.get("phone_number_id")}
    else:
        body = await _control_json(request)
    number = _number_or_404(sandbox, body.get("phone_number_id"))
    status, answer = await clock.forward(sandbox, number, body)
    return _json(answer, status)


# --- the customer phone page ------------------------------------------------------


async def phone_page(request: web.Request) -> web.Response:
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html", charset="utf-8")


# --- application ----------------------------------------------------------------


@web.middleware
async def security_headers(request: web.Request, handler):
    response = await handler(request)
    if request.path == "/" or request.path.startswith("/static/"):
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' blob: data:; object-src 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@web.middleware
async def remember_changes(request: web.Request, handler):
    """Whatever a request may have changed is kept in the state file (soon)."""
    try:
        return await handler(request)
    finally:
        if request.method != "GET":
            _sandbox(request).remember()


def create_app(config: SandboxConfig) -> web.Application:
    sandbox = Sandbox(config)
    app = web.Application(
        client_max_size=MAX_UPLOAD + 1024 * 1024,
        middlewares=[security_headers, remember_changes],
    )
    app[SANDBOX_KEY] = sandbox

    async def stop(app):
        await sandbox.close()

    app.on_cleanup.append(stop)
    control = [
        ("*", "/_sandbox/numbers", control_numbers),
        ("*", "/_sandbox/config", control_config),
        ("*", "/_sandbox/faults", control_faults),
        ("GET", "/_sandbox/requests", control_requests),
        ("GET", "/_sandbox/stats", control_stats),
        ("POST", "/_sandbox/reset", control_reset),
        ("GET", "/_sandbox/messages", control_messages),
        ("GET", "/_sandbox/webhooks", control_webhooks),
        ("POST", "/_sandbox/webhooks/batch", control_batch),
        ("*", "/_sandbox/customers", control_customers),
        ("POST", "/_sandbox/customers/{wa_id}/messages", control_customer_message),
        ("POST", "/_sandbox/customers/{wa_id}/echoes", control_business_app_message),
        ("POST", "/_sandbox/customers/{wa_id}/history", control_history),
        ("POST", "/_sandbox/windows", control_windows),
        ("*", "/_sandbox/templates", control_templates),
        ("POST", "/_sandbox/templates/{name}/status", control_template_status),
        ("POST", "/_sandbox/media", control_upload),
        ("GET", "/_sandbox/media/{media_id}", control_media_content),
        ("GET", "/_sandbox/events", control_events),
        ("POST", "/_sandbox/verify-webhook", control_verify_webhook),
        ("*", "/_sandbox/business-clock", control_business_clock),
    ]
    for method, path, handler in control:
        app.router.add_route(method, path, handler)
    app.router.add_get("/", phone_page)
    app.router.add_static("/static/", STATIC_DIR)
    app.router.add_get("/whatsapp_business/attachments/", download_media)
    app.router.add_post(f"/{VERSION}/{{phone_number_id}}/messages", send_message)
    app.router.add_post(f"/{VERSION}/{{phone_number_id}}/media", upload_media)
    app.router.add_get(f"/{VERSION}/{{waba_id}}/message_templates", list_templates)
    app.router.add_get(f"/{VERSION}/{{object_id}}", graph_object)
    app.router.add_delete(f"/{VERSION}/{{object_id}}", delete_media)
    return app


async def start_server(config: SandboxConfig, host: str = "127.0.0.1", port: int = 0):
    """Start the sandbox in the running loop; return (runner, base_url)."""
    app = create_app(config)
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    base_url = f"http://{host}:{bound_port}"
    # Media URLs point back at the sandbox, so it needs its own address.
    await app[SANDBOX_KEY].start(base_url)
    return runner, base_url
