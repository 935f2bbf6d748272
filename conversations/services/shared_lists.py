"""The lists a team shares: labels and canned replies, kept by admins in the
workspace (the Django admin edits the same rows).

Each save checks the row as the admin does (full_clean: a label's colour, a
shortcut's characters and uniqueness, a canned reply's placeholders) and
raises Django's ValidationError with the reasons, for the form to show.
"""

from django.db import transaction

from accounts.models import Team

from ..models import CannedResponse, Label


@transaction.atomic
def save_label(*, name: str, color: str, label: Label | None = None) -> Label:
    """Add a label, or rename and recolour one."""
    label = label or Label()
    label.name = name.strip()
    label.color = color.strip()
    label.full_clean()
    label.save()
    return label


def delete_label(*, label: Label) -> None:
    """Remove a label (conversations simply lose it)."""
    label.delete()


@transaction.atomic
def save_canned_reply(
    *,
    shortcut: str,
    title: str,
    text: str,
    team: Team | None,
    response: CannedResponse | None = None,
) -> CannedResponse:
    """Add a canned reply, or change one; `team` None: every agent's."""
    response = response or CannedResponse()
    response.shortcut = shortcut.strip().lstrip("/")
    response.title = title.strip()
    response.text = text.strip()
    response.team = team
    response.full_clean()
    response.save()
    return response


def delete_canned_reply(*, response: CannedResponse) -> None:
    response.delete()
