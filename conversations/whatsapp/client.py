"""The one module that calls Meta's Graph API (WhatsApp Cloud API) over HTTP.

Every call takes the WhatsAppNumber whose bearer token and phone-number id it
uses, and answers with a small result dataclass or raises a typed error:

- ``GraphAPIError``: Meta answered with an error object (or a bare HTTP
  error). ``retryable`` says whether trying again later can succeed and
  ``stops_number`` whether the number's sending must pause for an admin.
- ``ConnectionFailed`` (a GraphAPIError with ``retryable`` True): the request
  never reached Meta (DNS, refused, connect timeout), so it was not sent.
- ``AcceptedButUnknown``: the request was written but no answer came (read
  timeout, connection dropped mid-answer). Meta may have accepted it; a send
  must not be repeated blindly.
- ``UntrustedURL`` and ``InvalidId`` (GraphAPIErrors, never retryable): the
  request was refused here, before the token went anywhere.

Every request with a token is checked against origins.py first: the Graph
API's origin, or for media downloads the origins Meta serves media from, so
a URL from Meta's answer (a media URL, a page of templates) cannot take the
token elsewhere. Redirects are never followed, and ids go into a path only
if they are Graph ids.

One ``requests.Session`` per process is shared by all threads: urllib3's
connection pool is thread-safe, and its size follows the delivery
concurrency so that each in-flight request keeps its connection alive.
Headers are passed per request, never stored on the session, so threads
sending for different numbers never see each other's tokens. The session
reads the environment (proxies, CA bundle) once, when it is created, and a
send copies a request prepared once per number and token: requests' own
per-call work was a third of a delivery worker's CPU.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
import urllib3.exceptions as u3
from django.conf import settings
from requests.adapters import HTTPAdapter

from . import origins

logger = logging.getLogger(__name__)

# Graph codes after which trying again later can succeed (Meta's Cloud API
# error-code reference). 131056 is per recipient: only that customer waits.
RETRYABLE_CODES = frozenset(
    {1, 2, 4, 80007, 130429, 131000, 131016, 131056, 131057, 133004, 134101}
)
# Codes that say nothing was sent and the whole number must slow down.
THROUGHPUT_CODE = 130429
PAIR_RATE_CODE = 131056
# Codes that stop every send of a number until an admin acts: the token is
# expired or invalid, the account is locked, blocked or has a billing problem.
NUMBER_STOPPING_CODES = frozenset({0, 190, 368, 131031, 131042})
# Template codes that pause or disable the template locally.
TEMPLATE_PAUSED_CODE = 132015
TEMPLATE_DISABLED_CODE = 132016

# Maximum sizes of media per kind (Cloud API doc section 3.5), and the MIME
# types Meta accepts for each.
MEDIA_LIMITS: dict[str, tuple[int, frozenset[str]]] = {
    "audio": (
        16 * 1024 * 1024,
        frozenset({"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"}),
    ),
    "document": (
        100 * 1024 * 1024,
        frozenset(
            {
                "text/plain",
                "application/pdf",
                "application/msword",
                "application/vnd.openxmlformats-officedocument."
                "wordprocessingml.document",
                "application/vnd.ms-excel",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "application/vnd.ms-powerpoint",
                "application/vnd.openxmlformats-officedocument."
                "presentationml.presentation",
            }
        ),
    ),
    "image": (5 * 1024 * 1024, frozenset({"image/jpeg", "image/png"})),
    "sticker": (500 * 1024, frozenset({"image/webp"})),
    "video": (16 * 1024 * 1024, frozenset({"video/mp4", "video/3gpp"})),
}
# Inbound files over 100 MB are never delivered by Meta.
DEFAULT_DOWNLOAD_LIMIT = 100 * 1024 * 1024


class Number(Protocol):
    """What the client needs of a WhatsAppNumber."""

    phone_number_id: str
    waba_id: str
    access_token: str


# --- Errors -------------------------------------------------------------------


class GraphAPIError(Exception):
    """Meta refused the request, or the request could not be made at all."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        title: str = "",
        details: str = "",
        fbtrace_id: str = "",
        http_status: int | None = None,
        error_type: str = "",
        is_transient: bool | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.subcode = subcode
        self.title = title
        self.details = details
        self.fbtrace_id = fbtrace_id
        self.http_status = http_status
        self.error_type = error_type
        self.is_transient = is_transient

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (nothing was sent)."""
        if self.code in RETRYABLE_CODES:
            return True
        if self.code is None and self.http_status is not None:
            return self.http_status >= 500 or self.http_status == 429
        return False

    @property
    def stops_number(self) -> bool:
        """Whether every send of the number must wait for an admin."""
        return self.code in NUMBER_STOPPING_CODES

    def as_dict(self) -> dict:
        """The error as stored on a message (Message.error)."""
        return {
            "code": self.code,
            "subcode": self.subcode,
            "title": self.title,
            "message": self.message,
            "details": self.details,
            "fbtrace_id": self.fbtrace_id,
            "http_status": self.http_status,
        }


class ConnectionFailed(GraphAPIError):
    """The request never reached Meta: it was certainly not sent."""

    @property
    def retryable(self) -> bool:
        return True


class AcceptedButUnknown(Exception):
    """The request went out but no answer came back: Meta may have accepted it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict:
        return {
            "code": None,
            "title": "No answer from Meta",
            "message": self.message,
            "details": "The request was sent but the answer never arrived; "
            "the message may or may not have been accepted.",
        }


class MediaTooLarge(GraphAPIError):
    """A download exceeded the caller's size cap."""


class UntrustedURL(GraphAPIError):
    """A URL (from Meta's answer) on an origin the token must not be sent to."""


class InvalidId(GraphAPIError):
    """A value that is not a Graph id, refused before it went into a path."""


# --- Results ------------------------------------------------------------------


@dataclass(frozen=True)
class SendResult:
    wamid: str
    # The recipient's wa_id as Meta resolved it (may differ from `to`).
    wa_id: str = ""
    # "accepted" or "held_for_quality_assessment" for paced templates.
    message_status: str = ""


@dataclass(frozen=True)
class MediaInfo:
    url: str
    mime_type: str
    sha256: str
    file_size: int | None
    id: str = ""


@dataclass(frozen=True)
class TemplatePage:
    templates: list[dict] = field(default_factory=list)
    next_url: str = ""


# --- Session ------------------------------------------------------------------

_session_lock = threading.Lock()
_session: requests.Session | None = None


def pool_size() -> int:
    """Connections kept per host: one per request the delivery keeps in flight."""
    return max(10, int(getattr(settings, "WHATSAPP_DELIVERY_CONCURRENCY", 100)) + 10)


def session() -> requests.Session:
    """The process's shared Session (created on first use, thread-safe)."""
    global _session
    if _session is None:
        with _session_lock:
            if _session is None:
                http = requests.Session()
                # The environment is read here once instead of on every
                # request (~6 % of a delivery worker's CPU went to proxy
                # lookups). An operator's HTTPS_PROXY / NO_PROXY (for the
                # Graph API's host) and CA bundle still apply; ~/.netrc does
                # not, as every call carries its own bearer token.
                http.trust_env = False
                http.proxies = requests.utils.get_environ_proxies(
                    settings.WHATSAPP_GRAPH_API_URL
                )
                http.verify = (
                    os.environ.get("REQUESTS_CA_BUNDLE")
                    or os.environ.get("CURL_CA_BUNDLE")
                    or True
                )
                adapter = HTTPAdapter(
                    pool_connections=4, pool_maxsize=pool_size(), max_retries=0
                )
                http.mount("https://", adapter)
                http.mount("http://", adapter)
                _session = http
    return _session


def reset_session() -> None:
    """Drop the shared Session (after a fork, or when settings change in tests)."""
    global _session
    with _session_lock:
        if _session is not None:
            _session.close()
        _session = None


def _base() -> str:
    return f"{settings.WHATSAPP_GRAPH_API_URL}/{settings.WHATSAPP_GRAPH_API_VERSION}"


def _timeout(read: float | None = None) -> tuple[float, float]:
    return (
        settings.WHATSAPP_GRAPH_API_CONNECT_TIMEOUT,
        read if read is not None else settings.WHATSAPP_GRAPH_API_TIMEOUT,
    )


def _headers(number: Number) -> dict[str, str]:
    return {"Authorization": f"Bearer {number.access_token}"}


def path_id(value: str, what: str) -> str:
    """`value` if it is a Graph id, to go into a URL path; else InvalidId."""
    if not origins.is_graph_id(value):
        raise InvalidId(
            f"The {what} {str(value)[:40]!r} is not a Graph id (digits only)",
            title="Invalid id",
        )
    return value


def _request(
    method: str,
    url: str,
    number: Number,
    *,
    read_timeout: float | None = None,
    stream: bool = False,
    allowed: set | None = None,
    **kwargs,
) -> requests.Response:
    """Make one request; map transport failures to the typed errors.

    The URL must be on the Graph API's origin, or on one of `allowed`.
    """
    if origins.origin(url) not in (allowed or {origins.graph_origin()}):
        raise UntrustedURL(
            f"{url[:200]!r} is not on an allowed origin; the token is not sent there",
            title="URL not allowed",
        )
    prepared = session().prepare_request(
        requests.Request(method, url, headers=_headers(number), **kwargs)
    )
    return _send_prepared(prepared, read_timeout=read_timeout, stream=stream)


def _send_prepared(
    prepared: requests.PreparedRequest,
    *,
    read_timeout: float | None = None,
    stream: bool = False,
) -> requests.Response:
    try:
        # A redirect would carry the bearer token to wherever it points.
        response = session().send(
            prepared,
            timeout=_timeout(read_timeout),
            stream=stream,
            allow_redirects=False,
        )
    except requests.exceptions.ConnectTimeout as error:
        raise ConnectionFailed(f"Connecting to Meta timed out: {error}") from error
    except requests.exceptions.ReadTimeout as error:
        raise AcceptedButUnknown(f"Meta did not answer in time: {error}") from error
    except requests.exceptions.ConnectionError as error:
        if _sent_before_failure(error):
            raise AcceptedButUnknown(
                f"The connection broke after the request was sent: {error}"
            ) from error
        raise ConnectionFailed(f"Could not reach Meta: {error}") from error
    except requests.exceptions.RequestException as error:
        raise ConnectionFailed(f"Request to Meta failed: {error}") from error
    if response.status_code >= 400:
        raise _error_from_response(response)
    if response.is_redirect:
        response.close()
        raise GraphAPIError(
            f"HTTP {response.status_code} redirect to "
            f"{response.headers.get('Location', '')[:200]!r}, not followed",
            http_status=response.status_code,
            title="Redirect not followed",
        )
    return response


def _sent_before_failure(error: requests.exceptions.ConnectionError) -> bool:
    """Whether a connection error happened after the request was written.

    urllib3 reports a failure to connect as NewConnectionError (or a name
    resolution error) wrapped in MaxRetryError; anything else (a reset or a
    closed connection while waiting for the answer, "RemoteDisconnected",
    ProtocolError) came after the request bytes went out.
    """
    reason = error.args[0] if error.args else None
    if isinstance(reason, u3.MaxRetryError):
        reason = reason.reason
    if isinstance(reason, u3.NewConnectionError | u3.ConnectTimeoutError):
        return False
    text = str(error)
    if "NewConnectionError" in text or "Failed to establish" in text:
        return False
    if "Name or service not known" in text or "nodename nor servname" in text:
        return False
    return True


def _error_from_response(response: requests.Response) -> GraphAPIError:
    try:
        data = response.json()
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return GraphAPIError(
            f"HTTP {response.status_code} from Meta",
            http_status=response.status_code,
            title=response.reason or "",
            details=response.text[:500],
            fbtrace_id=response.headers.get("x-fb-trace-id", ""),
        )
    error_data = error.get("error_data") or {}
    details = error_data.get("details", "") if isinstance(error_data, dict) else ""
    code = error.get("code")
    message = str(error.get("message", ""))
    return GraphAPIError(
        message or f"Graph API error {code}",
        code=int(code) if isinstance(code, int | str) and str(code).isdigit() else None,
        subcode=error.get("error_subcode"),
        title=str(error.get("error_user_title") or _title(message)),
        details=str(details or error.get("error_user_msg") or ""),
        fbtrace_id=str(
            error.get("fbtrace_id") or response.headers.get("x-fb-trace-id", "")
        ),
        http_status=response.status_code,
        error_type=str(error.get("type", "")),
        is_transient=error.get("is_transient"),
    )


def _title(message: str) -> str:
    """Meta's message reads "(#130429) Rate limit hit": the part after the code."""
    if message.startswith("(#") and ") " in message:
        return message.split(") ", 1)[1]
    return message


def _json(response: requests.Response) -> dict:
    try:
        data = response.json()
    except ValueError as error:
        raise GraphAPIError(
            "Meta's answer is not JSON",
            http_status=response.status_code,
            details=response.text[:500],
        ) from error
    if not isinstance(data, dict):
        raise GraphAPIError("Meta's answer is not a JSON object")
    return data


# --- Sending ------------------------------------------------------------------


def messages_url(number: Number) -> str:
    return f"{_base()}/{path_id(number.phone_number_id, 'phone number id')}/messages"


def addressee(*, wa_id: str = "", user_id: str = "") -> dict[str, str]:
    """Who a send goes to, as Meta asks since usernames: ``to`` with the
    phone when it is known (Meta keeps the phone in webhooks only while it is
    messaged), else ``recipient`` with the business-scoped user id. A BSUID
    never goes in ``to``."""
    if wa_id:
        return {"to": f"+{wa_id}"}
    if user_id:
        return {"recipient": user_id}
    raise ValueError("A send needs the customer's wa_id or business-scoped user id.")


def build_message(
    *,
    wa_id: str = "",
    user_id: str = "",
    type: str,  # noqa: A002 - Meta's field name
    content: Any,
    context_message_id: str = "",
    callback_data: str = "",
) -> dict:
    """The JSON body of a send: Meta's common fields plus the type's object."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **addressee(wa_id=wa_id, user_id=user_id),
        "type": type,
        type: content,
    }
    if context_message_id and type != "reaction":
        body["context"] = {"message_id": context_message_id}
    if callback_data:
        body["biz_opaque_callback_data"] = callback_data
    return body


@functools.lru_cache(maxsize=64)
def _message_post(url: str, access_token: str) -> requests.PreparedRequest:
    """A send's POST without its body, for send_message to copy: the URL is
    parsed and the headers are built once per number and token."""
    return requests.Request(
        "POST",
        url,
        headers={
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json",
        },
    ).prepare()


def send_message(number: Number, body: dict) -> SendResult:
    """POST a prepared message body; the answer's wamid, or a typed error."""
    prepared = _message_post(messages_url(number), number.access_token).copy()
    prepared.prepare_body(data=None, files=None, json=body)
    response = _send_prepared(prepared)
    try:
        data = response.json()
    except ValueError as error:
        # Meta answered 200 but the body is unreadable: it accepted the send.
        raise AcceptedButUnknown("Meta's answer to a send was not JSON") from error
    messages = data.get("messages") or [{}]
    contacts = data.get("contacts") or [{}]
    wamid = messages[0].get("id", "")
    if not wamid:
        raise AcceptedButUnknown("Meta's answer to a send had no message id")
    return SendResult(
        wamid=wamid,
        wa_id=contacts[0].get("wa_id", ""),
        message_status=messages[0].get("message_status", ""),
    )


def _send(number: Number, to: str, kind: str, content, **options) -> SendResult:
    # `to` here is a phone ("+4917...") or a BSUID ("US.1349..."): each goes
    # in its own field.
    digits = to.removeprefix("+")
    ids = {"wa_id": digits} if digits.isdigit() else {"user_id": to}
    return send_message(
        number, build_message(**ids, type=kind, content=content, **options)
    )


def send_text(
    number: Number, to: str, text: str, *, preview_url: bool = False, **options
) -> SendResult:
    return _send(
        number, to, "text", {"body": text, "preview_url": preview_url}, **options
    )


def send_media(
    number: Number,
    to: str,
    kind: str,
    *,
    media_id: str = "",
    link: str = "",
    caption: str = "",
    filename: str = "",
    voice: bool = False,
    **options,
) -> SendResult:
    return _send(
        number,
        to,
        kind,
        media_object(
            kind,
            media_id=media_id,
            link=link,
            caption=caption,
            filename=filename,
            voice=voice,
        ),
        **options,
    )


def media_object(
    kind: str,
    *,
    media_id: str = "",
    link: str = "",
    caption: str = "",
    filename: str = "",
    voice: bool = False,
) -> dict:
    """A media type's object: an uploaded id or an HTTPS link, never both."""
    if bool(media_id) == bool(link):
        raise ValueError("A media send needs exactly one of an id or a link")
    content: dict[str, Any] = {"id": media_id} if media_id else {"link": link}
    if caption and kind in {"image", "video", "document"}:
        content["caption"] = caption
    if filename and kind == "document":
        content["filename"] = filename
    if voice and kind == "audio":
        content["voice"] = True
    return content


def send_template(
    number: Number, to: str, name: str, language: str, components: list, **options
) -> SendResult:
    content = {
        "name": name,
        "language": {"code": language, "policy": "deterministic"},
        "components": components,
    }
    return _send(number, to, "template", content, **options)


def send_interactive(number: Number, to: str, interactive: dict, **options):
    return _send(number, to, "interactive", interactive, **options)


def send_reaction(
    number: Number, to: str, message_id: str, emoji: str, **options
) -> SendResult:
    """React to a message; an empty emoji removes our reaction."""
    options.pop("context_message_id", None)
    return _send(
        number, to, "reaction", {"message_id": message_id, "emoji": emoji}, **options
    )


def send_location(number: Number, to: str, location: dict, **options) -> SendResult:
    return _send(number, to, "location", location, **options)


def send_contacts(number: Number, to: str, contacts: list, **options) -> SendResult:
    return _send(number, to, "contacts", contacts, **options)


def mark_read(number: Number, message_id: str) -> bool:
    """Mark a customer's message (and the ones before it) as read."""
    body = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
    data = _json(_request("POST", messages_url(number), number, json=body))
    return bool(data.get("success"))


def send_typing_indicator(number: Number, message_id: str) -> bool:
    """Show "typing…" to the customer (also marks the message read)."""
    body = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": message_id,
        "typing_indicator": {"type": "text"},
    }
    data = _json(_request("POST", messages_url(number), number, json=body))
    return bool(data.get("success"))


# --- Media --------------------------------------------------------------------


def check_media(kind: str, mime_type: str, size: int) -> None:
    """Refuse a file Meta would refuse (doc section 3.5); ValueError says why."""
    if kind not in MEDIA_LIMITS:
        raise ValueError(f"{kind!r} is not a media kind")
    limit, types = MEDIA_LIMITS[kind]
    base_type = mime_type.split(";")[0].strip().lower()
    if base_type not in types:
        raise ValueError(
            f"{kind} files must be one of {', '.join(sorted(types))}, not {base_type}"
        )
    if size > limit:
        raise ValueError(f"{kind} files may be at most {limit // 1024} KB")


def upload_media(
    number: Number,
    data: bytes,
    mime_type: str,
    filename: str = "file",
    *,
    kind: str | None = None,
) -> str:
    """Upload a file for this number; Meta's media id (valid 30 days)."""
    if kind is not None:
        check_media(kind, mime_type, len(data))
    response = _request(
        "POST",
        f"{_base()}/{path_id(number.phone_number_id, 'phone number id')}/media",
        number,
        data={"messaging_product": "whatsapp", "type": mime_type},
        files={"file": (filename, data, mime_type)},
    )
    media_id = _json(response).get("id", "")
    if not media_id:
        raise GraphAPIError("Meta's answer to an upload had no media id")
    return str(media_id)


def retrieve_media(number: Number, media_id: str) -> MediaInfo:
    """Where to download a media id from (the URL expires after 5 minutes)."""
    data = _json(
        _request(
            "GET",
            f"{_base()}/{path_id(media_id, 'media id')}",
            number,
            params={"phone_number_id": number.phone_number_id},
        )
    )
    size = data.get("file_size")
    return MediaInfo(
        url=str(data.get("url", "")),
        mime_type=str(data.get("mime_type", "")),
        sha256=str(data.get("sha256", "")),
        file_size=int(size) if size not in (None, "") else None,
        id=str(data.get("id", media_id)),
    )


def download_media(
    number: Number, url: str, *, max_bytes: int = DEFAULT_DOWNLOAD_LIMIT
) -> bytes:
    """Download a media URL with the number's token; at most max_bytes.

    Only from an origin Meta serves media from (WHATSAPP_MEDIA_HOSTS), else
    UntrustedURL before any request. A 404 means the URL expired: call
    retrieve_media again for a fresh one.
    """
    try:
        response = _request(
            "GET", url, number, stream=True, allowed=origins.media_origins()
        )
    except AcceptedButUnknown as error:
        # A download changes nothing at Meta: a lost answer is just a failure.
        raise ConnectionFailed(error.message) from error
    with response:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise MediaTooLarge(
                f"The file is {declared} bytes, over the cap of {max_bytes}",
                http_status=response.status_code,
            )
        chunks, total = [], 0
        try:
            for chunk in response.iter_content(64 * 1024):
                total += len(chunk)
                if total > max_bytes:
                    raise MediaTooLarge(
                        f"The file is over the cap of {max_bytes} bytes",
                        http_status=response.status_code,
                    )
                chunks.append(chunk)
        except requests.exceptions.RequestException as error:
            raise ConnectionFailed(f"The download broke off: {error}") from error
    return b"".join(chunks)


# --- Templates ----------------------------------------------------------------


def list_templates_page(
    number: Number, url: str = "", limit: int = 100
) -> TemplatePage:
    """One page of the WABA's templates; follow next_url for the rest.

    A next_url from Meta's answer is fetched only on the Graph API's origin.
    """
    if url:
        response = _request("GET", url, number)
    else:
        response = _request(
            "GET",
            f"{_base()}/{path_id(number.waba_id, 'WABA id')}/message_templates",
            number,
            params={"limit": limit},
        )
    data = _json(response)
    return TemplatePage(
        templates=list(data.get("data") or []),
        next_url=str((data.get("paging") or {}).get("next") or ""),
    )


def list_templates(number: Number, limit: int = 100) -> Iterator[dict]:
    """Every template of the number's WABA, page after page."""
    page = list_templates_page(number, limit=limit)
    yield from page.templates
    seen = set()
    while page.next_url and page.next_url not in seen:
        seen.add(page.next_url)
        page = list_templates_page(number, page.next_url)
        yield from page.templates


def describe(body: dict) -> str:
    """A log-safe one-line description of a request body (no secrets in it)."""
    return json.dumps({k: body.get(k) for k in ("to", "recipient", "type")})
