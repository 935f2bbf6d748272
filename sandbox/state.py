"""The sandbox's memory on disk, so a restarted sandbox agrees with the helpdesk.

Meta remembers every customer's service window, the sends it accepted and
the chats on the customer's phone; the helpdesk keeps its side in its
database. A sandbox that forgot its side on restart would refuse every reply
with 131047 while the helpdesk shows the window open, and its phone page
would be empty. With a state file (`--state-file`, `state_file` in the JSON
config; the run command keeps it in var/) the sandbox writes what Meta would
remember, shortly after each change and when it stops, and reads it back on
start: customers and their windows, referrals and free entry points, the
sends and customer messages it knows by wamid (and which were deleted), the
templates of each WABA, and the phone page's events (its chat history).

Media bytes are not kept: a restarted sandbox answers 404 for media stored
before it, as Meta does once media expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .simulator import Sandbox

logger = logging.getLogger("sandbox")

# Bumped when the file's shape changes; a file of another version is ignored
# (the sandbox starts empty, as it did before it kept any state).
STATE_VERSION = 1
# Changes within this many seconds are written together.
SAVE_DELAY = 0.5


def snapshot(sandbox: Sandbox) -> dict:
    """What Meta would remember, as JSON-ready data."""
    return {
        "version": STATE_VERSION,
        "customers": [
            customer.public_dict() for customer in sandbox.customers.values()
        ],
        "outbound": [
            {**message.public_dict(), "conversation": message.conversation}
            for message in sandbox.outbound.values()
        ],
        "inbound": {wamid: list(where) for wamid, where in sandbox.inbound.items()},
        "revoked": sorted(sandbox.revoked),
        "templates": sandbox.templates.by_waba(),
        "events": list(sandbox.events),
        "event_seq": sandbox.event_seq,
    }


def restore(sandbox: Sandbox, data: dict) -> None:
    """Load a snapshot into a freshly built sandbox (its numbers come from
    the config; sends of numbers it no longer has are left out)."""
    from .simulator import Customer, OutboundMessage

    for item in data.get("customers", []):
        customer = Customer(
            wa_id=item["wa_id"], name=item["name"], user_id=item.get("user_id", "")
        )
        for name in ("last_inbound_at", "referral_at", "free_entry_point_at"):
            getattr(customer, name).update(
                {key: float(value) for key, value in item.get(name, {}).items()}
            )
        sandbox.customers[customer.wa_id] = customer
    for item in data.get("outbound", []):
        number = sandbox.numbers.get(item["phone_number_id"])
        if number is None:
            continue
        sandbox.outbound[item["wamid"]] = OutboundMessage(
            wamid=item["wamid"],
            number=number,
            to=item["to"],
            wa_id=item["wa_id"],
            type=item["type"],
            body=item["body"],
            accepted_at=float(item["accepted_at"]),
            pricing=item["pricing"],
            conversation=item.get("conversation"),
            template=item.get("template"),
            statuses=list(item.get("statuses", [])),
        )
    sandbox.inbound.update(
        {wamid: tuple(where) for wamid, where in data.get("inbound", {}).items()}
    )
    sandbox.revoked.update(data.get("revoked", []))
    sandbox.templates.load(data.get("templates", {}))
    sandbox.events.extend(data.get("events", []))
    sandbox.event_seq = int(data.get("event_seq", 0))


class StateFile:
    """One sandbox's state file: read at start, written after changes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._handle = None

    def load_into(self, sandbox: Sandbox) -> bool:
        """Restore the sandbox from the file; whether there was one to read."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as error:
            logger.warning(
                "state file %s unreadable, starting empty: %s", self.path, error
            )
            return False
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            logger.warning(
                "state file %s is of another version, starting empty", self.path
            )
            return False
        restore(sandbox, data)
        return True

    def changed(self, sandbox: Sandbox) -> None:
        """Write the state soon (changes in the next SAVE_DELAY go together)."""
        if self._handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop runs (a test's direct call): now
            self.save(sandbox)
            return
        self._handle = loop.call_later(SAVE_DELAY, self.save, sandbox)

    def save(self, sandbox: Sandbox) -> None:
        """Write the state now, atomically (a crash leaves the old file whole)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=self.path.name, suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(snapshot(sandbox), file)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
