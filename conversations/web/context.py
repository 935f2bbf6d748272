"""What the workspace's pages and fragments are rendered with.

Each builder gathers, through the selectors, everything one page or one
fragment of templates/conversations/fragments.html shows, so a fragment has
the same context with the page, as a form's answer and pushed live.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from accounts.models import Team, User

from .. import services
from ..models import (
    ConsentRecord,
    Conversation,
    Label,
    WhatsAppNumber,
    sees_every_number,
)
from ..rules import canned, windows
from ..selectors import billing, consent
from ..selectors.composer import (
    approved_templates,
    canned_responses,
    templates_synced,
)
from ..selectors.customer import (
    conversation_cost,
    previous_conversations,
)
from ..selectors.inbox import (
    INBOX_PAGE_SIZE,
    ORDERS,
    VIEWS,
    InboxCursor,
    InboxFilter,
    inbox_page,
    latest_event_id,
    row_sort_key,
    stream_positions,
)
from ..selectors.thread import (
    ThreadCursor,
    WindowState,
    assignable_agents,
    customer_merges,
    thread_page,
)
from ..whatsapp import templates as meta_templates

# The composer's emoji picker.
EMOJIS = ["😊", "👍", "🙏", "🎉", "❤️", "😂", "👋", "✅", "🙂", "😉", "🚚", "📦"]


def page_context(user: User, inbox_filter: InboxFilter) -> dict:
    """Everything the workspace page renders around the open conversation:
    the inbox through this filter, the filters themselves and the sidebar."""
    last_event_id = latest_event_id()  # before reading any state
    streams = stream_positions(services.visible_number_ids(user))
    sidebar = sidebar_context(user)
    return {
        "last_event_id": last_event_id,
        "live_streams": json.dumps({str(k): v for k, v in streams.items()}),
        **inbox_context(user, inbox_filter),
        "filter": inbox_filter,
        "views": list(VIEWS.items()),
        # A view's tab shows every team's conversations in it; a team's tab
        # is all of that team's.
        "view_queries": {
            view: inbox_filter.as_query(view=view, team="") for view in VIEWS
        },
        "team_tabs": [
            (team, inbox_filter.as_query(view="all", team=team.pk))
            for team in sidebar["teams"]
        ],
        "filter_chips": filter_chips(inbox_filter, sidebar),
        "orders": list(ORDERS.items()),
        "statuses": Conversation.Status.choices,
        "availabilities": User.Availability.choices,
        **sidebar,
    }


def filter_chips(inbox_filter: InboxFilter, sidebar: dict) -> list[dict]:
    """The filters in force beyond the defaults, each with the query that
    drops it (the chips over the list; removing one applies at once)."""
    names = {
        "number": {number.pk: number.name for number in sidebar["numbers"]},
        "label": {label.pk: label.name for label in sidebar["labels"]},
    }
    chips = []
    if inbox_filter.status != "open":
        status = dict(Conversation.Status.choices).get(inbox_filter.status, "Any")
        chips.append({"text": f"Status: {status}", "query": {"status": "open"}})
    for field, title in (("number", "Number"), ("label", "Label")):
        value = getattr(inbox_filter, field)
        if value:
            name = names[field].get(value, "?")
            chips.append({"text": f"{title}: {name}", "query": {field: ""}})
    if inbox_filter.q:
        chips.append({"text": f"Search: {inbox_filter.q}", "query": {"q": ""}})
    if inbox_filter.order != "activity":
        chips.append(
            {"text": f"Order: {ORDERS[inbox_filter.order]}", "query": {"order": ""}}
        )
    for chip in chips:
        chip["query"] = inbox_filter.as_query(**chip["query"])
    return chips


def inbox_context(
    user: User, inbox_filter: InboxFilter, *, after: InboxCursor | None = None
) -> dict:
    """A page of the inbox's rows (the first, or the one after `after`) and
    whether more follow, for the page or for "Load more conversations"."""
    page = inbox_page(user, inbox_filter, after=after)
    for conversation in page.conversations:
        conversation.window_state = WindowState.of(conversation)
        conversation.sort_key = row_sort_key(conversation, inbox_filter.order)
        conversation.cursor = InboxCursor.of(conversation, inbox_filter.order)
    return {
        "conversations": page.conversations,
        "more_conversations": page.more,
        "inbox_page_size": INBOX_PAGE_SIZE,
        "filter_query": inbox_filter.as_query(),
    }


def sidebar_context(user: User) -> dict:
    numbers = list(WhatsAppNumber.objects.visible_to(user).order_by("name"))
    teams = (
        Team.objects.all()
        if sees_every_number(user)
        else Team.objects.filter(numbers__in=numbers).distinct()
    )
    colleagues = (
        User.objects.filter(is_active=True, teams__numbers__in=numbers)
        .distinct()
        .order_by("display_name", "username")
    )
    return {
        "numbers": numbers,
        "teams": list(teams),
        "labels": list(Label.objects.all()),
        "colleagues": list(colleagues[:50]),
    }


def agent_context(user: User) -> dict:
    teams = list(user.teams.all())
    return {"user_team_ids": {team.pk for team in teams}, "user_teams": teams}


def conversation_context(conversation: Conversation, user: User) -> dict:
    """Everything the conversation pane renders (a fixed number of queries)."""
    merges = customer_merges(conversation)
    return {
        **composer_context(conversation, user),
        **thread_context(conversation, merges=merges),
        **customer_context(conversation, user, merges=merges),
        "agents": assignable_agents(conversation.number_id),
        "number_teams": list(conversation.number.teams.all()),
        "all_labels": list(Label.objects.all()),
        "label_ids": {label.pk for label in conversation.labels.all()},
    }


def composer_context(conversation: Conversation, user: User) -> dict:
    """What the composer renders, the same with the page, as a form's answer
    and pushed live when the window opens or closes."""
    window = WindowState.of(conversation)
    templates = [] if window.is_open else template_choices(conversation)
    return {
        "conversation": conversation,
        "window": window,
        "canned": canned_responses(user),
        "templates": templates,
        # Only asked when nothing can be offered: why the picker is empty.
        "templates_synced": bool(templates)
        or window.is_open
        or templates_synced(conversation.number.waba_id),
        "emojis": EMOJIS,
    }


def thread_context(
    conversation: Conversation,
    *,
    before: ThreadCursor | None = None,
    merges: list | None = None,
) -> dict:
    """A page of the thread, for the page or for "Load older messages"."""
    page = thread_page(conversation, before=before, merges=merges)
    return {
        "conversation": conversation,
        "items": page.items,
        "older_query": page.older.as_query() if page.older else "",
    }


def customer_context(
    conversation: Conversation, user: User, *, merges: list | None = None
) -> dict:
    """What the customer panel renders (merges: customer_merges(), when the
    thread read them already)."""
    return {
        "conversation": conversation,
        "merges": customer_merges(conversation) if merges is None else merges,
        "previous": previous_conversations(conversation, user),
        "consent": consent.latest_consent_records(conversation.customer_id),
        "consent_purposes": ConsentRecord.Purpose.choices,
        "cost": conversation_cost(conversation),
        "referral": referral_card(conversation.referral),
    }


def referral_card(referral) -> dict | None:
    """The ad that started the conversation, with only safe links and images."""
    if not isinstance(referral, dict) or not referral:
        return None
    media_type = str(referral.get("media_type") or "")
    image = safe_url(referral.get("image_url") or referral.get("thumbnail_url"))
    return {
        "headline": str(referral.get("headline") or ""),
        "body": str(referral.get("body") or ""),
        "source_type": str(referral.get("source_type") or ""),
        "source_id": str(referral.get("source_id") or ""),
        "url": safe_url(referral.get("source_url")),
        "image": image,
        "video": safe_url(referral.get("video_url")),
        "media_type": media_type,
    }


def safe_url(value) -> str:
    """The URL if it is an absolute http(s) link, else "" (no javascript:, data:)."""
    if not isinstance(value, str):
        return ""
    value = value.strip()
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        return ""
    if any(ord(char) < 32 for char in value):
        return ""
    return value


# --- Templates and canned responses in the composer ------------------------


def template_choices(conversation: Conversation) -> list[dict]:
    free = ""
    if windows.free_entry_point_open(conversation):
        free = "the free entry point of the ad is open"
    choices = []
    for template in approved_templates(conversation):
        price = None if free else billing.estimate(conversation, template)
        choices.append(
            {
                "template": template,
                "fields": meta_templates.fields(template),
                "body": meta_templates.body_text(template),
                "price": price,
                "free": free,
            }
        )
    return choices


def fill_canned(text: str, *, conversation: Conversation, agent: User) -> str:
    """A canned reply's text with the open conversation's values in its
    placeholders (the admin refuses unknown ones)."""
    customer = conversation.customer.display_name
    return canned.fill(
        text,
        {
            "customer_name": customer,
            "first_name": canned.first_name(customer),
            "agent_name": agent.name,
            "number_name": conversation.number.name,
        },
    )
