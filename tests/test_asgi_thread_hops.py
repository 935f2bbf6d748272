"""A request through the ASGI application crosses between the event loop and
a thread a fixed, small number of times: the middleware and the view run
together in the request's thread, and no MiddlewareMixin runs in async mode
(each of its hooks would be a hop of its own)."""

import pytest
from asgiref import sync

from tests.test_uploads import asgi_on_the_test_connection, asgi_post  # noqa: F401

# Measured with Django 5.2 for a refused request: the request_started
# signal, BaseHandler.get_response (helpdesk.asgi.OneHopASGIHandler: the
# middleware, the view, rendering and logging the refusal in one call) and
# closing the response (request_finished). Django's own handler took 7, and
# 10 when messages and X-Frame-Options ran asynchronously inside the chain.
MAX_HOPS = 3


@pytest.mark.django_db
@pytest.mark.usefixtures("asgi_on_the_test_connection")
def test_an_api_request_hops_threads_a_fixed_number_of_times(monkeypatch, settings):
    settings.ALLOWED_HOSTS = ["testserver"]
    hops = []
    original = sync.SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        hops.append(self.func)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted)
    # No credentials: refused by the view, after the whole middleware chain,
    # without the database.
    status, _, _ = asgi_post("/api/v1/conversations/", [b""], [])
    assert status == 401
    assert 0 < len(hops) <= MAX_HOPS, [getattr(h, "__qualname__", h) for h in hops]
