"""Uploads refused by their size as they arrive, never after.

Four requests carry a file: the workspace composer's attachment, the REST
API's reply with a file, the notifications' header media and the admin's CSV
of bulk notifications. Each view names its kind of upload, whose limit is in
LIMITS (settings.UPLOAD_LIMITS overrides), and three checks keep a request
past it from being read:

- ``BodyLimit``, in front of Django (helpdesk/asgi.py): Django's ASGI handler
  reads a whole body, to memory and then to a temporary file, before any view
  runs. For a view that takes an upload it hands Django nothing of a body
  whose Content-Length is over the limit, and stops reading a body sent
  without one (chunked) when it grows past it.
- ``SizeLimitedUploadHandler``, the first of the request's upload handlers:
  it refuses a Content-Length over the limit before a byte is parsed, and
  counts the file's bytes as they stream, stopping the parse (StopUpload, the
  rest left unread) as soon as they pass it.
- a refused upload is answered 413 the view's way: ``accepts_upload`` calls
  the view's ``refuse`` function instead of the view; the API's parser
  raises ``RequestTooLarge`` (conversations/api/uploads.py).

CsrfViewMiddleware reads a POST's body before any view runs, with Django's
handlers, so a view that takes an upload is exempt from the middleware:
``accepts_upload`` puts the handler in place, then checks CSRF itself before
the view acts. A refusal acts on nothing, and needs no CSRF token: the token
of a form would be in the body left unread. The API checks CSRF in its
authentication (DRF's SessionAuthentication), through its own parser.
"""

import asyncio
from functools import wraps

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import QueryDict
from django.template.defaultfilters import filesizeformat
from django.urls import Resolver404, resolve
from django.utils.datastructures import MultiValueDict
from django.views.decorators.csrf import csrf_protect

MB = 1024 * 1024
# The largest file of each kind of upload, in bytes.
LIMITS = {
    # The workspace's attachment: Meta takes videos and audio up to 16 MB.
    "composer": 16 * MB,
    # The API's reply with a file, and a notification's header (documents
    # go up to Meta's 100 MB).
    "api_reply": 100 * MB,
    "header_media": 100 * MB,
    # Bulk notifications: some 200,000 rows.
    "csv": 20 * MB,
}
# What an upload's other fields add to its body: the multipart boundaries
# and headers, a caption, a file name, the CSRF token.
FORM_ALLOWANCE = 64 * 1024
# Set in the ASGI scope when BodyLimit passed Django less than the client sent.
BODY_CUT = "helpdesk.upload_body_cut"


def upload_limit(kind: str) -> int:
    """The largest file of an upload of this kind, in bytes."""
    return {**LIMITS, **settings.UPLOAD_LIMITS}[kind]


def body_limit(kind: str) -> int:
    """The largest request body an upload of this kind may have."""
    return upload_limit(kind) + FORM_ALLOWANCE


def refusal_text(kind: str) -> str:
    size = filesizeformat(upload_limit(kind)).replace("\xa0", " ")
    return f"That file is too large: at most {size}."


def body_was_cut(request) -> bool:
    """Whether BodyLimit stopped reading this request's body."""
    return bool(getattr(request, "scope", {}).get(BODY_CUT))


def declared_length(request) -> int:
    """The body's Content-Length (0 when absent or not a number)."""
    value = request.META.get("CONTENT_LENGTH") or ""
    return int(value) if value.isdigit() else 0


class SizeLimitedUploadHandler(FileUploadHandler):
    """Counts an upload's file bytes as they arrive; past the limit, stops
    the parse and leaves the rest of the body unread."""

    def __init__(self, request, limit: int):
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.too_large = False

    def handle_raw_input(
        self, input_data, META, content_length, boundary, encoding=None
    ):
        if content_length > self.limit + FORM_ALLOWANCE or body_was_cut(self.request):
            # Refused by what the body says it is: nothing of it is read.
            self.too_large = True
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def receive_data_chunk(self, raw_data, start):
        # Every file of the request counts towards the one limit.
        self.received += len(raw_data)
        if self.received > self.limit:
            self.too_large = True
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size):
        return None  # the handlers after this one keep the file


def limit_upload(request, kind: str) -> SizeLimitedUploadHandler:
    """Put the size-limited handler first among the request's upload handlers
    (before anything reads its body)."""
    handler = SizeLimitedUploadHandler(request, upload_limit(kind))
    request.upload_handlers.insert(0, handler)
    return handler


def too_large(request, kind: str) -> bool:
    """Whether the request's upload is past the limit of its kind: by what
    the body says it is, or else as its file streams through the handler
    (this parses the body if nothing did yet)."""
    if body_was_cut(request) or declared_length(request) > body_limit(kind):
        return True
    request.FILES  # noqa: B018 - parsed now, through the handlers
    return any(
        getattr(handler, "too_large", False) for handler in request.upload_handlers
    )


def accepts_upload(kind: str, *, refuse):
    """Decorate a view that takes a file of this kind. Its upload is counted
    as it arrives; past the kind's limit `refuse` (called with the view's
    arguments) answers instead of the view, and otherwise the view runs
    after the CSRF check. Put it inside login_required, so that nobody's
    body is read before they are known."""

    def decorate(view):
        protected = csrf_protect(view)

        @wraps(view)
        def limited(request, *args, **kwargs):
            limit_upload(request, kind)
            if too_large(request, kind):
                return refuse(request, *args, **kwargs)
            return protected(request, *args, **kwargs)

        # CsrfViewMiddleware would read the body first, without the limit.
        limited.csrf_exempt = True
        limited.upload_kind = kind
        return limited

    return decorate


def upload_kind_of(path: str) -> str | None:
    """The kind of upload the view at this path takes, if any: a function
    view's (accepts_upload), or an API view's upload_kind attribute."""
    try:
        view = resolve(path).func
    except Resolver404:
        return None
    kind = getattr(view, "upload_kind", None)
    return kind or getattr(getattr(view, "view_class", None), "upload_kind", None)


def has_body(scope) -> bool:
    """Whether the request announces a body (most requests do not, and are
    passed on without resolving their path)."""
    headers = dict(scope.get("headers", ()))
    length = headers.get(b"content-length", b"").strip()
    return length not in (b"", b"0") or b"transfer-encoding" in headers


def scope_path(scope) -> str:
    """The path Django resolves: the scope's, less the root path."""
    return scope["path"].removeprefix(scope.get("root_path") or "")


class BodyLimit:
    """ASGI middleware in front of Django: a request to a view that takes an
    upload is read up to that upload's body limit, and no further."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        kind = None
        if scope["type"] == "http" and has_body(scope):
            kind = upload_kind_of(scope_path(scope))
        if kind is None:
            return await self.application(scope, receive, send)
        limited = LimitedReceive(scope, receive, body_limit(kind))
        return await self.application(scope, limited, send)


class LimitedReceive:
    """The body's messages up to `limit` bytes; past it, the end of the body,
    with BODY_CUT set in the scope for the view to answer 413."""

    def __init__(self, scope, receive, limit: int):
        self.scope = scope
        self.receive = receive
        self.limit = limit
        self.received = 0
        declared = dict(scope.get("headers", ())).get(b"content-length", b"")
        self.cut = declared.isdigit() and int(declared) > limit
        self.ended = False

    async def __call__(self):
        if not self.cut:
            message = await self.receive()
            if message["type"] != "http.request":
                return message
            self.received += len(message.get("body", b""))
            if self.received <= self.limit:
                return message
            self.cut = True
        if not self.ended:
            self.ended = True
            self.scope[BODY_CUT] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # Django listens for a disconnect until its answer is sent; the rest
        # of the body stays unread, and the server closes the connection.
        await asyncio.Future()
