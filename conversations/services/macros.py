"""Macros: a named set of actions run on a conversation in one go, all or
nothing, and recorded in the conversation's history as a note."""

from django.db import transaction

from accounts.models import User

from ..models import Conversation, Macro
from ..selectors.macros import macros_for
from . import errors, outbound, workspace


@transaction.atomic
def run_macro(*, conversation: Conversation, macro: Macro, by: User) -> Conversation:
    """Run a macro's actions in order: team, labels, canned reply, resolve.

    A refused action (the reply window closed, a team the number is not open
    to) refuses the whole macro with its reason: nothing is half done. The
    note names what was done, so colleagues see it in the thread.
    """
    if macro not in macros_for(conversation):
        raise errors.WorkspaceError(
            "macro_not_available", "This macro is not offered on this conversation."
        )
    done = []
    if macro.set_team_id and macro.set_team_id != conversation.team_id:
        conversation = workspace.assign_conversation(
            conversation=conversation, by=by, team=macro.set_team
        )
        done.append(f"team {macro.set_team.name}")
    labels = list(macro.add_labels.all())
    if labels:
        current = list(conversation.labels.all())
        wanted = current + [label for label in labels if label not in current]
        workspace.set_labels(conversation=conversation, labels=wanted, by=by)
        done.append("labels " + ", ".join(label.name for label in labels))
    if macro.reply_id:
        outbound.send_reply(
            conversation=conversation,
            kind="text",
            content={"body": _filled(macro.reply.text, conversation, by)},
            sender=by,
        )
        done.append(f"reply “{macro.reply.title}”")
    if macro.resolve:
        conversation = workspace.change_status(
            conversation=conversation, status=Conversation.Status.RESOLVED, by=by
        )
        done.append("resolved")
    summary = "; ".join(done) or "nothing to do"
    workspace.add_note(
        conversation=conversation, author=by, body=f"Macro “{macro.name}”: {summary}."
    )
    return conversation


def _filled(text: str, conversation: Conversation, agent: User) -> str:
    """A canned response's variables, as the composer fills them."""
    for key, value in (
        ("customer_name", conversation.customer.display_name),
        ("agent_name", agent.name),
        ("number_name", conversation.number.name),
    ):
        text = text.replace("{" + key + "}", value)
    return text
