"""The `payments` table: SQL as named constants and the functions that run them on a cursor.

Every status change is one guarded ``UPDATE ... WHERE status = ANY(allowed_from(to))``: the
allowed-from set, and, when Stripe said so, the intent's ownership (its id is the payment's own
``provider_payment_id``, or the payment has none yet and the intent was made for it, same amount
and currency) are in the WHERE clause. Nothing reads a status and then writes it; a row read
after a refused write only explains the refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from payments.adapters.postgres.rows import COLUMNS, Cursor, columns_of, payment_from_row
from payments.domain.payment import IntentMatch, Payment
from payments.domain.status import OPEN_STATUSES, Status, allowed_from
from payments.ports import (
    Intent,
    NewPayment,
    PageCursor,
    StatusChange,
    TransitionOutcome,
    TransitionResult,
)

OPEN = [s.value for s in OPEN_STATUSES]

# The inserting request claims the intent creation at once (creation_claimed_at = now()).
INSERT_PENDING = f"""
    INSERT INTO payments (id, tenant_id, idempotency_key, request_hash, amount_minor, currency,
                          customer_email, description, metadata, creation_claimed_at)
    VALUES (%(id)s, %(tenant_id)s, %(idempotency_key)s, %(request_hash)s, %(amount_minor)s,
            %(currency)s, %(customer_email)s, %(description)s, %(metadata)s, now())
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING {COLUMNS}"""

SELECT_BY_ID = f"SELECT {COLUMNS} FROM payments WHERE id = %(id)s"
# A tenant's own payment: another tenant's id finds nothing, exactly as an unknown id.
SELECT_BY_ID_OF_TENANT = (
    f"SELECT {COLUMNS} FROM payments WHERE id = %(id)s AND tenant_id = %(tenant_id)s"
)
SELECT_BY_KEY = f"""
    SELECT {COLUMNS} FROM payments
     WHERE tenant_id = %(tenant_id)s AND idempotency_key = %(key)s"""
# The payment an intent is about: the one it belongs to, else the one its metadata names.
SELECT_FOR_INTENT = f"""
    SELECT {COLUMNS} FROM payments
     WHERE provider_payment_id = %(intent_id)s OR id = %(named)s
     ORDER BY provider_payment_id = %(intent_id)s DESC NULLS LAST
     LIMIT 1"""
SELECT_OPEN_BY_IDS = f"""
    SELECT {COLUMNS} FROM payments
     WHERE id = ANY(%(ids)s::uuid[]) AND status = ANY(%(open)s::payment_status[])"""
SELECT_OPEN_BY_INTENTS = f"""
    SELECT {COLUMNS} FROM payments
     WHERE provider_payment_id = ANY(%(intent_ids)s::text[])
       AND status = ANY(%(open)s::payment_status[])"""

# The intent may move the payment: no intent given (our own decision), or the same money and
# either the payment's own intent or, while it has none, one made for it.
OWNED_BY_INTENT = """
       (%(intent_id)s::text IS NULL
        OR (p.amount_minor = %(intent_amount)s AND p.currency = %(intent_currency)s
            AND (p.provider_payment_id = %(intent_id)s
                 OR (p.provider_payment_id IS NULL AND %(intent_names_payment)s))))"""

# The guarded write and its audit row in one statement: both happen, or neither (a statement
# is atomic even in autocommit), in one round trip.
TRANSITION = f"""
    WITH moved AS (
        UPDATE payments AS p
           SET status = %(to)s::payment_status,
               provider_payment_id = COALESCE(p.provider_payment_id, %(intent_id)s),
               provider_status = COALESCE(%(provider_status)s, p.provider_status),
               failure_code = CASE WHEN %(to)s::payment_status IN ('failed', 'expired')
                                   THEN COALESCE(%(failure_code)s, p.failure_code)
                                   ELSE p.failure_code END,
               failure_message = CASE WHEN %(to)s::payment_status IN ('failed', 'expired')
                                      THEN COALESCE(%(failure_message)s, p.failure_message)
                                      ELSE p.failure_message END,
               status_source = %(source)s::event_source,
               version = p.version + 1,
               updated_at = now()
          FROM (SELECT id, status FROM payments WHERE id = %(id)s FOR UPDATE) AS old
         WHERE p.id = old.id AND p.status = ANY(%(allowed_from)s::payment_status[])
           AND {OWNED_BY_INTENT}
        RETURNING old.status AS previous_status, {columns_of("p")}
    ), audited AS (
        INSERT INTO payment_events (payment_id, from_status, to_status, source,
                                    provider_event_id, version)
        SELECT id, previous_status, status, %(source)s::event_source, %(provider_event_id)s,
               version
          FROM moved
    )
    SELECT * FROM moved"""

# Stripe's own status (e.g. requires_action) without a status change; attaches an intent made
# for the payment while it has none. Only while the payment is open, only by its own intent.
RECORD_PROVIDER_STATUS = f"""
    UPDATE payments AS p
       SET provider_status = %(provider_status)s,
           provider_payment_id = COALESCE(p.provider_payment_id, %(intent_id)s),
           version = p.version + 1,
           updated_at = now()
     WHERE p.id = %(id)s AND p.status = ANY(%(open)s::payment_status[])
       AND {OWNED_BY_INTENT}
       AND (p.provider_status IS DISTINCT FROM %(provider_status)s
            OR p.provider_payment_id IS NULL)
    RETURNING {COLUMNS}"""

ATTACH_INTENT = f"""
    UPDATE payments AS p
       SET provider_payment_id = %(intent_id)s,
           provider_status = %(provider_status)s,
           client_secret = COALESCE(%(client_secret)s, p.client_secret),
           version = p.version + 1,
           updated_at = now()
     WHERE p.id = %(id)s AND {OWNED_BY_INTENT}
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

# One tenant's payments (index payments_tenant_created_idx / payments_tenant_status_created_idx).
LIST_PAGE_OF_TENANT = f"""
    SELECT {COLUMNS} FROM payments
     WHERE tenant_id = %(tenant_id)s
       AND (%(status)s::payment_status IS NULL OR status = %(status)s::payment_status)
       AND (%(after_created)s::timestamptz IS NULL
            OR (created_at, id) > (%(after_created)s::timestamptz, %(after_id)s::uuid))
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


def get(cur: Cursor, payment_id: UUID, tenant_id: str | None = None) -> Payment | None:
    """The payment; with ``tenant_id``, only when it is that tenant's."""
    if tenant_id is None:
        row = cur.execute(SELECT_BY_ID, {"id": payment_id}).fetchone()
    else:
        row = cur.execute(
            SELECT_BY_ID_OF_TENANT, {"id": payment_id, "tenant_id": tenant_id}
        ).fetchone()
    return payment_from_row(row) if row else None


def get_for_intent(cur: Cursor, intent_id: str, named: UUID | None) -> Payment | None:
    """The payment whose intent this is, else the one ``named`` (the intent's metadata), if
    any: which of them the intent may move is the guarded write's to decide."""
    return send_get_for_intent(cur, intent_id, named)()


def send_get_for_intent(
    cur: Cursor, intent_id: str, named: UUID | None
) -> Callable[[], Payment | None]:
    """``get_for_intent`` sent now and read when the answer is called for: in pipeline mode the
    query goes out with the next statement whose result is waited for, in the same round trip."""
    cur.execute(SELECT_FOR_INTENT, {"intent_id": intent_id, "named": named})

    def read() -> Payment | None:
        row = cur.fetchone()
        return payment_from_row(row) if row else None

    return read


def open_by_ids(cur: Cursor, payment_ids: Iterable[UUID]) -> dict[UUID, Payment]:
    rows = cur.execute(SELECT_OPEN_BY_IDS, {"ids": list(payment_ids), "open": OPEN}).fetchall()
    return {p.id: p for p in map(payment_from_row, rows)}


def open_by_intents(cur: Cursor, intent_ids: Iterable[str]) -> dict[str, Payment]:
    rows = cur.execute(
        SELECT_OPEN_BY_INTENTS, {"intent_ids": list(intent_ids), "open": OPEN}
    ).fetchall()
    found = map(payment_from_row, rows)
    return {p.provider_payment_id: p for p in found if p.provider_payment_id}


def insert_pending(cur: Cursor, new: NewPayment) -> tuple[Payment, bool, Any]:
    """(payment, created now, when its creation was claimed)."""
    params = {
        "id": new.id,
        "tenant_id": new.tenant_id,
        "idempotency_key": new.idempotency_key,
        "request_hash": new.request_hash,
        "amount_minor": new.money.amount_minor,
        "currency": new.money.currency,
        "customer_email": new.customer_email,
        "description": new.description,
        "metadata": Jsonb(dict(new.metadata or {})),
    }
    row = cur.execute(INSERT_PENDING, params).fetchone()
    created = row is not None
    if row is None:
        row = cur.execute(
            SELECT_BY_KEY, {"tenant_id": new.tenant_id, "key": new.idempotency_key}
        ).fetchone()
    if row is None:  # inserted and deleted in between: nothing in this system deletes
        raise LookupError(f"idempotency key {new.idempotency_key!r} conflicted but is gone")
    return payment_from_row(row), created, row["creation_claimed_at"]


def _intent_params(payment_id: UUID, intent: Intent | None) -> dict[str, Any]:
    return {
        "intent_id": intent.id if intent else None,
        "intent_amount": intent.amount if intent else None,
        "intent_currency": intent.currency if intent else None,
        "intent_names_payment": bool(intent and intent.payment_id == str(payment_id)),
    }


def transition(cur: Cursor, payment_id: UUID, change: StatusChange) -> TransitionResult:
    """The guarded write with its audit row (one statement)."""
    intent = change.intent
    params: dict[str, Any] = {
        "id": payment_id,
        "to": change.to.value,
        "allowed_from": [s.value for s in allowed_from(change.to)],
        "provider_status": intent.status if intent else None,
        "failure_code": change.failure_code,
        "failure_message": change.failure_message,
        "source": change.source.value,
        "provider_event_id": change.provider_event_id,
        **_intent_params(payment_id, intent),
    }
    row = cur.execute(TRANSITION, params).fetchone()
    if row is not None:
        return TransitionResult(
            TransitionOutcome.APPLIED, payment_from_row(row), Status(row["previous_status"])
        )
    current = get(cur, payment_id)
    if current is None:
        return TransitionResult(TransitionOutcome.NOT_FOUND, None, None)
    refused = _foreign(current, intent)
    if refused is not None:
        return refused
    if current.status is change.to:
        if intent is not None:
            refreshed = record_provider_status(cur, payment_id, intent)
            current = refreshed.payment or current
        return TransitionResult(TransitionOutcome.NOOP, current, current.status)
    return TransitionResult(
        TransitionOutcome.REFUSED,
        current,
        current.status,
        f"payment {payment_id} is {current.status.value}; refusing {change.to.value}",
    )


def record_provider_status(cur: Cursor, payment_id: UUID, intent: Intent) -> TransitionResult:
    params = {
        "id": payment_id,
        "provider_status": intent.status,
        "open": OPEN,
        **_intent_params(payment_id, intent),
    }
    row = cur.execute(RECORD_PROVIDER_STATUS, params).fetchone()
    if row is not None:
        payment = payment_from_row(row)
        return TransitionResult(TransitionOutcome.NOOP, payment, payment.status)
    current = get(cur, payment_id)
    if current is None:
        return TransitionResult(TransitionOutcome.NOT_FOUND, None, None)
    return _foreign(current, intent) or TransitionResult(
        TransitionOutcome.NOOP, current, current.status
    )


def attach_intent(cur: Cursor, payment_id: UUID, intent: Intent) -> Payment | None:
    """Store the payment's intent; None when the row refused it (see ``get`` for why)."""
    params = {
        "id": payment_id,
        "provider_status": intent.status,
        "client_secret": intent.client_secret,
        **_intent_params(payment_id, intent),
    }
    row = cur.execute(ATTACH_INTENT, params).fetchone()
    return payment_from_row(row) if row else None


def _foreign(current: Payment, intent: Intent | None) -> TransitionResult | None:
    if intent is None:
        return None
    match, reason = current.match_intent(intent.facts)
    if match is IntentMatch.FOREIGN:
        return TransitionResult(TransitionOutcome.FOREIGN_INTENT, current, current.status, reason)
    return None


def claim_creation(cur: Cursor, payment_id: UUID, lease_seconds: float) -> Payment | None:
    row = cur.execute(CLAIM_CREATION, {"id": payment_id, "lease": lease_seconds}).fetchone()
    return payment_from_row(row) if row else None


def release_creation(cur: Cursor, payment_id: UUID) -> None:
    cur.execute(RELEASE_CREATION, {"id": payment_id})


def list_page(
    cur: Cursor,
    *,
    status: Status | None,
    limit: int,
    after: PageCursor | None,
    tenant_id: str | None = None,
) -> tuple[list[Payment], PageCursor | None]:
    """One page by (created_at, id); with ``tenant_id``, of that tenant's payments only."""
    params = {
        "tenant_id": tenant_id,
        "status": status.value if status else None,
        "after_created": after.created_at if after else None,
        "after_id": after.id if after else None,
        "limit": limit + 1,
    }
    rows = cur.execute(LIST_PAGE if tenant_id is None else LIST_PAGE_OF_TENANT, params).fetchall()
    payments = [payment_from_row(r) for r in rows[:limit]]
    last = payments[-1] if payments else None
    cursor = PageCursor(last.created_at, last.id) if len(rows) > limit and last else None
    return payments, cursor


def count_by_status(cur: Cursor) -> dict[Status, int]:
    counts = {s: 0 for s in Status}
    for r in cur.execute(COUNT_BY_STATUS).fetchall():
        counts[Status(r["status"])] = int(r["count"])
    return counts
