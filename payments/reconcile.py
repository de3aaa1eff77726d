"""Reconciliation: find out from Stripe what happened to pending payments, and write it down.

One cycle, over the pending payments a worker owns:

1. **Event sweep.** List Stripe's ``payment_intent.*`` events created since the durable cursor
   (one ``events.list`` per type: the local stand-in has no wildcard, and real Stripe accepts
   the same calls) and resolve every owned payment they name. Cost grows with what *changed*,
   not with how much is pending.
2. **Individual checks** only where the sweep cannot help: payments with no intent yet (the
   creation is finished with the payment's own idempotency key), payments past the TTL (their
   intent is canceled and they expire, unless Stripe already has a final status), and stale
   payments with no event for ``reconcile_stale_after_seconds`` (retrieved at most once per that
   period, oldest check first, within a per-cycle budget so a cycle never outruns its interval).

Everything is written through the repository's guarded transition (source ``reconciler`` or
``expiry``); the change stream then removes resolved payments from the pending table and emits
their ``payment-status-update`` events, so the database stays the single source of truth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from uuid import UUID

from payments.domain.errors import PaymentsError, RetryableError
from payments.domain.payment import Payment
from payments.domain.status import Source, Status
from payments.logs import get_logger
from payments.ports import Intent, ProviderEvent, TransitionOutcome, TransitionResult

log = get_logger("payments.reconcile")

EVENT_TYPES = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
)
# Events are listed from a little before the cursor: Stripe's `created` has one-second
# resolution and events of the same second may land after a list. Applying one twice is a no-op.
CURSOR_OVERLAP_SECONDS = 120
# A payment this young without an intent is probably still being created by its API request.
CREATION_GRACE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """What the pending table knows of a payment (from the change stream)."""

    payment_id: UUID
    partition: int
    version: int
    created_at: float  # epoch seconds
    provider_payment_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["payment_id"] = str(self.payment_id)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PendingEntry:
        return cls(
            payment_id=UUID(str(doc["payment_id"])),
            partition=int(doc["partition"]),
            version=int(doc["version"]),
            created_at=float(doc["created_at"]),
            provider_payment_id=doc.get("provider_payment_id"),
        )


class Store(Protocol):
    def transition(
        self,
        payment_id: UUID,
        to: Status,
        *,
        source: Source,
        provider_status: str | None = None,
        provider_event_id: str | None = None,
        failure_code: str | None = None,
        failure_message: str | None = None,
    ) -> TransitionResult: ...

    def set_provider_status(self, payment_id: UUID, provider_status: str) -> Payment | None: ...

    def get_cursor(self, name: str) -> str | None: ...

    def set_cursor(self, name: str, value: str) -> None: ...


class Provider(Protocol):
    def retrieve_intent(self, intent_id: str) -> Intent: ...

    def cancel_intent(self, intent_id: str) -> Intent: ...

    def list_events(self, event_type: str, *, created_gt: int) -> Iterator[ProviderEvent]: ...


class Creator(Protocol):
    def finish_creation(self, payment_id: UUID) -> Payment | None: ...


@dataclass(frozen=True)
class ReconcilePolicy:
    """The timing rules of reconciliation (from the settings of the same names)."""

    interval_seconds: float = 600.0
    stale_after_seconds: float = 3_600.0
    ttl_seconds: float = 86_400.0


@dataclass
class CycleReport:
    """The figures of one cycle (served by the worker's web views and CLI)."""

    started_at: float
    partitions: list[int]
    pending: int = 0
    swept_events: int = 0
    resolved: int = 0
    retrieved: int = 0
    created: int = 0
    expired: int = 0
    deferred: int = 0
    errors: int = 0
    stripe_calls: int = 0
    duration_seconds: float = 0.0
    # Every pending payment this worker owned in this cycle (each is some worker's, once), and
    # the ones that needed a Stripe look at (named by an event, or checked one by one).
    owned_ids: list[str] = field(default_factory=list)
    checked_ids: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["checked"] = len(self.checked_ids)
        del doc["checked_ids"], doc["owned_ids"]
        return doc


def cursor_name(partition: int) -> str:
    return f"stripe-events:p{partition}"


def crossed_checkpoint(age: float, window: float, stale_after: float) -> bool:
    """True when a payment's age passed a checkpoint (``stale_after`` x 1, 2, 4, 8 ...) within
    the last ``window`` seconds.

    A payment with no Stripe event is retrieved one by one at ages 1 h, 2 h, 4 h, 8 h, 16 h
    (with the defaults): a handful of calls over its life, whatever the pending count, and none
    of them a burst after a restart. The event sweep remains what finds changes; these checks
    only guard against an event the sweep could not see.
    """
    checkpoint = stale_after
    while checkpoint <= age:
        if checkpoint > age - window:
            return True
        checkpoint *= 2
    return False


class Reconciler:
    """One reconciliation cycle over owned pending entries; no framework, injected adapters."""

    def __init__(
        self,
        store: Store,
        provider: Provider,
        creator: Creator,
        policy: ReconcilePolicy,
        *,
        calls: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.provider = provider
        self.creator = creator
        self.policy = policy
        self._calls = calls
        self._clock = clock
        # When the previous cycle started: the window in which ages crossed a checkpoint.
        self._previous_start: float | None = None
        # Payments whose checkpoint came while the budget was spent or Stripe failed: first in
        # line next cycle. (Lost on restart: their next checkpoint, or expiry, still comes.)
        self._owed: set[UUID] = set()

    def individual_budget(self, rps: float) -> int:
        """Individual Stripe calls one cycle may spend: half the interval at this worker's rate,
        the rest is headroom for the sweep, webhooks' API calls and retries."""
        return max(1, int(rps * self.policy.interval_seconds * 0.5))

    def run(
        self, entries: Iterable[PendingEntry], partitions: Sequence[int], *, rps: float
    ) -> CycleReport:
        now = self._clock()
        calls_before = self._calls()
        report = CycleReport(started_at=now, partitions=sorted(partitions))
        owned = {e.payment_id: e for e in entries if e.partition in set(partitions)}
        report.pending = len(owned)
        report.owned_ids = sorted(str(pid) for pid in owned)
        by_intent = {e.provider_payment_id: e for e in owned.values() if e.provider_payment_id}
        done: set[UUID] = set()

        high_water = self._sweep(owned, by_intent, partitions, now, report, done)
        self._individual(owned, done, now, rps, report)

        if partitions and high_water is not None:
            for partition in partitions:
                self.store.set_cursor(cursor_name(partition), str(high_water))
        self._owed &= set(owned)
        self._previous_start = now
        report.stripe_calls = self._calls() - calls_before
        report.duration_seconds = round(self._clock() - now, 3)
        log.info("reconciliation cycle", **report.summary())
        return report

    # -- 1. event sweep ---------------------------------------------------------------------

    def _sweep(
        self,
        owned: dict[UUID, PendingEntry],
        by_intent: dict[str, PendingEntry],
        partitions: Sequence[int],
        now: float,
        report: CycleReport,
        done: set[UUID],
    ) -> int | None:
        if not partitions:
            return None
        stored = [self.store.get_cursor(cursor_name(p)) for p in partitions]
        # A partition never swept starts one stale period back; older payments are retrieved.
        default = int(now - self.policy.stale_after_seconds)
        since = min(int(c) if c else default for c in stored)
        high_water = since
        try:
            for event_type in EVENT_TYPES:
                for event in self.provider.list_events(
                    event_type, created_gt=since - CURSOR_OVERLAP_SECONDS
                ):
                    report.swept_events += 1
                    high_water = max(high_water, event.created)
                    entry = self._entry_for(event.intent, owned, by_intent)
                    if entry is None or entry.payment_id in done or event.intent is None:
                        continue
                    report.checked_ids.append(str(entry.payment_id))
                    if self._apply(entry.payment_id, event.intent, Source.RECONCILER, event.id):
                        report.resolved += 1
                        done.add(entry.payment_id)
        except PaymentsError as exc:
            # Keep the old cursor: the next cycle lists the same window again.
            report.errors += 1
            log.warning("event sweep failed; cursor kept", error=str(exc))
            return None
        return high_water

    @staticmethod
    def _entry_for(
        intent: Intent | None,
        owned: dict[UUID, PendingEntry],
        by_intent: dict[str, PendingEntry],
    ) -> PendingEntry | None:
        if intent is None:
            return None
        if intent.payment_id:
            try:
                entry = owned.get(UUID(intent.payment_id))
            except ValueError:
                entry = None
            if entry is not None:
                return entry
        return by_intent.get(intent.id)

    # -- 2. individual checks ---------------------------------------------------------------

    def _individual(
        self,
        owned: dict[UUID, PendingEntry],
        done: set[UUID],
        now: float,
        rps: float,
        report: CycleReport,
    ) -> None:
        ttl = self.policy.ttl_seconds
        stale_after = self.policy.stale_after_seconds
        interval = self.policy.interval_seconds
        window = interval if self._previous_start is None else now - self._previous_start
        window = min(max(window, interval), ttl)
        due: list[tuple[float, PendingEntry]] = []
        for entry in owned.values():
            if entry.payment_id in done:
                continue
            age = now - entry.created_at
            if age >= ttl:
                due.append((0.0, entry))  # expiry first
            elif entry.provider_payment_id is None:
                if age >= CREATION_GRACE_SECONDS:
                    due.append((1.0, entry))
            elif entry.payment_id in self._owed:
                due.append((2.0, entry))
            elif crossed_checkpoint(age, window, stale_after):
                due.append((3.0 + entry.created_at, entry))
        due.sort(key=lambda item: item[0])
        budget = self.individual_budget(rps)
        report.deferred = max(0, len(due) - budget)
        self._owed = {e.payment_id for _, e in due[budget:] if e.provider_payment_id}
        for _, entry in due[:budget]:
            report.checked_ids.append(str(entry.payment_id))
            try:
                if now - entry.created_at >= ttl:
                    self._expire(entry, report)
                elif entry.provider_payment_id is None:
                    self.creator.finish_creation(entry.payment_id)
                    report.created += 1
                else:
                    intent = self.provider.retrieve_intent(entry.provider_payment_id)
                    report.retrieved += 1
                    if self._apply(entry.payment_id, intent, Source.RECONCILER, None):
                        report.resolved += 1
            except RetryableError as exc:
                report.errors += 1
                if entry.provider_payment_id is not None:
                    self._owed.add(entry.payment_id)
                log.warning(
                    "stripe unavailable; retried next cycle",
                    payment_id=str(entry.payment_id),
                    error=str(exc),
                )
            except PaymentsError as exc:
                report.errors += 1
                log.error(
                    "reconciliation of a payment failed",
                    payment_id=str(entry.payment_id),
                    error=str(exc),
                )

    def _expire(self, entry: PendingEntry, report: CycleReport) -> None:
        """Past the TTL: take Stripe's final status if it has one, else cancel and expire."""
        if entry.provider_payment_id is not None:
            intent = self.provider.retrieve_intent(entry.provider_payment_id)
            if intent.outcome() in (Status.SUCCEEDED, Status.CANCELED):
                if self._apply(entry.payment_id, intent, Source.RECONCILER, None):
                    report.resolved += 1
                return
            if intent.status != "canceled":
                self.provider.cancel_intent(entry.provider_payment_id)
        result = self.store.transition(entry.payment_id, Status.EXPIRED, source=Source.EXPIRY)
        if result.outcome is TransitionOutcome.APPLIED:
            report.expired += 1
            log.info("payment expired", payment_id=str(entry.payment_id))

    def _apply(
        self, payment_id: UUID, intent: Intent, source: Source, event_id: str | None
    ) -> bool:
        """Write what Stripe says; True when the payment's status changed now."""
        target = intent.outcome()
        if target is None:
            self.store.set_provider_status(payment_id, intent.status)
            return False
        result = self.store.transition(
            payment_id,
            target,
            source=source,
            provider_status=intent.status,
            provider_event_id=event_id,
            failure_code=intent.failure_code,
            failure_message=intent.failure_message,
        )
        if result.outcome is TransitionOutcome.REFUSED and result.payment is not None:
            log.warning(
                "stripe disagrees with a final status; keeping ours",
                payment_id=str(payment_id),
                ours=result.payment.status.value,
                stripe=intent.status,
            )
        return result.outcome is TransitionOutcome.APPLIED
