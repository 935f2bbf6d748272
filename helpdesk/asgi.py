"""ASGI entry point: webhooks to their lean endpoint, other HTTP to Django,
WebSockets to Channels consumers."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
# Tells settings to use a connection pool: every ASGI request runs in a fresh
# thread, and persistent per-thread connections would leak.
os.environ.setdefault("HELPDESK_PROCESS", "asgi")

import django  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, its middleware and views run in one hop.

    Every view and middleware here is synchronous. Django's handler runs the
    middleware chain in the request's thread, comes back to the event loop
    for the URL and the view, and hops to the thread again for CSRF's
    process_view, the view, rendering the answer and logging a refusal:
    six crossings per API reply, each a hand-over between threads. Here the
    whole of BaseHandler.get_response (middleware, view, rendering, the log)
    is one call in the request's thread; only the request signals and
    closing the response remain outside it (docs/benchmarks.md, REST
    replies). Reading the body and sending the answer stay asynchronous.
    """

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


django.setup(set_prefix=False)
django_asgi_app = OneHopASGIHandler()

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
