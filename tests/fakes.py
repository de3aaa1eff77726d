"""In-memory fakes of the repository, the Stripe gateway, the worker's open-payments table and
the status events the API reads, for unit tests and benchmarks.

They follow the same rules as the real adapters (guarded transitions, one intent per creation
claim, webhook inbox dedupe) so tests written against them say something about production.
"""

from __future__ import annotations

import bisect
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from api.emitted import EmittedEvents
from payments.adapters.stripe_gateway import cancel_key, creation_key
from payments.domain.errors import (
    Conflict,
    NotFound,
    ProviderDeclined,
    ProviderObjectMissing,
    RetryableError,
)
from payments.domain.events import StatusUpdate
from payments.domain.intents import STATUS_EVENT_TYPES
from payments.domain.payment import DEFAULT_TENANT, IntentMatch, Payment
from payments.domain.status import Status, allowed_from
from payments.ports import (
    AuditEvent,
    EventPage,
    InboxEvent,
    InsertResult,
    Intent,
    NewPayment,
    PageCursor,
    ProviderEvent,
    Retry,
    StatusChange,
    TransitionOutcome,
    TransitionResult,
    WebhookResult,
)


def _now() -> datetime:
    return datetime.now(UTC)


class FakePaymentRepository:
    """A ``PaymentStore`` in a dict, thread-safe, with the real repository's rules."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.payments: dict[UUID, Payment] = {}
        self.claims: dict[UUID, datetime | None] = {}
        self.audit: list[AuditEvent] = []
        self.inbox: dict[str, dict[str, Any]] = {}
        self.cursors: dict[str, str] = {}
        self.retries: dict[UUID, Retry] = {}
        self._ids = itertools.count(1)
        self._tick = itertools.count()

    def _stamp(self) -> datetime:
        # Strictly increasing timestamps keep keyset pagination deterministic.
        return _now() + timedelta(microseconds=next(self._tick))

    # reads
    def get(self, payment_id: UUID, *, tenant_id: str | None = None) -> Payment | None:
        with self._lock:
            found = self.payments.get(payment_id)
        if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
            return None
        return found

    def get_for_read(self, payment_id: UUID, *, tenant_id: str | None = None) -> Payment | None:
        return self.get(payment_id, tenant_id=tenant_id)

    def get_by_key(self, idempotency_key: str, tenant_id: str = DEFAULT_TENANT) -> Payment | None:
        with self._lock:
            return next(
                (
                    p
                    for p in self.payments.values()
                    if p.idempotency_key == idempotency_key and p.tenant_id == tenant_id
                ),
                None,
            )

    def get_by_provider_id(self, provider_payment_id: str) -> Payment | None:
        with self._lock:
            return next(
                (p for p in self.payments.values() if p.provider_payment_id == provider_payment_id),
                None,
            )

    def events(self, payment_id: UUID) -> list[AuditEvent]:
        with self._lock:
            return [e for e in self.audit if e.payment_id == payment_id]

    def webhooks(self, payment_id: UUID, *, limit: int = 50) -> list[InboxEvent]:
        with self._lock:
            found = [
                InboxEvent(
                    event_id=event_id,
                    type=row["type"],
                    received_at=row["received_at"],
                    processed_at=row["received_at"],
                    outcome=row.get("outcome"),
                    reason=row.get("reason"),
                )
                for event_id, row in self.inbox.items()
                if row.get("payment_id") == payment_id
            ]
        return sorted(found, key=lambda e: (e.received_at, e.event_id))[:limit]

    def list_page(
        self,
        *,
        status: Status | None = None,
        limit: int = 50,
        after: PageCursor | None = None,
        tenant_id: str | None = None,
    ) -> tuple[list[Payment], PageCursor | None]:
        with self._lock:
            rows = sorted(
                (p for p in self.payments.values() if tenant_id in (None, p.tenant_id)),
                key=lambda p: (p.created_at, p.id),
            )
        if status is not None:
            rows = [p for p in rows if p.status is status]
        if after is not None:
            rows = [p for p in rows if (p.created_at, p.id) > (after.created_at, after.id)]
        page = rows[:limit]
        cursor = PageCursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return page, cursor

    def count_by_status(self) -> dict[Status, int]:
        counts = {s: 0 for s in Status}
        with self._lock:
            for p in self.payments.values():
                counts[p.status] += 1
        return counts

    def ping(self, *, replica: bool = False) -> None:
        return None

    # writes
    def insert_pending(self, new: NewPayment) -> InsertResult:
        with self._lock:
            existing = self.get_by_key(new.idempotency_key, new.tenant_id)
            if existing is not None:
                return InsertResult(existing, False, self.claims.get(existing.id))
            now = self._stamp()
            payment = Payment(
                id=new.id,
                idempotency_key=new.idempotency_key,
                request_hash=new.request_hash,
                money=new.money,
                status=Status.PENDING,
                version=1,
                created_at=now,
                updated_at=now,
                customer_email=new.customer_email,
                description=new.description,
                metadata=dict(new.metadata or {}),
                tenant_id=new.tenant_id,
            )
            self.payments[payment.id] = payment
            self.claims[payment.id] = now
            return InsertResult(payment, True, now)

    def _bump(self, payment: Payment, **changes: Any) -> Payment:
        updated = replace(payment, version=payment.version + 1, updated_at=self._stamp(), **changes)
        self.payments[payment.id] = updated
        return updated

    def claim_creation(self, payment_id: UUID, *, lease_seconds: float = 60.0) -> Payment | None:
        with self._lock:
            payment = self.payments.get(payment_id)
            if payment is None or payment.status is not Status.PENDING:
                return None
            if payment.provider_payment_id is not None:
                return None
            claimed = self.claims.get(payment_id)
            if claimed is not None and claimed > _now() - timedelta(seconds=lease_seconds):
                return None
            self.claims[payment_id] = _now()
            return self._bump(payment)

    def release_creation(self, payment_id: UUID) -> None:
        with self._lock:
            payment = self.payments.get(payment_id)
            held = self.claims.get(payment_id) is not None
            if payment is not None and payment.provider_payment_id is None and held:
                self.claims[payment_id] = None
                self._bump(payment)

    def open_payments(self, payment_ids: Iterable[UUID]) -> dict[UUID, Payment]:
        with self._lock:
            found = (self.payments.get(pid) for pid in payment_ids)
            return {p.id: p for p in found if p is not None and p.is_open}

    def open_payments_by_intent(self, intent_ids: Iterable[str]) -> dict[str, Payment]:
        wanted = set(intent_ids)
        with self._lock:
            return {
                p.provider_payment_id: p
                for p in self.payments.values()
                if p.provider_payment_id in wanted and p.is_open
            }

    def _owned(self, payment: Payment, intent: Intent | None) -> TransitionResult | None:
        """None when ``intent`` may move ``payment``; else the refusal."""
        if intent is None:
            return None
        match, reason = payment.match_intent(intent.facts)
        if match is IntentMatch.FOREIGN:
            return TransitionResult(
                TransitionOutcome.FOREIGN_INTENT, payment, payment.status, reason
            )
        return None

    def transition(self, payment_id: UUID, change: StatusChange) -> TransitionResult:
        with self._lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                return TransitionResult(TransitionOutcome.NOT_FOUND, None, None)
            refused = self._owned(payment, change.intent)
            if refused is not None:
                return refused
            intent = change.intent
            if payment.status is change.to:
                if intent is not None:
                    payment = self.record_provider_status(payment_id, intent).payment or payment
                return TransitionResult(TransitionOutcome.NOOP, payment, payment.status)
            if payment.status not in allowed_from(change.to):
                return TransitionResult(TransitionOutcome.REFUSED, payment, payment.status, "final")
            previous = payment.status
            changes: dict[str, Any] = {"status": change.to}
            if intent is not None:
                changes["provider_status"] = intent.status
                changes["provider_payment_id"] = payment.provider_payment_id or intent.id
            if change.to in (Status.FAILED, Status.EXPIRED):
                changes["failure_code"] = change.failure_code or payment.failure_code
                changes["failure_message"] = change.failure_message or payment.failure_message
            updated = self._bump(payment, **changes)
            self.audit.append(
                AuditEvent(
                    id=next(self._ids),
                    payment_id=payment_id,
                    from_status=previous,
                    to_status=change.to,
                    source=change.source,
                    provider_event_id=change.provider_event_id,
                    version=updated.version,
                    created_at=updated.updated_at,
                )
            )
            return TransitionResult(TransitionOutcome.APPLIED, updated, previous)

    def record_provider_status(self, payment_id: UUID, intent: Intent) -> TransitionResult:
        with self._lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                return TransitionResult(TransitionOutcome.NOT_FOUND, None, None)
            refused = self._owned(payment, intent)
            if refused is not None:
                return refused
            changed = (
                payment.provider_status != intent.status or payment.provider_payment_id is None
            )
            if payment.is_open and changed:
                payment = self._bump(
                    payment,
                    provider_status=intent.status,
                    provider_payment_id=payment.provider_payment_id or intent.id,
                )
            return TransitionResult(TransitionOutcome.NOOP, payment, payment.status)

    def attach_intent(self, payment_id: UUID, intent: Intent) -> Payment:
        with self._lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                raise NotFound(
                    f"payment {payment_id} does not exist; cannot attach intent {intent.id}"
                )
            refused = self._owned(payment, intent)
            if refused is not None:
                raise Conflict(f"refusing to attach intent {intent.id}: {refused.reason}")
            return self._bump(
                payment,
                provider_payment_id=intent.id,
                provider_status=intent.status,
                client_secret=intent.client_secret or payment.client_secret,
            )

    def apply_webhook(
        self,
        event: ProviderEvent,
        payload: Mapping[str, Any],
        change: StatusChange | None,
        *,
        handled: bool = True,
    ) -> WebhookResult:
        with self._lock:
            if event.id in self.inbox:
                return WebhookResult(duplicate=True, outcome="duplicate")
            row: dict[str, Any] = {
                "type": event.type,
                "payload": dict(payload),
                "received_at": self._stamp(),
            }
            self.inbox[event.id] = row
            intent = event.intent
            found = None
            if intent is not None and handled:
                found = self.get_by_provider_id(intent.id)
                if found is None and intent.payment_uuid is not None:
                    found = self.payments.get(intent.payment_uuid)
            if found is None or intent is None:
                row["outcome"] = "unknown_payment" if intent is not None and handled else "ignored"
                return WebhookResult(duplicate=False, outcome=row["outcome"])
            row["payment_id"] = found.id
            if change is not None:
                result = self.transition(found.id, change)
                outcome = result.outcome.value
            else:
                result = self.record_provider_status(found.id, intent)
                noop = result.outcome is TransitionOutcome.NOOP
                outcome = "provider_status" if noop else result.outcome.value
            row["outcome"] = outcome
            row["reason"] = result.reason or None
            return WebhookResult(
                False, outcome, result.payment or found, result, result.reason or None
            )

    def get_cursor(self, name: str) -> str | None:
        with self._lock:
            return self.cursors.get(name)

    def set_cursor(self, name: str, value: str) -> None:
        with self._lock:
            self.cursors[name] = value

    def load_retries(self, *, forget_before: float) -> dict[UUID, Retry]:
        with self._lock:
            self.retries = {k: r for k, r in self.retries.items() if r.next_at >= forget_before}
            return dict(self.retries)

    def save_retry(self, payment_id: UUID, retry: Retry) -> None:
        with self._lock:
            self.retries[payment_id] = retry

    def drop_retry(self, payment_id: UUID) -> None:
        with self._lock:
            self.retries.pop(payment_id, None)


@dataclass
class FakeIntent:
    id: str
    status: str
    amount: int
    currency: str
    client_secret: str
    metadata: dict[str, str]
    created: int
    failure_code: str | None = None
    failure_message: str | None = None
    cancellation_reason: str | None = None

    def freeze(self) -> Intent:
        return Intent(
            id=self.id,
            status=self.status,
            amount=self.amount,
            currency=self.currency,
            client_secret=self.client_secret,
            payment_id=self.metadata.get("payment_id"),
            failure_code=self.failure_code,
            failure_message=self.failure_message,
            created=self.created,
            cancellation_reason=self.cancellation_reason,
        )


class FakeStripeGateway:
    """A stateful Stripe with PaymentIntents and events; counts calls.

    Set ``fail_with`` to an exception to make every call raise it (e.g. ``RetryableError``),
    or ``fail_next`` to fail only the next N calls. Idempotency keys are honoured like
    Stripe's: the same key returns the same intent. Events are listed by id order, a page of
    ``page_size`` at a time, like the real gateway's pages (oldest first). ``on_call`` runs
    before each call is answered, in the caller's thread (a benchmark's rate limit and latency).
    """

    page_size = 100

    def __init__(
        self,
        *,
        honour_idempotency: bool = True,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        # localstripe ignores Idempotency-Key; False makes the fake do the same.
        self.honour_idempotency = honour_idempotency
        self.on_call = on_call
        self._lock = threading.Lock()
        self.intents: dict[str, FakeIntent] = {}
        self.by_key: dict[str, str] = {}
        # Cancel keys as sent, and Stripe's first answer to each (a refusal included: Stripe
        # replays it to every request with the same key for 24 hours).
        self.cancel_keys: list[str] = []
        self.cancel_answers: dict[str, Intent | ProviderDeclined] = {}
        self.events: list[ProviderEvent] = []
        self.calls = 0
        self.fail_with: Exception | None = None
        self.fail_next = 0
        self.latency_seconds = 0.0

    def _call(self) -> None:
        if self.on_call is not None:
            self.on_call()
        with self._lock:
            self.calls += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                raise self.fail_with or RetryableError("fake Stripe: unavailable")
            if self.fail_with is not None:
                raise self.fail_with
        if self.latency_seconds:
            time.sleep(self.latency_seconds)

    def _emit(self, kind: str, intent: FakeIntent) -> None:
        self.events.append(
            ProviderEvent(
                id=f"evt_{secrets.token_hex(8)}",
                type=kind,
                created=int(time.time()),
                intent=intent.freeze(),
            )
        )

    def create_intent(self, payment: Payment) -> Intent:
        self._call()
        with self._lock:
            key = creation_key(payment)
            existing = self.by_key.get(key)
            if existing is not None and self.honour_idempotency:
                return self.intents[existing].freeze()
            ident = f"pi_{secrets.token_hex(8)}"
            intent = FakeIntent(
                id=ident,
                status="requires_payment_method",
                amount=payment.amount_minor,
                currency=payment.currency,
                client_secret=f"{ident}_secret_{secrets.token_hex(6)}",
                metadata={**payment.metadata, "payment_id": str(payment.id)},
                created=int(time.time()),
            )
            self.intents[ident] = intent
            self.by_key[key] = ident
            return intent.freeze()

    def _get(self, intent_id: str) -> FakeIntent:
        intent = self.intents.get(intent_id)
        if intent is None:
            raise ProviderObjectMissing(
                f"no such PaymentIntent: {intent_id!r}", code="resource_missing", field="intent"
            )
        return intent

    def retrieve_intent(self, intent_id: str) -> Intent:
        self._call()
        with self._lock:
            return self._get(intent_id).freeze()

    def cancel_intent(
        self, intent_id: str, *, payment_id: UUID, reason: str, decision: int
    ) -> Intent:
        self._call()
        key = cancel_key(payment_id, reason, decision)
        with self._lock:
            self.cancel_keys.append(key)
            seen = self.cancel_answers.get(key) if self.honour_idempotency else None
            if isinstance(seen, ProviderDeclined):
                raise seen
            if seen is not None:
                return seen
            try:
                answer = self._cancel(intent_id, reason)
            except ProviderDeclined as refused:
                self.cancel_answers[key] = refused
                raise
            self.cancel_answers[key] = answer
            return answer

    def _cancel(self, intent_id: str, reason: str) -> Intent:
        intent = self._get(intent_id)
        if intent.status in ("succeeded", "canceled", "processing"):
            raise ProviderDeclined(
                f"You cannot cancel this PaymentIntent because it has a status of {intent.status}.",
                code="payment_intent_unexpected_state",
            )
        intent.status = "canceled"
        intent.cancellation_reason = reason
        self._emit("payment_intent.canceled", intent)
        return intent.freeze()

    def cancel_elsewhere(self, intent_id: str, reason: str | None) -> None:
        """Stripe cancels the intent on someone else's request (the dashboard, another
        integration), with ``reason`` or none."""
        with self._lock:
            intent = self._get(intent_id)
            intent.status = "canceled"
            intent.cancellation_reason = reason
            self._emit("payment_intent.canceled", intent)

    def confirm_intent(
        self, intent_id: str, payment_method: str, *, idempotency_key: str
    ) -> Intent:
        """Stripe's test payment methods: ``pm_card_visa`` succeeds,
        ``pm_card_chargeDeclined`` is declined, ``pm_card_threeDSecureRequired`` needs 3-D Secure.
        """
        self._call()
        with self._lock:
            intent = self._get(intent_id)
            if intent.status not in ("requires_payment_method", "requires_confirmation"):
                raise ProviderDeclined(
                    f"You cannot confirm this PaymentIntent because it has a status of "
                    f"{intent.status}.",
                    code="payment_intent_unexpected_state",
                )
            if payment_method == "pm_card_chargeDeclined":
                intent.status = "requires_payment_method"
                intent.failure_code = "card_declined"
                intent.failure_message = "Your card was declined."
                self._emit("payment_intent.payment_failed", intent)
                raise ProviderDeclined(
                    f"confirming PaymentIntent {intent_id}: card declined: Your card was declined.",
                    code="card_declined",
                )
            if payment_method == "pm_card_threeDSecureRequired":
                intent.status = "requires_action"
            else:
                intent.status = "succeeded"
                intent.failure_code = intent.failure_message = None
                self._emit("payment_intent.succeeded", intent)
            return intent.freeze()

    def event_pages(self, cursor: str | None, *, since: int) -> Iterator[EventPage]:
        """Status events after the cursor (the index of the last one handed out), else those
        created after ``since``; oldest first, ``page_size`` a page, one call a page."""
        start = int(json.loads(cursor)["next"]) if cursor else None
        while True:
            self._call()
            with self._lock:
                if start is None:
                    start = next(
                        (i for i, e in enumerate(self.events) if e.created > since),
                        len(self.events),
                    )
                window = self.events[start : start + self.page_size]
            found = [e for e in window if e.type in STATUS_EVENT_TYPES]
            start += len(window)
            if window:
                yield EventPage(found, json.dumps({"next": start}))
            if len(window) < self.page_size:
                return

    def recent_events(self, *, since: int) -> Iterator[ProviderEvent]:
        self._call()
        with self._lock:
            found = [e for e in self.events if e.created > since]
        yield from (e for e in found if e.type in STATUS_EVENT_TYPES)

    lists_intents_by_created = True

    def intent_pages(self, created_from: int, created_to: int) -> Iterator[list[Intent]] | None:
        """Intents created in ``[created_from, created_to)``, newest first like Stripe,
        ``page_size`` a page, one call a page (None when ``lists_intents_by_created`` is off,
        like the local stand-in)."""
        if not self.lists_intents_by_created:
            return None
        return self._intent_pages(created_from, created_to)

    def _intent_pages(self, created_from: int, created_to: int) -> Iterator[list[Intent]]:
        with self._lock:
            found = sorted(
                (i for i in self.intents.values() if created_from <= i.created < created_to),
                key=lambda i: (i.created, i.id),
                reverse=True,
            )
        for start in range(0, max(1, len(found)), self.page_size):
            self._call()
            with self._lock:
                yield [i.freeze() for i in found[start : start + self.page_size]]

    # test helpers: what a customer does on Stripe's side
    def succeed(self, intent_id: str) -> ProviderEvent:
        with self._lock:
            intent = self._get(intent_id)
            intent.status = "succeeded"
            intent.failure_code = intent.failure_message = None
            self._emit("payment_intent.succeeded", intent)
            return self.events[-1]

    def decline(self, intent_id: str, code: str = "card_declined") -> ProviderEvent:
        with self._lock:
            intent = self._get(intent_id)
            intent.status = "requires_payment_method"
            intent.failure_code = code
            intent.failure_message = "Your card was declined."
            self._emit("payment_intent.payment_failed", intent)
            return self.events[-1]

    def cancel_from_dashboard(self, intent_id: str) -> ProviderEvent:
        """The merchant cancels the intent on Stripe's side (no reason given)."""
        with self._lock:
            intent = self._get(intent_id)
            intent.status = "canceled"
            self._emit("payment_intent.canceled", intent)
            return self.events[-1]

    def intents_for(self, payment_id: UUID) -> list[Intent]:
        with self._lock:
            return [
                i.freeze()
                for i in self.intents.values()
                if i.metadata.get("payment_id") == str(payment_id)
            ]


@dataclass(frozen=True, slots=True)
class OpenEntryFake:
    payment_id: UUID
    status: Status
    created_at: float
    provider_payment_id: str | None


class MemoryOpenPayments:
    """The worker's open-payments table (``OpenPayments``) in a sorted list."""

    def __init__(self, entries: Iterable[OpenEntryFake] = ()) -> None:
        self.entries = sorted(entries, key=lambda e: (e.created_at, str(e.payment_id)))
        self._ages = [e.created_at for e in self.entries]

    @classmethod
    def of(cls, payments: Iterable[Payment]) -> MemoryOpenPayments:
        return cls(
            OpenEntryFake(p.id, p.status, p.created_at.timestamp(), p.provider_payment_id)
            for p in payments
            if p.is_open
        )

    def count(self) -> int:
        return len(self.entries)

    def created_between(self, start: float, end: float) -> Iterator[OpenEntryFake]:
        low, high = bisect.bisect_left(self._ages, start), bisect.bisect_left(self._ages, end)
        yield from self.entries[low:high]

    def without_intent(self, created_before: float) -> Iterator[OpenEntryFake]:
        for entry in self.created_between(0.0, created_before):
            if entry.provider_payment_id is None:
                yield entry


class InMemoryStatusEvents:
    """The API's ``StatusEventSource`` without Kafka: the events a test hands in, by payment."""

    def __init__(self) -> None:
        self.events: dict[UUID, list[StatusUpdate]] = {}

    def events_for(self, payment_id: UUID, since: datetime) -> EmittedEvents:
        return EmittedEvents(events=list(self.events.get(payment_id, [])))
