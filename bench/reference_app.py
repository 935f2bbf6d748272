"""The reference for bench/webhook_ack.py: the least a webhook receiver can do.

A plain ASGI app, no Django: it checks X-Hub-Signature-256 over the raw body
with the app secret and INSERTs the body with an asyncio psycopg pool (one
committed statement), then answers 200. Configured by BENCH_DATABASE_URL and
BENCH_APP_SECRET; served exactly like the helpdesk (same server, same number
of processes), so the ratio between the two is the helpdesk's own overhead.
"""

import hashlib
import hmac
import os

from psycopg_pool import AsyncConnectionPool

SECRET = os.environ["BENCH_APP_SECRET"].encode()
INSERT = "INSERT INTO bench_reference (body, received_at) VALUES (%s, now())"
_pool: AsyncConnectionPool | None = None


async def _connection():
    global _pool
    if _pool is None:
        _pool = AsyncConnectionPool(
            os.environ["BENCH_DATABASE_URL"],
            min_size=1,
            max_size=10,
            kwargs={"autocommit": True},
            open=False,
        )
        await _pool.open(wait=False)
    return _pool.connection()


async def _answer(send, status: int) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    header = dict(scope["headers"]).get(b"x-hub-signature-256", b"")
    expected = b"sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, header):
        return await _answer(send, 403)
    async with await _connection() as conn:
        await conn.execute(INSERT, (body,))
    await _answer(send, 200)
