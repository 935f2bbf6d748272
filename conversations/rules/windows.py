"""The two WhatsApp windows of a conversation, computed in this one place.

- **Customer service window**: 24 hours from the customer's latest message
  (``Conversation.last_inbound_at``, Meta's timestamp of that message). Inside
  it the business may send anything; outside it only approved templates.
  Open strictly before the 24 hours are up: at 23:59:59 a reply goes, at
  exactly 24:00:00 it needs a template.
- **Free entry point** (click-to-WhatsApp ads): when the customer came from
  an ad and the business replies within the service window, a 72-hour window
  opens at that first reply in which every message is free. It changes the
  price, not what may be sent; it is shown to agents next to the service
  window. Open strictly before the 72 hours are up.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

SERVICE_WINDOW = timedelta(hours=24)
FREE_ENTRY_POINT_WINDOW = timedelta(hours=72)


def _now(at: datetime | None) -> datetime:
    return at if at is not None else timezone.now()


def service_window_expires_at(conversation) -> datetime | None:
    """When free-form replies stop being allowed (None: the customer never wrote)."""
    if conversation.last_inbound_at is None:
        return None
    return conversation.last_inbound_at + SERVICE_WINDOW


def service_window_open(conversation, at: datetime | None = None) -> bool:
    """Whether a free-form message (text, media, interactive, reaction) may go."""
    expires = service_window_expires_at(conversation)
    return expires is not None and _now(at) < expires


def opens_free_entry_point(conversation, at: datetime | None = None) -> bool:
    """Whether a reply sent now opens the 72-hour free entry point."""
    return (
        bool(conversation.referral)
        and conversation.free_entry_point_expires_at is None
        and service_window_open(conversation, at)
    )


def free_entry_point_expiry(at: datetime) -> datetime:
    """When a free entry point opened by a reply at `at` closes."""
    return at + FREE_ENTRY_POINT_WINDOW


def free_entry_point_open(conversation, at: datetime | None = None) -> bool:
    expires = conversation.free_entry_point_expires_at
    return expires is not None and _now(at) < expires
