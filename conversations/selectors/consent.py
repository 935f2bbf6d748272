"""The consent ledger read one way: a customer's newest record per purpose,
by when it happened (occurred_at), decides (records are appended, never
edited)."""

from __future__ import annotations

from ..models import ConsentRecord


def _newest_first(customer_ids):
    return ConsentRecord.objects.filter(customer_id__in=list(customer_ids)).order_by(
        "customer_id", "purpose", "-occurred_at", "-id"
    )


def latest_consents(customer_ids) -> dict[tuple[int, str], str]:
    """The current status per (customer, purpose), in one query."""
    state: dict[tuple[int, str], str] = {}
    rows = _newest_first(customer_ids).values_list("customer_id", "purpose", "status")
    for customer_id, purpose, status in rows:
        state.setdefault((customer_id, purpose), status)
    return state


def latest_consent(customer_id: int, purpose: str) -> str | None:
    """The customer's current status for one purpose (None: never asked)."""
    return (
        _newest_first([customer_id])
        .filter(purpose=purpose)
        .values_list("status", flat=True)
        .first()
    )


def latest_consent_records(customer_id: int) -> dict[str, ConsentRecord | None]:
    """The record that decides each purpose for a customer (None: no record)."""
    records: dict[str, ConsentRecord] = {}
    for record in _newest_first([customer_id]):
        records.setdefault(record.purpose, record)
    return {purpose: records.get(purpose) for purpose in ConsentRecord.Purpose.values}
