"""A request through the ASGI application crosses between the event loop and
a thread a fixed, small number of times: the middleware that cannot run
asynchronously run together in the request's thread, and no MiddlewareMixin
runs in async mode (each of its hooks would be a hop of its own)."""

import pytest
from asgiref import sync

from tests.test_uploads import asgi_post

# Measured with Django 5.2 for a refused request: the request_started
# signal, the whole synchronous middleware chain, CSRF's process_view, the
# view, rendering its answer, logging the refusal, and request_finished
# (10 when messages and X-Frame-Options ran asynchronously inside the chain).
MAX_HOPS = 7


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


@pytest.mark.parametrize("name", ["MessageMiddleware", "XFrameOptionsMiddleware"])
def test_no_middleware_mixin_is_inside_the_last_synchronous_middleware(name, settings):
    """Django runs a middleware asynchronously when everything inside it can:
    the last synchronous one keeps every MiddlewareMixin outside it sync."""
    from django.utils.module_loading import import_string

    chain = settings.MIDDLEWARE
    last_sync = max(
        index
        for index, path in enumerate(chain)
        if not getattr(import_string(path), "async_capable", False)
    )
    position = next(i for i, path in enumerate(chain) if path.endswith(name))
    assert position < last_sync
