"""``PostgresRepository``: the ``PaymentRepository`` port over the stores of this package.

Writes go to the primary. A step that is one statement runs in autocommit, one round trip with
no BEGIN/COMMIT around it: storing a payment, attaching its intent, a claim, a read, and a status
change, whose guarded write and audit row are one statement. A webhook's inbox row and its
effect commit together, in one pipelined transaction (BEGIN travels with the first statement,
COMMIT with the last). Reads of single payments may go to a replica (``get_for_read``), falling
back to the primary. A database that does not answer leaves this class as ``StoreUnavailable``,
whatever the driver called it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from payments.adapters.postgres import audit, cursors, inbox, payment_store
from payments.adapters.postgres.rows import Cursor
from payments.domain.errors import Conflict, NotFound, StoreUnavailable
from payments.domain.payment import Payment
from payments.domain.status import Status
from payments.logs import get_logger
from payments.ports import (
    AuditEvent,
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

log = get_logger(__name__)


@contextmanager
def _answering(where: str) -> Iterator[None]:
    """The driver's and the pool's "no answer" (refused, lost, timed out) as ``StoreUnavailable``;
    any other database error (a bug, a constraint) stays what it is."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise StoreUnavailable(f"the {where} did not answer: {exc}") from exc


class PostgresRepository:
    """Payments in PostgreSQL. Writes go to ``pool`` (primary); reads may use ``read_pool``."""

    def __init__(
        self,
        pool: ConnectionPool,
        read_pool: ConnectionPool | None = None,
        *,
        read_timeout_seconds: float = 2.0,
    ) -> None:
        self.pool = pool
        self.read_pool = read_pool
        self.read_timeout_seconds = read_timeout_seconds

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        """One transaction on the primary (committed on success, rolled back on error), in
        pipeline mode: statements are sent without waiting, and the client waits only where it
        reads a result, so BEGIN goes out with the first statement and the writes after the last
        read go out with COMMIT."""
        with (
            _answering("primary"),
            self.pool.connection() as conn,
            conn.pipeline(),
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            yield cur

    @contextmanager
    def _statement(self) -> Iterator[Cursor]:
        """A cursor on the primary in autocommit: each statement commits on its own, in one
        round trip. For steps that are one write (plus, at most, a read that explains a refusal)
        or only reads; ``_tx`` for several writes that must commit together."""
        with (
            _answering("primary"),
            self.pool.connection() as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            yield cur

    @contextmanager
    def _replica(self) -> Iterator[Cursor]:
        assert self.read_pool is not None
        with (
            _answering("replica"),
            self.read_pool.connection(timeout=self.read_timeout_seconds) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            yield cur

    # -- reads ------------------------------------------------------------------------------

    def ping(self, *, replica: bool = False) -> None:
        """Raise unless the primary (or a replica) answers ``SELECT 1``."""
        pool = self.read_pool if replica and self.read_pool is not None else self.pool
        with (
            _answering("primary" if pool is self.pool else "replica"),
            pool.connection(timeout=self.read_timeout_seconds) as conn,
        ):
            conn.execute("SELECT 1")

    def get(self, payment_id: UUID, *, tenant_id: str | None = None) -> Payment | None:
        """Read from the primary (always current); with ``tenant_id``, only that tenant's."""
        with self._statement() as cur:
            return payment_store.get(cur, payment_id, tenant_id)

    def get_for_read(self, payment_id: UUID, *, tenant_id: str | None = None) -> Payment | None:
        """Read from a replica; fall back to the primary when the row is not there (yet) or
        no replica answers. With ``tenant_id``, only that tenant's."""
        if self.read_pool is not None:
            try:
                with self._replica() as cur:
                    found = payment_store.get(cur, payment_id, tenant_id)
                if found is not None:
                    return found
            except StoreUnavailable as exc:
                log.warning(
                    "replica read failed, using primary", payment_id=str(payment_id), error=str(exc)
                )
        return self.get(payment_id, tenant_id=tenant_id)

    def open_payments(self, payment_ids: Iterable[UUID]) -> dict[UUID, Payment]:
        with self._statement() as cur:
            return payment_store.open_by_ids(cur, payment_ids)

    def open_payments_by_intent(self, intent_ids: Iterable[str]) -> dict[str, Payment]:
        with self._statement() as cur:
            return payment_store.open_by_intents(cur, intent_ids)

    def list_page(
        self,
        *,
        status: Status | None = None,
        limit: int = 50,
        after: PageCursor | None = None,
        tenant_id: str | None = None,
    ) -> tuple[list[Payment], PageCursor | None]:
        """One keyset page ordered by (created_at, id) and the cursor of the next page; with
        ``tenant_id``, of that tenant's payments only."""

        def page(cur: Cursor) -> tuple[list[Payment], PageCursor | None]:
            return payment_store.list_page(
                cur, status=status, limit=limit, after=after, tenant_id=tenant_id
            )

        if self.read_pool is not None:
            try:
                with self._replica() as cur:
                    return page(cur)
            except StoreUnavailable as exc:
                log.warning("replica list failed, using primary", error=str(exc))
        with self._statement() as cur:
            return page(cur)

    def events(self, payment_id: UUID) -> list[AuditEvent]:
        """The audit trail of one payment, oldest first."""
        with self._statement() as cur:
            return audit.events(cur, payment_id)

    def webhooks(self, payment_id: UUID, *, limit: int = 50) -> list[InboxEvent]:
        """The webhook events recorded for one payment (primary), oldest first."""
        with self._statement() as cur:
            return inbox.for_payment(cur, payment_id, limit)

    def count_by_status(self) -> dict[Status, int]:
        with self._statement() as cur:
            return payment_store.count_by_status(cur)

    # -- writes -----------------------------------------------------------------------------

    def insert_pending(self, new: NewPayment) -> InsertResult:
        """Insert the pending payment, or return the one already stored under the key.

        Concurrent inserts with one key: exactly one gets ``created=True``.
        """
        with self._statement() as cur:
            try:
                payment, created, claimed_at = payment_store.insert_pending(cur, new)
            except LookupError as exc:
                raise Conflict(str(exc)) from exc
        return InsertResult(payment, created, claimed_at)

    def claim_creation(self, payment_id: UUID, *, lease_seconds: float = 60.0) -> Payment | None:
        """Take the right to create this payment's intent, if nobody took it in the last
        ``lease_seconds``. None when the payment has an intent, is not pending, or is held."""
        with self._statement() as cur:
            return payment_store.claim_creation(cur, payment_id, lease_seconds)

    def release_creation(self, payment_id: UUID) -> None:
        """Give up the creation claim after a failed Stripe call, so a retry may claim at once."""
        with self._statement() as cur:
            payment_store.release_creation(cur, payment_id)

    def attach_intent(self, payment_id: UUID, intent: Intent) -> Payment:
        """Store the payment's intent. Attaching the same intent again is harmless; another
        intent, or one for other money, is refused (``Conflict``)."""
        with self._statement() as cur:
            attached = payment_store.attach_intent(cur, payment_id, intent)
            current = attached or payment_store.get(cur, payment_id)
        if attached is not None:
            return attached
        if current is None:
            raise NotFound(f"payment {payment_id} does not exist; cannot attach intent {intent.id}")
        _, reason = current.match_intent(intent.facts)
        raise Conflict(f"refusing to attach intent {intent.id} to payment {payment_id}: {reason}")

    def transition(self, payment_id: UUID, change: StatusChange) -> TransitionResult:
        """The guarded status change plus its audit row, in one statement."""
        with self._statement() as cur:
            return self._transition(cur, payment_id, change)

    def _transition(self, cur: Cursor, payment_id: UUID, change: StatusChange) -> TransitionResult:
        result = payment_store.transition(cur, payment_id, change)
        fields = {
            "payment_id": str(payment_id),
            "to_status": change.to.value,
            "source": change.source.value,
            "provider_event_id": change.provider_event_id,
            "intent_id": change.intent.id if change.intent else None,
        }
        if result.outcome is TransitionOutcome.APPLIED:
            assert result.previous_status is not None and result.payment is not None
            log.info(
                "payment transition applied",
                from_status=result.previous_status.value,
                version=result.payment.version,
                **fields,
            )
        elif result.outcome is TransitionOutcome.FOREIGN_INTENT:
            log.warning("foreign intent refused", reason=result.reason, **fields)
        elif result.outcome is TransitionOutcome.REFUSED:
            log.info("payment transition refused", reason=result.reason, **fields)
        return result

    def record_provider_status(self, payment_id: UUID, intent: Intent) -> TransitionResult:
        """Record Stripe's own status without changing ours (e.g. ``requires_action``)."""
        with self._statement() as cur:
            result = payment_store.record_provider_status(cur, payment_id, intent)
        if result.outcome is TransitionOutcome.FOREIGN_INTENT:
            log.warning(
                "foreign intent refused",
                payment_id=str(payment_id),
                intent_id=intent.id,
                reason=result.reason,
            )
        return result

    def apply_webhook(
        self,
        event: ProviderEvent,
        payload: Mapping[str, Any],
        change: StatusChange | None,
        *,
        handled: bool = True,
    ) -> WebhookResult:
        """Store the event in the inbox and apply it, in one transaction.

        A redelivered event (same id) changes nothing. The payment is the one whose intent this
        is, or else the one its metadata names; only the payment's own intent moves it. ``change``
        None records Stripe's status only; an event that is not ``handled`` is only kept.
        """
        intent = event.intent
        with self._tx() as cur, cur.connection.cursor(row_factory=dict_row) as lookup:
            # The payment's lookup goes out with the inbox insert: one round trip for both (on
            # a redelivery its answer is not read).
            found = None
            if intent is not None and handled:
                found = payment_store.send_get_for_intent(lookup, intent.id, intent.payment_uuid)
            if not inbox.receive(cur, event.id, event.type, payload):
                return WebhookResult(duplicate=True, outcome="duplicate")
            payment = found() if found is not None else None
            if payment is None or intent is None:
                outcome = "unknown_payment" if intent is not None and handled else "ignored"
                inbox.finish(cur, event.id, None, outcome, None)
                return WebhookResult(duplicate=False, outcome=outcome)
            if change is not None:
                result = self._transition(cur, payment.id, change)
            else:
                result = payment_store.record_provider_status(cur, payment.id, intent)
            outcome = result.outcome.value
            if change is None and result.outcome is TransitionOutcome.NOOP:
                outcome = "provider_status"
            reason = result.reason or None
            inbox.finish(cur, event.id, payment.id, outcome, reason)
        return WebhookResult(
            duplicate=False,
            outcome=outcome,
            payment=result.payment or payment,
            transition=result,
            reason=reason,
        )

    # -- cursors ----------------------------------------------------------------------------

    def get_cursor(self, name: str) -> str | None:
        with self._statement() as cur:
            return cursors.get(cur, name)

    def set_cursor(self, name: str, value: str) -> None:
        with self._statement() as cur:
            cursors.put(cur, name, value)

    def load_retries(self, *, forget_before: float) -> dict[UUID, Retry]:
        """Failed reconciliation checks, after forgetting those not due since ``forget_before``."""
        with self._statement() as cur:
            return cursors.load_retries(cur, forget_before)

    def save_retry(self, payment_id: UUID, retry: Retry) -> None:
        with self._statement() as cur:
            cursors.save_retry(cur, payment_id, retry)

    def drop_retry(self, payment_id: UUID) -> None:
        with self._statement() as cur:
            cursors.drop_retry(cur, payment_id)
