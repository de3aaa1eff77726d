"""What the worker does with one change of a payment: plain functions, testable without Kafka.

Two tables, both keyed so that their work is cheap:

* **open payments** (not final: pending or failed), keyed by age: ``i<created ms>:<id>`` (has
  an intent) or ``n<created ms>:<id>`` (no intent yet). RocksDB keeps keys sorted, so the
  reconciler reads "created before T" or "created between A and B" as a range, never a scan.
* **last emitted**, keyed by payment id: the version and status of the last status event, so a
  replay (Connect restart, re-snapshot, worker restart) emits nothing new, and a snapshot of a
  change that was never announced (the stream was broken) still emits it once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from cdc.envelope import Op, PaymentChange, PaymentRow
from payments.domain.events import StatusUpdate
from payments.domain.status import Status

WITH_INTENT = b"i"
WITHOUT_INTENT = b"n"


@dataclass(frozen=True, slots=True)
class OpenEntry:
    """What the open-payments table holds of a payment (``OpenPayment`` of the ports)."""

    payment_id: UUID
    status: Status
    created_at: float  # epoch seconds
    provider_payment_id: str | None
    amount_minor: int
    currency: str

    @property
    def key(self) -> bytes:
        return entry_key(self.payment_id, self.created_at, self.provider_payment_id is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            # status first: ``status_of`` reads it without decoding the rest.
            "status": self.status.value,
            "payment_id": str(self.payment_id),
            "created_at": self.created_at,
            "provider_payment_id": self.provider_payment_id,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> OpenEntry:
        return cls(
            payment_id=UUID(str(doc["payment_id"])),
            status=Status(doc["status"]),
            created_at=float(doc["created_at"]),
            provider_payment_id=doc.get("provider_payment_id"),
            amount_minor=int(doc["amount_minor"]),
            currency=str(doc["currency"]),
        )


def encode(doc: dict[str, Any]) -> bytes:
    """A table value as stored (raw bytes: the changelog and RocksDB hold them as they are, so
    a recovery replays them without decoding each one)."""
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(raw: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(raw)
    return doc


_STATUS_PREFIXES = tuple(
    (f'{{"status":"{s.value}"'.encode(), s) for s in (Status.PENDING, Status.FAILED)
)


def status_of(raw: bytes) -> Status:
    """The status of a stored open entry, read from its first bytes (``encode`` of
    ``OpenEntry.to_json`` puts it first); any other shape is decoded."""
    for prefix, status in _STATUS_PREFIXES:
        if raw.startswith(prefix):
            return status
    return Status(decode(raw)["status"])


def entry_key(payment_id: UUID, created_at: float, with_intent: bool) -> bytes:
    prefix = WITH_INTENT if with_intent else WITHOUT_INTENT
    return prefix + f"{age_ms(created_at):013d}:{payment_id}".encode()


def age_ms(created_at: float) -> int:
    return max(0, int(created_at * 1000))


def range_key(prefix: bytes, created_at: float) -> bytes:
    """The smallest key of ``prefix`` created at or after ``created_at``."""
    return prefix + f"{age_ms(created_at):013d}".encode()


@dataclass(frozen=True, slots=True)
class Emitted:
    """The last status event sent for a payment."""

    version: int
    status: Status
    final_at: float | None = None  # when it became final (for the table's retention)

    def to_json(self) -> dict[str, Any]:
        return {"v": self.version, "s": self.status.value, "f": self.final_at}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Emitted:
        return cls(int(doc["v"]), Status(doc["s"]), doc.get("f"))


# Before the first event a payment is pending at version 0: its creation is not an event.
NOTHING_EMITTED = Emitted(0, Status.PENDING)
# How long a `last emitted` entry is kept after its payment became final (the worker combs
# older ones out). A record of a payment final for longer than that, with no entry, was
# announced and forgotten: a re-snapshot or replay of it emits nothing.
EMITTED_RETENTION_SECONDS = 30 * 86_400


@dataclass(frozen=True, slots=True)
class Decision:
    """``stale_keys``: table keys to delete; ``entry``: the entry to store (None: not open);
    ``emit``: the status event to send (already deduplicated)."""

    stale_keys: tuple[bytes, ...] = ()
    entry: OpenEntry | None = None
    emit: StatusUpdate | None = None


def open_entry(row: PaymentRow) -> OpenEntry | None:
    if row.status.is_final:
        return None
    return OpenEntry(
        payment_id=row.id,
        status=row.status,
        created_at=row.created_at.timestamp(),
        provider_payment_id=row.provider_payment_id,
        amount_minor=row.amount_minor,
        currency=row.currency,
    )


def candidate_keys(row: PaymentRow) -> tuple[bytes, bytes]:
    """Both keys a payment can have in the open table (without and with an intent)."""
    created = row.created_at.timestamp()
    return entry_key(row.id, created, False), entry_key(row.id, created, True)


def status_event(after: PaymentRow, previous: Status, occurred_at: datetime) -> StatusUpdate:
    return StatusUpdate(
        payment_id=after.id,
        status=after.status,
        previous_status=previous,
        amount_minor=after.amount_minor,
        currency=after.currency,
        provider_payment_id=after.provider_payment_id,
        source=after.status_source,
        version=after.version,
        occurred_at=occurred_at,
        tenant_id=after.tenant_id,
    )


def decide(change: PaymentChange, last: Emitted | None, *, now: float) -> Decision:
    """The table update and the event for one change (``now``: epoch seconds).

    A payment is in the open table exactly while its latest row is not final, under the key of
    that row. An event is emitted when the row's version is newer than the last event's and its
    status differs from the last event's status: a real change (update or snapshot) emits once;
    a replay of an older version, or a change that does not touch the status, emits nothing.
    With no `last emitted` entry, a row final for longer than the entries are kept
    (``EMITTED_RETENTION_SECONDS``, by its ``updated_at``) emits nothing: its entry was dropped
    after it was announced.
    """
    row = change.after or change.before
    assert row is not None
    entry = open_entry(change.after) if change.after is not None else None
    stale = tuple(k for k in candidate_keys(row) if entry is None or k != entry.key)
    if change.op is Op.DELETE or change.after is None:
        return Decision(stale_keys=stale)
    after = change.after
    if last is None and forgotten(after, now):
        return Decision(stale_keys=stale, entry=entry)
    last = last or NOTHING_EMITTED
    emit = None
    if after.version > last.version and after.status is not last.status:
        # The row before this change is the truth of "previous" when the change carries it; a
        # snapshot does not: then it is what consumers last heard.
        before = change.before
        previous = (
            before.status
            if before is not None and before.status is not after.status
            else (last.status)
        )
        emit = status_event(after, previous, after.updated_at)
    return Decision(stale_keys=stale, entry=entry, emit=emit)


def forgotten(row: PaymentRow, now: float) -> bool:
    """Whether the row has been final for longer than `last emitted` entries are kept."""
    return row.status.is_final and row.updated_at.timestamp() < now - EMITTED_RETENTION_SECONDS


def emitted_after(event: StatusUpdate, now: float) -> Emitted:
    return Emitted(event.version, event.status, now if event.status.is_final else None)
