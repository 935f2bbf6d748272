"""Hostile webhook bodies, signed with the number's own app secret: every
stored event ends processed, malformed or unroutable, never failed.

The bodies are Meta's examples (tests/payloads/) mutated by a seeded
generator: fields dropped, types swapped, nulls, huge and odd strings (NUL,
lone surrogates, bidi marks), deep nesting, duplicated entries and items,
truncated and non-JSON bytes. They go through the real endpoint (the ASGI
application, a signed POST stored by its own database pool) and the real
processing task, on whatever database the suite runs on; CI runs it on
PostgreSQL, which refuses what SQLite lets through (an overlong varchar, NUL
in text, ``\\u0000`` in jsonb). Same seed, same bodies: a failure replays.
"""

import collections
import copy
import json
import random

import pytest

from conversations import tasks
from conversations.models import Message, WebhookEvent
from tests.fixtures.payloads import load_payload_json, payload_names
from tests.fixtures.webhook_server import post_in_process, signed_headers

pytestmark = pytest.mark.django_db(transaction=True)

SEED = 20260517
BODIES = 300

# Keys whose values reach a column, a lookup or a URL: mutated more often.
TARGETED_KEYS = frozenset(
    {
        "id",
        "wa_id",
        "from",
        "user_id",
        "from_user_id",
        "parent_user_id",
        "recipient_id",
        "recipient_user_id",
        "message_id",
        "name",
        "username",
        "country_code",
        "body",
        "caption",
        "filename",
        "mime_type",
        "emoji",
        "type",
        "status",
        "category",
        "pricing_model",
        "biz_opaque_callback_data",
        "message_template_id",
        "message_template_name",
        "message_template_language",
        "event",
        "source_id",
        "ctwa_clid",
        "timestamp",
        "time",
        "code",
        "title",
        "details",
    }
)

ODD_STRINGS = [
    "",
    " ",
    "\u0000",
    "abc\u0000def",
    "\ud800",
    "x\udfffy",
    "\u202etxt.exe",
    "\ufeff",
    "\r\n\t",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "%00%n%s",
    "../../graph/me",
    "\U0001d573\U0001d58a\U0001d591",
    '"\\',
    "NaN",
]

OTHER_TYPES = [None, True, False, 0, -1, 2**63, 2**70, 1.5, 1e300, [], {}, [1, "a"]]


def huge_string(rng: random.Random) -> str:
    length = rng.choice([33, 65, 129, 257, 513, 1025, 5000, 100_000])
    alphabet = rng.choice(["9", "a", "\u00e9", "\U0001f600", "a\u0000", "\ud83d"])
    return (alphabet * length)[:length]


def nested(rng: random.Random, value):
    # Meta's payloads nest about ten levels; the parser takes 64.
    for _ in range(rng.choice([5, 30, 100, 400])):
        value = [value] if rng.random() < 0.5 else {"n": value}
    return value


def nodes(document, path=()):
    """Every (path, key) below the root, containers included."""
    children = (
        document.items()
        if isinstance(document, dict)
        else enumerate(document)
        if isinstance(document, list)
        else ()
    )
    for key, value in children:
        yield path, key
        yield from nodes(value, (*path, key))


def at(document, path):
    for key in path:
        document = document[key]
    return document


def mutate(rng: random.Random, document) -> None:
    """Change one node of the document in place."""
    everything = list(nodes(document))
    if not everything:
        return
    targeted = [(path, key) for path, key in everything if key in TARGETED_KEYS]
    pool = targeted if targeted and rng.random() < 0.6 else everything
    path, key = rng.choice(pool)
    parent = at(document, path)
    operation = rng.choice(
        ["drop", "null", "type", "huge", "odd", "odd", "nest", "duplicate"]
    )
    if operation == "drop":
        del parent[key]
    elif operation == "null":
        parent[key] = None
    elif operation == "type":
        parent[key] = copy.deepcopy(rng.choice(OTHER_TYPES))
    elif operation == "huge":
        parent[key] = huge_string(rng)
    elif operation == "odd":
        parent[key] = rng.choice(ODD_STRINGS)
    elif operation == "nest":
        parent[key] = nested(rng, parent[key])
    elif isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    else:
        parent[key] = [parent[key], copy.deepcopy(parent[key])]


def mangle_bytes(rng: random.Random, body: bytes) -> bytes:
    """Damage the serialised body: what a broken proxy or a forger sends."""
    operation = rng.choice(
        ["truncate", "garbage", "bad-utf8", "raw-surrogate", "nan", "big", "dupkey"]
    )
    if operation == "truncate":
        return body[: rng.randrange(len(body))]
    if operation == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    quote = body.find(b'"', rng.randrange(len(body)))
    if operation == "bad-utf8" and quote > 0:
        return body[: quote + 1] + b"\xff\xfe" + body[quote + 1 :]
    if operation == "raw-surrogate" and quote > 0:
        return body[: quote + 1] + b"\xed\xa0\x80" + body[quote + 1 :]
    if operation == "nan":
        return body.replace(b'"timestamp": "', b'"timestamp": NaN, "t": "', 1)
    if operation == "big":
        return body.replace(b'"timestamp": "', b'"timestamp": 1e400, "t": "', 1)
    return body.replace(b'"id": ', b'"id": "dup", "id": ', 1)


def hostile_bodies(rng: random.Random, count: int) -> list[bytes]:
    names = payload_names()
    bodies = []
    for _ in range(count):
        document = load_payload_json(rng.choice(names))
        if rng.random() < 0.1:
            entries = document.get("entry") or []
            document["entry"] = entries + copy.deepcopy(entries)
        for _ in range(rng.choice([1, 1, 2, 3])):
            mutate(rng, document)
        body = json.dumps(document, indent=rng.choice([None, 2])).encode()
        if rng.random() < 0.1:
            body = mangle_bytes(rng, body)
        bodies.append(body)
    return bodies


def process(event_ids: list[int]) -> None:
    """What the workers do with the doorbell's ids: batches of the task."""
    for start in range(0, len(event_ids), 50):
        tasks.process_webhook_events.run(event_ids[start : start + 50])


def signed(bodies: list[bytes], secret: str) -> list[tuple[bytes, dict]]:
    return [(body, signed_headers(body, secret)) for body in bodies]


def test_hostile_bodies_never_leave_a_failed_event(meta_number):
    secret = meta_number.app.app_secret
    bodies = hostile_bodies(random.Random(SEED), BODIES)

    statuses, queued = post_in_process(signed(bodies, secret))
    process(queued)

    assert collections.Counter(statuses) == {200: BODIES}
    assert len(queued) == BODIES
    states = collections.Counter(WebhookEvent.objects.values_list("state", flat=True))
    failed = list(
        WebhookEvent.objects.filter(state=WebhookEvent.State.FAILED).values_list(
            "last_error", flat=True
        )[:5]
    )
    assert failed == [], states
    assert set(states) <= {"processed", "malformed", "unroutable"}, states
    assert sum(states.values()) == BODIES
    # Most mutations leave a readable body: processing is what is exercised.
    assert states["processed"] + states["unroutable"] > BODIES * 2 // 3, states

    # The pipeline still works: a customer's message flows end to end.
    good = load_payload_json("text")
    good["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = "wamid.AFTER"
    body = json.dumps(good).encode()
    statuses, queued = post_in_process(signed([body], secret))
    process(queued)

    assert statuses == [200]
    assert WebhookEvent.objects.get(pk=queued[0]).state == WebhookEvent.State.PROCESSED
    message = Message.objects.get(wamid="wamid.AFTER")
    assert message.text == "Hello, my parcel has not arrived yet."
    assert message.conversation.number == meta_number
