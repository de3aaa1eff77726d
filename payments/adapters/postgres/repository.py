"""The SQL side of the core: payments, the audit trail, the webhook inbox, durable cursors.

Every status change is one guarded ``UPDATE ... WHERE status = ANY(allowed_from(to))`` plus its
audit row in the same transaction; nothing reads a status and then writes it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from payments.domain.errors import Conflict, NotFound
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Source, Status, allowed_from
from payments.logs import get_logger
from payments.ports import (
    AuditEvent,
    InboxEvent,
    InsertResult,
    NewPayment,
    PageCursor,
    TransitionOutcome,
    TransitionResult,
    WebhookResult,
)

log = get_logger(__name__)

Row = Mapping[str, Any]

COLUMNS = """
    id, idempotency_key, request_hash, amount_minor, currency, status, provider_status,
    provider, provider_payment_id, client_secret, customer_email, description, metadata,
    failure_code, failure_message, created_at, updated_at, version, creation_claimed_at"""

# The inserting request claims the intent creation at once (creation_claimed_at = now()).
INSERT_PENDING = f"""
    INSERT INTO payments (id, idempotency_key, request_hash, amount_minor, currency,
                          customer_email, description, metadata, creation_claimed_at)
    VALUES (%(id)s, %(idempotency_key)s, %(request_hash)s, %(amount_minor)s, %(currency)s,
            %(customer_email)s, %(description)s, %(metadata)s, now())
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING {COLUMNS}"""

SELECT_BY_ID = f"SELECT {COLUMNS} FROM payments WHERE id = %(id)s"
SELECT_BY_KEY = f"SELECT {COLUMNS} FROM payments WHERE idempotency_key = %(key)s"
SELECT_BY_PROVIDER_ID = f"SELECT {COLUMNS} FROM payments WHERE provider_payment_id = %(pid)s"

# One statement: lock the row, remember its status, update only from an allowed status.
TRANSITION = f"""
    UPDATE payments AS p
       SET status = %(to)s::payment_status,
           provider_status = COALESCE(%(provider_status)s, p.provider_status),
           failure_code = CASE WHEN %(to)s::payment_status = 'failed'
                               THEN COALESCE(%(failure_code)s, p.failure_code)
                               ELSE p.failure_code END,
           failure_message = CASE WHEN %(to)s::payment_status = 'failed'
                                  THEN COALESCE(%(failure_message)s, p.failure_message)
                                  ELSE p.failure_message END,
           status_source = %(source)s::event_source,
           version = p.version + 1,
           updated_at = now()
      FROM (SELECT id, status FROM payments WHERE id = %(id)s FOR UPDATE) AS old
     WHERE p.id = old.id AND p.status = ANY(%(allowed_from)s::payment_status[])
    RETURNING old.status AS previous_status, {
    ", ".join("p." + c.strip() for c in COLUMNS.split(","))
}"""

# A repeated write of the current status: keep the status, refresh what Stripe said.
REFRESH_PROVIDER_STATUS = f"""
    UPDATE payments
       SET provider_status = %(provider_status)s, version = version + 1, updated_at = now()
     WHERE id = %(id)s AND status = %(to)s::payment_status
       AND provider_status IS DISTINCT FROM %(provider_status)s
    RETURNING {COLUMNS}"""

UPDATE_PROVIDER_STATUS = f"""
    UPDATE payments
       SET provider_status = %(provider_status)s, version = version + 1, updated_at = now()
     WHERE id = %(id)s AND provider_status IS DISTINCT FROM %(provider_status)s
    RETURNING {COLUMNS}"""

INSERT_EVENT = """
    INSERT INTO payment_events (payment_id, from_status, to_status, source, provider_event_id,
                                version)
    VALUES (%(payment_id)s, %(from_status)s::payment_status, %(to_status)s::payment_status,
            %(source)s::event_source, %(provider_event_id)s, %(version)s)"""

SELECT_EVENTS = """
    SELECT id, payment_id, from_status, to_status, source, provider_event_id, version, created_at
      FROM payment_events WHERE payment_id = %(id)s ORDER BY id"""

ATTACH_INTENT = f"""
    UPDATE payments
       SET provider_payment_id = %(pid)s,
           provider_status = %(provider_status)s,
           client_secret = COALESCE(%(client_secret)s, client_secret),
           version = version + 1,
           updated_at = now()
     WHERE id = %(id)s AND (provider_payment_id IS NULL OR provider_payment_id = %(pid)s)
    RETURNING {COLUMNS}"""

# The worker (or a retried request) takes over an abandoned creation; at most one wins.
CLAIM_CREATION = f"""
    UPDATE payments
       SET creation_claimed_at = now(), version = version + 1, updated_at = now()
     WHERE id = %(id)s AND status = 'pending' AND provider_payment_id IS NULL
       AND (creation_claimed_at IS NULL
            OR creation_claimed_at < now() - make_interval(secs => %(lease)s))
    RETURNING {COLUMNS}"""

RELEASE_CREATION = """
    UPDATE payments SET creation_claimed_at = NULL, version = version + 1, updated_at = now()
     WHERE id = %(id)s AND provider_payment_id IS NULL AND creation_claimed_at IS NOT NULL"""

PENDING_WITHOUT_INTENT = f"""
    SELECT {COLUMNS} FROM payments
     WHERE status = 'pending' AND provider_payment_id IS NULL
       AND created_at < now() - make_interval(secs => %(older_than)s)
     ORDER BY created_at, id
     LIMIT %(limit)s"""

LIST_PAGE = f"""
    SELECT {COLUMNS} FROM payments
     WHERE (%(status)s::payment_status IS NULL OR status = %(status)s::payment_status)
       AND (%(after_created)s::timestamptz IS NULL
            OR (created_at, id) > (%(after_created)s::timestamptz, %(after_id)s::uuid))
     ORDER BY created_at, id
     LIMIT %(limit)s"""

COUNT_BY_STATUS = "SELECT status::text, count(*) FROM payments GROUP BY status"

INSERT_WEBHOOK = """
    INSERT INTO webhook_events (event_id, type, payload)
    VALUES (%(event_id)s, %(type)s, %(payload)s)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id"""

FINISH_WEBHOOK = """
    UPDATE webhook_events SET payment_id = %(payment_id)s, processed_at = now(),
                              outcome = %(outcome)s
     WHERE event_id = %(event_id)s"""

# The webhook inbox rows of one payment, oldest first (index from migration 0004).
SELECT_WEBHOOKS_FOR_PAYMENT = """
    SELECT event_id, type, received_at, processed_at, outcome
      FROM webhook_events WHERE payment_id = %(id)s
     ORDER BY received_at, event_id
     LIMIT %(limit)s"""

GET_CURSOR = "SELECT value FROM reconcile_cursors WHERE name = %(name)s"
SET_CURSOR = """
    INSERT INTO reconcile_cursors (name, value) VALUES (%(name)s, %(value)s)
    ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"""


def payment_from_row(row: Row) -> Payment:
    metadata = row["metadata"] or {}
    return Payment(
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        money=Money(int(row["amount_minor"]), row["currency"].strip()),
        status=Status(row["status"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        provider=row["provider"],
        provider_status=row["provider_status"],
        provider_payment_id=row["provider_payment_id"],
        client_secret=row["client_secret"],
        customer_email=row["customer_email"],
        description=row["description"],
        metadata={str(k): str(v) for k, v in metadata.items()},
        failure_code=row["failure_code"],
        failure_message=row["failure_message"],
    )


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

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """One transaction on the primary (committed on success, rolled back on error)."""
        with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            yield cur

    def _one(self, sql: str, params: Mapping[str, Any]) -> Payment | None:
        with self._tx() as cur:
            row = cur.execute(sql, params).fetchone()
        return payment_from_row(row) if row else None

    # -- reads ------------------------------------------------------------------------------

    def get(self, payment_id: UUID) -> Payment | None:
        """Read from the primary (always current)."""
        return self._one(SELECT_BY_ID, {"id": payment_id})

    def get_for_read(self, payment_id: UUID) -> Payment | None:
        """Read from a replica; fall back to the primary when the row is not there (yet) or
        no replica answers."""
        if self.read_pool is not None:
            try:
                with (
                    self.read_pool.connection(timeout=self.read_timeout_seconds) as conn,
                    conn.cursor(row_factory=dict_row) as cur,
                ):
                    row = cur.execute(SELECT_BY_ID, {"id": payment_id}).fetchone()
                if row is not None:
                    return payment_from_row(row)
            except (psycopg.OperationalError, PoolTimeout) as exc:
                log.warning(
                    "replica read failed, using primary", payment_id=str(payment_id), error=str(exc)
                )
        return self.get(payment_id)

    def get_by_key(self, idempotency_key: str) -> Payment | None:
        return self._one(SELECT_BY_KEY, {"key": idempotency_key})

    def get_by_provider_id(self, provider_payment_id: str) -> Payment | None:
        return self._one(SELECT_BY_PROVIDER_ID, {"pid": provider_payment_id})

    def list_page(
        self, *, status: Status | None = None, limit: int = 50, after: PageCursor | None = None
    ) -> tuple[list[Payment], PageCursor | None]:
        """One keyset page ordered by (created_at, id) and the cursor of the next page."""
        params = {
            "status": status.value if status else None,
            "after_created": after.created_at if after else None,
            "after_id": after.id if after else None,
            "limit": limit + 1,
        }
        pool = self.read_pool or self.pool
        try:
            with (
                pool.connection(timeout=self.read_timeout_seconds) as conn,
                conn.cursor(row_factory=dict_row) as cur,
            ):
                rows = cur.execute(LIST_PAGE, params).fetchall()
        except (psycopg.OperationalError, PoolTimeout):
            if pool is self.pool:
                raise
            with self._tx() as cur:
                rows = cur.execute(LIST_PAGE, params).fetchall()
        payments = [payment_from_row(r) for r in rows[:limit]]
        has_more = len(rows) > limit
        last = payments[-1] if payments else None
        cursor = PageCursor(last.created_at, last.id) if has_more and last else None
        return payments, cursor

    def events(self, payment_id: UUID) -> list[AuditEvent]:
        """The audit trail of one payment, oldest first."""
        with self._tx() as cur:
            rows = cur.execute(SELECT_EVENTS, {"id": payment_id}).fetchall()
        return [
            AuditEvent(
                id=r["id"],
                payment_id=r["payment_id"],
                from_status=Status(r["from_status"]) if r["from_status"] else None,
                to_status=Status(r["to_status"]),
                source=Source(r["source"]),
                provider_event_id=r["provider_event_id"],
                version=r["version"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    def webhooks(self, payment_id: UUID, *, limit: int = 50) -> list[InboxEvent]:
        """The webhook events recorded for one payment (primary), oldest first."""
        with self._tx() as cur:
            rows = cur.execute(
                SELECT_WEBHOOKS_FOR_PAYMENT, {"id": payment_id, "limit": limit}
            ).fetchall()
        return [
            InboxEvent(
                event_id=r["event_id"],
                type=r["type"],
                received_at=r["received_at"],
                processed_at=r["processed_at"],
                outcome=r["outcome"],
            )
            for r in rows
        ]

    def count_by_status(self) -> dict[Status, int]:
        with self._tx() as cur:
            rows = cur.execute(COUNT_BY_STATUS).fetchall()
        counts = {s: 0 for s in Status}
        for r in rows:
            counts[Status(r["status"])] = int(r["count"])
        return counts

    def pending_without_intent(
        self, *, older_than_seconds: float = 60.0, limit: int = 100
    ) -> list[Payment]:
        """Pending payments that never got an intent (Stripe was down when they were made)."""
        with self._tx() as cur:
            rows = cur.execute(
                PENDING_WITHOUT_INTENT, {"older_than": older_than_seconds, "limit": limit}
            ).fetchall()
        return [payment_from_row(r) for r in rows]

    def ping(self, *, replica: bool = False) -> None:
        """Raise unless the primary (or a replica) answers ``SELECT 1``."""
        pool = self.read_pool if replica and self.read_pool is not None else self.pool
        with pool.connection(timeout=self.read_timeout_seconds) as conn:
            conn.execute("SELECT 1")

    # -- writes -----------------------------------------------------------------------------

    def insert_pending(self, new: NewPayment) -> InsertResult:
        """Insert the pending payment, or return the one already stored under the key.

        Concurrent inserts with one key: exactly one gets ``created=True``.
        """
        params = {
            "id": new.id,
            "idempotency_key": new.idempotency_key,
            "request_hash": new.request_hash,
            "amount_minor": new.money.amount_minor,
            "currency": new.money.currency,
            "customer_email": new.customer_email,
            "description": new.description,
            "metadata": Jsonb(dict(new.metadata or {})),
        }
        with self._tx() as cur:
            row = cur.execute(INSERT_PENDING, params).fetchone()
            created = row is not None
            if row is None:
                row = cur.execute(SELECT_BY_KEY, {"key": new.idempotency_key}).fetchone()
        if row is None:  # inserted and deleted in between: nothing in this system deletes
            raise Conflict(
                f"idempotency key {new.idempotency_key!r} conflicted but no payment holds it"
            )
        return InsertResult(payment_from_row(row), created, row["creation_claimed_at"])

    def claim_creation(self, payment_id: UUID, *, lease_seconds: float = 60.0) -> Payment | None:
        """Take the right to create this payment's intent, if nobody took it in the last
        ``lease_seconds``. None when the payment has an intent, is not pending, or is held."""
        return self._one(CLAIM_CREATION, {"id": payment_id, "lease": lease_seconds})

    def release_creation(self, payment_id: UUID) -> None:
        """Give up the creation claim after a failed Stripe call, so a retry may claim at once."""
        with self._tx() as cur:
            cur.execute(RELEASE_CREATION, {"id": payment_id})

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
    ) -> TransitionResult:
        """The guarded status change plus its audit row, in one transaction."""
        with self._tx() as cur:
            return self._transition(
                cur,
                payment_id,
                to,
                source=source,
                provider_status=provider_status,
                provider_event_id=provider_event_id,
                failure_code=failure_code,
                failure_message=failure_message,
            )

    def _transition(
        self,
        cur: psycopg.Cursor[dict[str, Any]],
        payment_id: UUID,
        to: Status,
        *,
        source: Source,
        provider_status: str | None,
        provider_event_id: str | None,
        failure_code: str | None,
        failure_message: str | None,
    ) -> TransitionResult:
        params: dict[str, Any] = {
            "id": payment_id,
            "to": to.value,
            "allowed_from": [s.value for s in allowed_from(to)],
            "provider_status": provider_status,
            "failure_code": failure_code,
            "failure_message": failure_message,
            "source": source.value,
        }
        row = cur.execute(TRANSITION, params).fetchone()
        if row is not None:
            payment = payment_from_row(row)
            previous = Status(row["previous_status"])
            cur.execute(
                INSERT_EVENT,
                {
                    "payment_id": payment_id,
                    "from_status": previous.value,
                    "to_status": to.value,
                    "source": source.value,
                    "provider_event_id": provider_event_id,
                    "version": payment.version,
                },
            )
            log.info(
                "payment transition applied",
                payment_id=str(payment_id),
                from_status=previous.value,
                to_status=to.value,
                source=source.value,
                provider_event_id=provider_event_id,
                version=payment.version,
            )
            return TransitionResult(TransitionOutcome.APPLIED, payment, previous)

        current_row = cur.execute(SELECT_BY_ID, {"id": payment_id}).fetchone()
        if current_row is None:
            return TransitionResult(TransitionOutcome.NOT_FOUND, None, None)
        current = payment_from_row(current_row)
        if current.status is to:
            if provider_status is not None:
                refreshed = cur.execute(
                    REFRESH_PROVIDER_STATUS,
                    {"id": payment_id, "to": to.value, "provider_status": provider_status},
                ).fetchone()
                if refreshed is not None:
                    current = payment_from_row(refreshed)
            return TransitionResult(TransitionOutcome.NOOP, current, current.status)
        log.info(
            "payment transition refused",
            payment_id=str(payment_id),
            status=current.status.value,
            to_status=to.value,
            source=source.value,
            provider_event_id=provider_event_id,
        )
        return TransitionResult(TransitionOutcome.REFUSED, current, current.status)

    def set_provider_status(self, payment_id: UUID, provider_status: str) -> Payment | None:
        """Record Stripe's own status without changing ours (e.g. ``requires_action``)."""
        with self._tx() as cur:
            row = cur.execute(
                UPDATE_PROVIDER_STATUS, {"id": payment_id, "provider_status": provider_status}
            ).fetchone()
            if row is None:
                row = cur.execute(SELECT_BY_ID, {"id": payment_id}).fetchone()
        return payment_from_row(row) if row else None

    def attach_intent(
        self,
        payment_id: UUID,
        *,
        provider_payment_id: str,
        provider_status: str,
        client_secret: str | None,
    ) -> Payment:
        """Store the PaymentIntent of a payment. Attaching the same intent again is harmless;
        another intent is refused (``Conflict``)."""
        with self._tx() as cur:
            row = cur.execute(
                ATTACH_INTENT,
                {
                    "id": payment_id,
                    "pid": provider_payment_id,
                    "provider_status": provider_status,
                    "client_secret": client_secret,
                },
            ).fetchone()
            if row is None:
                existing = cur.execute(SELECT_BY_ID, {"id": payment_id}).fetchone()
        if row is not None:
            return payment_from_row(row)
        if existing is None:
            raise NotFound(
                f"payment {payment_id} does not exist; cannot attach intent {provider_payment_id}"
            )
        raise Conflict(
            f"payment {payment_id} already has intent {existing['provider_payment_id']}; "
            f"refusing to attach {provider_payment_id}"
        )

    # -- webhook inbox ----------------------------------------------------------------------

    def apply_webhook(
        self,
        *,
        event_id: str,
        event_type: str,
        payload: Mapping[str, Any],
        payment_id: UUID | None,
        provider_payment_id: str | None,
        to: Status | None,
        provider_status: str | None,
        failure_code: str | None = None,
        failure_message: str | None = None,
    ) -> WebhookResult:
        """Store the event in the inbox and apply its effect, in one transaction.

        A redelivered event (same ``event_id``) is recognised and changes nothing. ``to`` None
        means "only record Stripe's status". The payment is found by ``payment_id`` (intent
        metadata) or else by ``provider_payment_id``.
        """
        with self._tx() as cur:
            inserted = cur.execute(
                INSERT_WEBHOOK,
                {"event_id": event_id, "type": event_type, "payload": Jsonb(dict(payload))},
            ).fetchone()
            if inserted is None:
                return WebhookResult(duplicate=True, outcome="duplicate")

            row = None
            if payment_id is not None:
                row = cur.execute(SELECT_BY_ID, {"id": payment_id}).fetchone()
            if row is None and provider_payment_id:
                row = cur.execute(SELECT_BY_PROVIDER_ID, {"pid": provider_payment_id}).fetchone()
            if row is None:
                outcome = "unknown_payment" if (payment_id or provider_payment_id) else "ignored"
                if to is None and provider_status is None:
                    outcome = "ignored"
                cur.execute(
                    FINISH_WEBHOOK, {"event_id": event_id, "payment_id": None, "outcome": outcome}
                )
                return WebhookResult(duplicate=False, outcome=outcome)

            found = payment_from_row(row)
            result: TransitionResult | None = None
            payment: Payment | None = found
            if to is not None:
                result = self._transition(
                    cur,
                    found.id,
                    to,
                    source=Source.WEBHOOK,
                    provider_status=provider_status,
                    provider_event_id=event_id,
                    failure_code=failure_code,
                    failure_message=failure_message,
                )
                payment = result.payment
                outcome = result.outcome.value
            elif provider_status is not None and not found.status.is_final:
                updated = cur.execute(
                    UPDATE_PROVIDER_STATUS, {"id": found.id, "provider_status": provider_status}
                ).fetchone()
                payment = payment_from_row(updated) if updated else found
                outcome = "provider_status" if updated else "noop"
            else:
                outcome = "ignored"
            cur.execute(
                FINISH_WEBHOOK, {"event_id": event_id, "payment_id": found.id, "outcome": outcome}
            )
            return WebhookResult(
                duplicate=False, outcome=outcome, payment=payment, transition=result
            )

    # -- cursors ----------------------------------------------------------------------------

    def get_cursor(self, name: str) -> str | None:
        with self._tx() as cur:
            row = cur.execute(GET_CURSOR, {"name": name}).fetchone()
        return str(row["value"]) if row else None

    def set_cursor(self, name: str, value: str) -> None:
        with self._tx() as cur:
            cur.execute(SET_CURSOR, {"name": name, "value": value})
