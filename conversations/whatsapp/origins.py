"""Where the Graph API client may send a number's access token, and which
values may go into a URL path. Pure rules, no I/O; settings are read at call
time.

The token goes to the Graph API's origin (WHATSAPP_GRAPH_API_URL) and, for
media downloads, to the origins Meta serves media from (WHATSAPP_MEDIA_HOSTS:
``lookaside.fbsbx.com`` in production; the sandbox's origin in development
and tests, by configuration). An origin is compared whole: scheme, host and
port, so neither plain HTTP nor another port of an allowed host passes, nor
a URL that names an allowed host in its userinfo.
"""

import re
from urllib.parse import urlsplit

from django.conf import settings

# A Graph object id (a phone number, a WABA, a media): ASCII digits, far
# shorter than this (Meta's are 64-bit numbers).
GRAPH_ID = re.compile(r"[0-9]{1,32}")
DEFAULT_PORTS = {"https": 443, "http": 80}

Origin = tuple[str, str, int | None]


def origin(url: str) -> Origin:
    """(scheme, host, port) of a URL, the port filled in for http and https."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def graph_origin() -> Origin:
    return origin(settings.WHATSAPP_GRAPH_API_URL)


def media_origins() -> set[Origin]:
    """WHATSAPP_MEDIA_HOSTS: a bare host means HTTPS on 443; an entry with a
    scheme (the sandbox's "http://127.0.0.1:8001") is that origin exactly."""
    return {
        origin(entry if "://" in entry else f"https://{entry}")
        for entry in settings.WHATSAPP_MEDIA_HOSTS
    }


def is_graph_id(value) -> bool:
    return isinstance(value, str) and GRAPH_ID.fullmatch(value) is not None
