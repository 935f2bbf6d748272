"""Which claimed sends started their request: the send-or-not record in Redis.

A claim moves rows to ``sending`` and commits before any request, and a
claimed send can then wait a while before its request is written: behind
the same customer's earlier message (one thread sends a customer's messages
in order), or for a limiter slot. A worker that dies meanwhile leaves rows
``sending`` of which only some may have reached Meta. This record tells them
apart, so that recovery sends again only what never left:

    claimed ──limiter grant, the request is written next──▶ started
       │
       └── the sweeper, lease run out ──▶ withdrawn (the row: `queued` again)

One Redis hash per number, a field per claimed message whose value is
``<claim token>:<state>``. The run writes a batch's fields in one call before
its threads start. The number limiter's script (ratelimit.acquire_number)
moves a field to ``started`` in the same atomic step that grants the send's
slot, so the mark costs no round trip of its own, and the run forgets the
fields of the outcomes it writes back, one call per write-back. A field only
moves from the value its own claim wrote: a thread whose send the sweeper
withdrew (and another run may have claimed again since) never sends it.

What this record cannot vouch for counts as started: a field that is
missing (Redis lost it, or the worker died before writing it) or that
another claim wrote makes the sweeper turn the row ``unknown``, as it did
every expired row before this record existed.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings

from . import ratelimit

KEY = "outbound:attempts:{}"
CLAIMED = "claimed"
STARTED = "started"
WITHDRAWN = "withdrawn"
# A number's record outlives its last claim by a lease and this long, so the
# sweeper finds it however late it runs.
KEEP_AFTER_LEASE = 600

# KEYS[1] the number's hash; ARGV message id, claim token, ... Forgets each
# field only while it still holds its own claim's value.
_FORGET_SCRIPT = """
for i = 1, #ARGV, 2 do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  local prefix = ARGV[i + 1] .. ':'
  if value and string.sub(value, 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
"""

# KEYS[1] the number's hash; ARGV message ids. A field whose request never
# started becomes withdrawn (so asking again answers the same); any other is
# forgotten. Returns the ids withdrawn.
_TAKE_BACK_SCRIPT = """
local untried = {}
for _, id in ipairs(ARGV) do
  local value = redis.call('HGET', KEYS[1], id)
  local token, state = nil, nil
  if value then
    token, state = string.match(value, '^(.*):(%a+)$')
  end
  if state == 'claimed' or state == 'withdrawn' then
    redis.call('HSET', KEYS[1], id, token .. ':withdrawn')
    untried[#untried + 1] = id
  elseif value then
    redis.call('HDEL', KEYS[1], id)
  end
end
return untried
"""


def new_claim() -> str:
    """A token for one claim: its fields say which claim wrote them."""
    return uuid.uuid4().hex[:16]


def _key(number_id: int) -> str:
    return KEY.format(number_id)


def mark_claimed(number_id: int, sends: Iterable[tuple[int, str]]) -> None:
    """Record (message id, claim token) sends as claimed; one round trip.

    Called before any of them may start: a thread's grant moves only a field
    this wrote. Raises redis.RedisError; the sends must not go then.
    """
    fields = {str(pk): f"{claim}:{CLAIMED}" for pk, claim in sends}
    if not fields:
        return
    keep = int(settings.WHATSAPP_DELIVERY_LEASE_SECONDS) + KEEP_AFTER_LEASE
    pipe = ratelimit.connection().pipeline(transaction=False)
    pipe.hset(_key(number_id), mapping=fields)
    pipe.expire(_key(number_id), keep)
    pipe.execute()


def start_mark(number_id: int, message_id: int, claim: str) -> ratelimit.Mark:
    """What the send's limiter grant writes: claimed → started, or nothing."""
    return ratelimit.Mark(
        key=_key(number_id),
        field=str(message_id),
        expected=f"{claim}:{CLAIMED}",
        value=f"{claim}:{STARTED}",
    )


def forget(number_id: int, sends: Iterable[tuple[int, str]]) -> None:
    """Drop the fields of written-back sends, each only if its claim wrote it."""
    args: list[str] = []
    for pk, claim in sends:
        args += [str(pk), claim]
    if args:
        ratelimit.script(_FORGET_SCRIPT)(keys=[_key(number_id)], args=args)


def take_back(expired: Iterable[tuple[int, int]]) -> set[int]:
    """Of (message id, number id) whose lease ran out, the ids never started.

    Those are withdrawn here, atomically with the threads' grants, so a
    worker still alive cannot start them any more; the fields of the others
    are forgotten. Raises redis.RedisError.
    """
    by_number: dict[int, list[str]] = defaultdict(list)
    for pk, number_id in expired:
        by_number[number_id].append(str(pk))
    script = ratelimit.script(_TAKE_BACK_SCRIPT)
    untried: set[int] = set()
    for number_id, ids in by_number.items():
        untried.update(int(pk) for pk in script(keys=[_key(number_id)], args=ids))
    return untried
