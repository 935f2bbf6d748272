"""Two customers who turn out to be one person become one: a webhook names a
phone (wa_id) one customer holds and a business-scoped user id another holds.

Since usernames, a customer may first write with only a BSUID and later from
a phone an older customer row already knows (or the other way round). The
older row survives; the other one's conversations, consent records and
notifications move to it, and a CustomerMerge row says who was absorbed.
"""

import logging

from django.db import transaction
from django.utils import timezone

from .. import realtime
from ..models import (
    ConsentRecord,
    Conversation,
    Customer,
    CustomerIdentityChange,
    CustomerMerge,
    Notification,
)
from ..selectors.thread import merge_shown_in

logger = logging.getLogger(__name__)

# What a survivor takes from the absorbed customer when it has none itself.
_INHERITED = ("wa_id", "user_id", "phone", "name", "profile_name", "username")


@transaction.atomic
def merge_customers(*, first: Customer, second: Customer) -> Customer:
    """Make the two customers one (the older survives); return the survivor.

    Both rows are locked in id order, so two workers merging the same pair
    wait for each other and the second finds nothing left to merge. Where
    both have an unresolved conversation on the same number, the absorbed
    one is resolved (its messages stay, under the survivor), since a
    customer has at most one unresolved conversation per number.
    """
    ids = sorted({first.pk, second.pk})
    locked = {
        row.pk: row
        for row in Customer.objects.select_for_update()
        .filter(pk__in=ids)
        .order_by("pk")
    }
    if len(locked) < 2:
        # A concurrent merge absorbed one of them already.
        return next(iter(locked.values())) if locked else first
    survivor, absorbed = locked[ids[0]], locked[ids[1]]
    absorbed_id = absorbed.pk
    now = timezone.now()
    # The survivor's open conversations show the merge in their threads,
    # like those it moves over (selectors.thread.merge_shown_in).
    kept_open = list(
        survivor.conversations.exclude(
            status=Conversation.Status.RESOLVED
        ).select_related("number")
    )
    moved = _move_conversations(survivor, absorbed, now)
    ConsentRecord.objects.filter(customer=absorbed).update(customer=survivor)
    Notification.objects.filter(customer=absorbed).update(customer=survivor)
    CustomerIdentityChange.objects.filter(customer=absorbed).update(customer=survivor)
    CustomerMerge.objects.filter(survivor=absorbed).update(survivor=survivor)
    merge = CustomerMerge.objects.create(
        survivor=survivor,
        merged_at=now,
        absorbed_customer_id=absorbed_id,
        absorbed_wa_id=absorbed.wa_id,
        absorbed_user_id=absorbed.user_id,
        absorbed_name=absorbed.display_name[:256],
        conversations_moved=len(moved),
    )
    inherited = {
        name: getattr(absorbed, name)
        for name in _INHERITED
        if getattr(absorbed, name) and not getattr(survivor, name)
    }
    # The unique ids must be free before the survivor takes them.
    absorbed.delete()
    if inherited:
        for name, value in inherited.items():
            setattr(survivor, name, value)
        survivor.save(update_fields=[*inherited, "updated_at"])
    for conversation in [*kept_open, *moved]:
        conversation.customer = survivor
        data = {"change": "customer_merged", "customer": survivor.pk}
        if merge_shown_in(conversation, merge):
            # Open tabs add the merge's line to the thread.
            data["merge"] = merge.pk
        realtime.publish(
            realtime.CONVERSATION_UPDATED, conversation=conversation, data=data
        )
    logger.info("Customer %s merged into %s", absorbed_id, survivor.pk)
    return survivor


def _move_conversations(survivor: Customer, absorbed: Customer, now) -> list:
    # Group conversations are the group's, whoever started them: no clash.
    open_on = set(
        survivor.conversations.filter(group_id="")
        .exclude(status=Conversation.Status.RESOLVED)
        .values_list("number_id", flat=True)
    )
    clashing = (
        absorbed.conversations.filter(group_id="")
        .exclude(status=Conversation.Status.RESOLVED)
        .filter(number_id__in=open_on)
    )
    # Resolved at the merge's own time: the merge is its thread's last line.
    clashing.update(
        status=Conversation.Status.RESOLVED, resolved_at=now, updated_at=now
    )
    moved = list(absorbed.conversations.select_related("number"))
    absorbed.conversations.update(customer=survivor, updated_at=now)
    for conversation in moved:
        conversation.customer = survivor
    return moved
