"""Agents' presence and reach: the numbers they may see, their availability,
time zone and open tabs.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import LiveTab, User

from .. import realtime
from ..delivery import doorbells
from ..models import (
    WhatsAppNumber,
)
from . import errors, routing

logger = logging.getLogger(__name__)


def agent_may_see_number(user: User, number_id: int) -> bool:
    """Whether an agent may see (and act on) a number's conversations."""
    return WhatsAppNumber.objects.visible_to(user).filter(pk=number_id).exists()


def visible_number_ids(user: User) -> set[int]:
    """The inboxes an agent may see, as ids: all with view_all_numbers, else
    their teams'."""
    return set(WhatsAppNumber.objects.visible_to(user).values_list("pk", flat=True))


def set_time_zone(*, user: User, time_zone: str) -> User:
    """Set the time zone (an IANA name the server knows) that an agent's
    pages show times in and read the times the agent types in."""
    if user.time_zone != time_zone:
        user.time_zone = time_zone
        user.save(update_fields=["time_zone"])
    return user


@transaction.atomic
def set_availability(*, user: User, availability: str) -> User:
    """Set an agent's availability (online, away, offline) for colleagues to see."""
    if availability not in User.Availability.values:
        raise errors.WorkspaceError(
            "invalid_availability", f"Unknown availability {availability!r}."
        )
    if user.availability == availability:
        return user
    user.availability = availability
    user.availability_changed_at = timezone.now()
    user.save(update_fields=["availability", "availability_changed_at"])
    realtime.publish_agent(
        realtime.AGENT_UPDATED,
        number_ids=visible_number_ids(user),
        data={"agent": user.pk, "availability": availability},
    )
    if user.presence == User.Availability.ONLINE:
        routing.agent_may_take_more(user)
    return user


def open_tab(*, user: User, tab: str) -> None:
    """An agent opened the workspace in a tab (its socket, named `tab`)."""
    with transaction.atomic():
        LiveTab.objects.update_or_create(
            channel_name=tab,
            defaults={"user": user, "seen_at": timezone.now(), "closed_at": None},
        )
        settle_connection(user_id=user.pk)


def close_tab(*, user: User, tab: str) -> None:
    """A tab's socket closed. The agent goes offline with their last tab, but
    only once LIVE_TAB_GRACE_SECONDS have passed without a new one: opening
    a conversation loads a new page, whose tab replaces this one at once."""
    LiveTab.objects.filter(channel_name=tab).update(closed_at=timezone.now())
    doorbells.ring_after_commit(
        doorbells.SETTLE_AGENT_CONNECTION,
        user.pk,
        countdown=settings.LIVE_TAB_GRACE_SECONDS + 1,
    )


def keep_tabs_open(*, tabs) -> None:
    """A server process says these tabs of its are still connected."""
    LiveTab.objects.filter(channel_name__in=list(tabs)).update(seen_at=timezone.now())


def close_stale_tabs(*, now: datetime | None = None) -> int:
    """Close the tabs whose server stopped saying they are alive (it died
    without closing them), forget tabs closed past the grace period, and
    settle every agent shown as connected who no longer has a tab (their
    delayed settle was lost). Return how many tabs were forgotten."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.LIVE_TAB_STALE_SECONDS)
    grace = now - timedelta(seconds=settings.LIVE_TAB_GRACE_SECONDS)
    gone = LiveTab.objects.filter(
        Q(closed_at__isnull=True, seen_at__lt=stale) | Q(closed_at__lt=grace)
    )
    user_ids = set(gone.values_list("user_id", flat=True))
    forgotten, _ = gone.delete()
    user_ids |= set(
        User.objects.filter(connected=True, live_tabs__isnull=True).values_list(
            "pk", flat=True
        )
    )
    for user_id in sorted(user_ids):
        settle_connection(user_id=user_id, now=now)
    return forgotten


@transaction.atomic
def settle_connection(*, user_id: int, now: datetime | None = None) -> None:
    """Make the agent's `connected` say whether they have a tab open (or
    closed one within the grace period); colleagues see a change live. Locks
    the agent's row so tabs opening and closing at once settle right."""
    user = User.objects.select_for_update().filter(pk=user_id).first()
    if user is None:
        return
    grace = (now or timezone.now()) - timedelta(seconds=settings.LIVE_TAB_GRACE_SECONDS)
    connected = LiveTab.objects.filter(
        Q(closed_at__isnull=True) | Q(closed_at__gte=grace), user_id=user_id
    ).exists()
    if user.connected == connected:
        return
    user.connected = connected
    user.save(update_fields=["connected"])
    realtime.publish_agent(
        realtime.AGENT_UPDATED,
        number_ids=visible_number_ids(user),
        data={"agent": user.pk, "connected": connected},
    )
    if user.presence == User.Availability.ONLINE:
        routing.agent_may_take_more(user)


def memberships_changed(*, user_ids) -> None:
    """Agents' teams changed: their open tabs re-check what they may see."""
    realtime.announce_access_changed(user_ids)


def number_teams_changed(*, team_ids) -> None:
    """Teams gained or lost a number: their agents' tabs re-check access."""
    user_ids = User.objects.filter(teams__in=list(team_ids)).values_list(
        "pk", flat=True
    )
    realtime.announce_access_changed(set(user_ids))
