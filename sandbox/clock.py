"""The helpdesk's business clock, moved from the phone page.

A person trying the helpdesk wants to see what a customer writing at night
gets without waiting for the night. Meta has no such thing, so this is no
simulation of Meta: the sandbox forwards the request to the helpdesk's
development endpoint (`/dev/business-clock/`, which exists only with the
helpdesk's SANDBOX_CLOCK and DEBUG on and its Graph API on this machine),
signed with the number's app secret as a webhook is, and answers what the
helpdesk answered. The helpdesk then reads its business hours (away reply,
service levels) as if it were that moment; messages keep real time.
"""

import json
from urllib.parse import urlsplit

import aiohttp

from .config import Number
from .payloads import sign

CLOCK_PATH = "/dev/business-clock/"
# What the phone page may ask; anything else is not forwarded.
FIELDS = {"at", "jump", "reset"}


def clock_url(sandbox, number: Number) -> str:
    """The helpdesk's clock endpoint: at `helpdesk_url`, else at the origin
    of the number's webhook URL."""
    base = sandbox.config.helpdesk_url
    if not base:
        webhook = urlsplit(sandbox.webhook_url_for(number))
        base = f"{webhook.scheme}://{webhook.netloc}" if webhook.netloc else ""
    return base.rstrip("/") + CLOCK_PATH if base else ""


async def forward(sandbox, number: Number, request: dict) -> tuple[int, dict]:
    """Post the request to the helpdesk, signed; its status and answer."""
    url = clock_url(sandbox, number)
    if not url:
        return 409, {"error": "no helpdesk URL: set helpdesk_url or a webhook URL"}
    document = {key: request[key] for key in FIELDS if request.get(key)}
    document["phone_number_id"] = number.phone_number_id
    body = json.dumps(document).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign(body, number.app_secret),
    }
    try:
        async with sandbox.session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
        ) as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as error:
        return 502, {"error": f"the helpdesk at {url} did not answer: {error}"}
    if response.status == 404:
        return 404, {
            "error": "the helpdesk's business clock is off (it needs DEBUG=1, "
            "SANDBOX_CLOCK=1 and this sandbox as its Graph API)"
        }
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {"error": text[:500]}
    if response.status >= 400 and "error" not in answer:
        answer["error"] = answer.get("detail") or f"HTTP {response.status}"
    return response.status, answer
