"""ASGI entry point: webhooks to their lean endpoint, other HTTP to Django,
WebSockets to Channels consumers."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
# Tells settings to use a connection pool: every ASGI request runs in a fresh
# thread, and persistent per-thread connections would leak.
os.environ.setdefault("HELPDESK_PROCESS", "asgi")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from conversations.routing import websocket_urlpatterns  # noqa: E402
from conversations.uploads import BodyLimit  # noqa: E402
from conversations.whatsapp.webhooks import (  # noqa: E402
    WebhookEndpoint,
    route_webhooks,
)

# Meta's webhooks skip Django: the endpoint is a lean ASGI app of its own
# (conversations/whatsapp/webhooks.py explains why).
application = route_webhooks(
    WebhookEndpoint(),
    ProtocolTypeRouter(
        {
            # Uploads are read up to their limit, never all of them.
            "http": BodyLimit(django_asgi_app),
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
        }
    ),
)

# What start-up loaded (Django, the URLconf, every module) is never garbage.
# Frozen, it is left out of the collector's full passes, which otherwise walk
# it several times per page and made the slowest page loads (measured with
# 100,000 conversations: p95 of the conversation page 112 -> 72 ms).
gc.freeze()
