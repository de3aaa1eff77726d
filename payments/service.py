"""Use cases: create a payment, finish a creation, cancel, confirm, apply what Stripe says.

Entry points (Flask views, the Faust worker) parse their input, call one function here, and
answer. The repository and the gateway are passed in, real or fake (``tests.fakes``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

from payments.domain.errors import (
    Conflict,
    IdempotencyKeyConflict,
    NotFound,
    ProviderDeclined,
    ProviderObjectMissing,
    RetryableError,
    TransitionRefused,
)
from payments.domain.intents import (
    CANCEL_CANCELLATION_REASON,
    HANDLED_EVENT_TYPES,
    STATUS_EVENT_TYPES,
)
from payments.domain.money import Money
from payments.domain.payment import DEFAULT_TENANT, Payment
from payments.domain.status import Source, Status
from payments.logs import get_logger
from payments.ports import (
    AuditEvent,
    InboxEvent,
    Intent,
    NewPayment,
    PageCursor,
    PaymentGateway,
    PaymentRepository,
    ProviderEvent,
    StatusChange,
    TransitionOutcome,
    TransitionResult,
    WebhookResult,
)

log = get_logger(__name__)


class IdempotencyKeyReused(Conflict):
    """The idempotency key was used before with a different request body."""


class CreationInProgress(Conflict):
    """Another request holding this idempotency key is still creating the intent."""

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class PaymentDeclined(ProviderDeclined):
    """Stripe refused to create the payment's intent; the payment is now ``failed``."""

    def __init__(
        self, message: str, *, payment: Payment, code: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, code=code, field=field)
        self.payment = payment


@dataclass(frozen=True)
class Confirmation:
    """What Stripe said to a server-side confirmation. The payment's status is not changed
    here: the webhook (or the reconciler) carries the outcome into the database."""

    payment: Payment
    intent: Intent


@dataclass(frozen=True)
class PaymentHistory:
    """One payment as the primary holds it now, with its audit trail and webhook inbox rows."""

    payment: Payment
    audit: list[AuditEvent]
    webhooks: list[InboxEvent]


@dataclass(frozen=True)
class CreatePayment:
    """A validated ``POST /payments``."""

    idempotency_key: str
    money: Money
    customer_email: str | None = None
    description: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Whose payment: idempotency keys are per tenant.
    tenant_id: str = DEFAULT_TENANT

    def request_hash(self) -> str:
        """Hash of the canonical request: the same body gives the same hash."""
        canonical = json.dumps(
            {
                "amount_minor": self.money.amount_minor,
                "currency": self.money.currency,
                "customer_email": self.customer_email,
                "description": self.description,
                "metadata": dict(self.metadata),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class CreateOutcome(StrEnum):
    CREATED = "created"  # 201: the intent exists
    REPLAYED = "replayed"  # 201 again, same payment, nothing new made
    DEFERRED = "deferred"  # 202: stored, Stripe unreachable; the worker finishes later


@dataclass(frozen=True)
class CreateResult:
    outcome: CreateOutcome
    payment: Payment
    detail: str | None = None


class PaymentService:
    """The use cases, over any ``PaymentRepository`` and ``PaymentGateway``."""

    def __init__(
        self,
        repo: PaymentRepository,
        gateway: PaymentGateway,
        *,
        creation_lease_seconds: float = 120.0,
    ) -> None:
        self.repo = repo
        self.gateway = gateway
        # Longer than one create call may take (timeouts x retries + rate-limit wait).
        self.creation_lease_seconds = creation_lease_seconds

    # -- create -----------------------------------------------------------------------------

    def create_payment(self, request: CreatePayment) -> CreateResult:
        """Store the pending payment and create its intent, once per idempotency key.

        Raises ``IdempotencyKeyReused`` (key reused with another body), ``CreationInProgress``
        (a concurrent request with the key is still at Stripe), ``ProviderDeclined`` (Stripe
        refused; the payment is now ``failed``).
        """
        request.money.check_chargeable()
        request_hash = request.request_hash()
        inserted = self.repo.insert_pending(
            NewPayment(
                id=uuid4(),
                idempotency_key=request.idempotency_key,
                request_hash=request_hash,
                money=request.money,
                customer_email=request.customer_email,
                description=request.description,
                metadata=dict(request.metadata),
                tenant_id=request.tenant_id,
            )
        )
        payment = inserted.payment
        if inserted.created:
            log.info("payment stored", payment_id=str(payment.id), money=str(payment.money))
            return self._create_intent(payment)

        if payment.request_hash != request_hash:
            raise IdempotencyKeyReused(
                f"idempotency key {request.idempotency_key!r} was already used for payment "
                f"{payment.id} with a different request body; use a new key for a new payment"
            )
        if payment.provider_payment_id is not None:
            return CreateResult(CreateOutcome.REPLAYED, payment)
        if payment.status is Status.FAILED:
            # Stripe refused the first request: answer the same refusal again.
            raise PaymentDeclined(
                payment.failure_message or f"payment {payment.id} was declined",
                payment=payment,
                code=payment.failure_code,
            )
        if payment.status is not Status.PENDING:
            return CreateResult(CreateOutcome.REPLAYED, payment)
        claimed = self.repo.claim_creation(payment.id, lease_seconds=self.creation_lease_seconds)
        if claimed is None:
            latest = self.repo.get(payment.id) or payment
            if latest.provider_payment_id is not None or latest.status is not Status.PENDING:
                return CreateResult(CreateOutcome.REPLAYED, latest)
            raise CreationInProgress(
                f"a request with idempotency key {request.idempotency_key!r} is still creating "
                f"payment {payment.id}; retry shortly",
                retry_after_seconds=1,
            )
        return self._create_intent(claimed)

    def finish_creation(self, payment_id: UUID) -> Payment | None:
        """Create the intent of a pending payment that has none (for the worker).

        Does nothing (returns the stored payment) when another process holds the creation or
        the payment already has an intent. Returns None for an unknown id. Raises
        ``RetryableError`` while Stripe is unreachable (try again later). A refusal from
        Stripe marks the payment ``failed`` and returns it.
        """
        claimed = self.repo.claim_creation(payment_id, lease_seconds=self.creation_lease_seconds)
        if claimed is None:
            return self.repo.get(payment_id)
        try:
            result = self._create_intent(claimed)
        except ProviderDeclined:
            return self.repo.get(payment_id)
        if result.outcome is CreateOutcome.DEFERRED:
            raise RetryableError(result.detail or f"payment {payment_id}: Stripe unavailable")
        return result.payment

    def _create_intent(self, payment: Payment) -> CreateResult:
        """Called only by the holder of the creation claim."""
        try:
            intent = self.gateway.create_intent(payment)
        except RetryableError as exc:
            # Our call is over: let the next attempt (client retry or worker) claim at once.
            self.repo.release_creation(payment.id)
            log.warning("intent creation deferred", payment_id=str(payment.id), error=str(exc))
            detail = (
                f"payment {payment.id} is stored as pending but Stripe could not be reached "
                f"({exc}); it will be completed automatically, or retry with the same "
                "Idempotency-Key"
            )
            return CreateResult(CreateOutcome.DEFERRED, payment, detail)
        except IdempotencyKeyConflict:
            # Stripe holds our key (pi-create-<payment id>) with other parameters: nothing was
            # created. Free the claim so a corrected retry is not blocked for the lease.
            self.repo.release_creation(payment.id)
            log.error("stripe refused the creation key", payment_id=str(payment.id))
            raise
        except ProviderDeclined as exc:
            result = self.repo.transition(
                payment.id,
                StatusChange(
                    Status.FAILED,
                    Source.API,
                    failure_code=exc.code or "provider_declined",
                    failure_message=str(exc),
                ),
            )
            log.info(
                "payment declined at creation",
                payment_id=str(payment.id),
                code=exc.code,
                field=exc.field,
            )
            raise PaymentDeclined(
                str(exc), payment=result.payment or payment, code=exc.code, field=exc.field
            ) from exc
        stored = self.repo.attach_intent(payment.id, intent)
        return CreateResult(CreateOutcome.CREATED, stored)

    def recover_intent(self, payment: Payment) -> Payment | None:
        """For the holder of the creation claim who is closing a payment that has no intent
        (the expiry, a cancel). An earlier create may have reached Stripe and its answer been
        lost (a reset connection, a timeout): the payment has no intent here, Stripe has one.
        Asking again with the creation's key (``pi-create-<id>``) gets that intent back, or a
        new one if none was made; it is attached, so that the caller cancels it at Stripe and
        no intent is left open for a closed payment. Returns the payment with its intent, or
        None when Stripe refuses the creation (nothing exists to cancel). Raises
        ``RetryableError`` or ``IdempotencyKeyConflict`` (the claim released) while Stripe
        cannot say."""
        try:
            intent = self.gateway.create_intent(payment)
        except ProviderDeclined:
            return None
        except (RetryableError, IdempotencyKeyConflict):
            self.repo.release_creation(payment.id)
            raise
        log.info("intent recovered to be canceled", payment_id=str(payment.id), intent_id=intent.id)
        return self.repo.attach_intent(payment.id, intent)

    # -- cancel -----------------------------------------------------------------------------

    def cancel(self, payment_id: UUID, *, tenant_id: str | None = None) -> Payment:
        """Cancel on Stripe, then the guarded transition to ``canceled`` (idempotent). With
        ``tenant_id``, another tenant's payment is ``NotFound``, as an unknown one."""
        payment = self.repo.get(payment_id, tenant_id=tenant_id)
        if payment is None:
            raise NotFound(f"payment {payment_id} does not exist")
        if payment.status is Status.CANCELED:
            return payment
        if payment.status.is_final:
            raise TransitionRefused(
                f"payment {payment_id} is already {payment.status.value}; it cannot be canceled"
            )
        # Without an intent, hold the creation so none appears for a canceled payment, and
        # get back the one an earlier create may have made, to cancel it at Stripe too.
        if payment.provider_payment_id is None:
            claimed = self.repo.claim_creation(
                payment_id, lease_seconds=self.creation_lease_seconds
            )
            if claimed is not None:
                payment = self.recover_intent(claimed) or claimed
            else:
                latest = self.repo.get(payment_id) or payment
                if latest.provider_payment_id is None and latest.status is Status.PENDING:
                    raise CreationInProgress(
                        f"payment {payment_id} is being created at Stripe right now; retry "
                        "the cancel shortly",
                        retry_after_seconds=1,
                    )
                payment = latest
        change = StatusChange(Status.CANCELED, Source.API)
        if payment.provider_payment_id is not None:
            try:
                intent = self.gateway.cancel_intent(
                    payment.provider_payment_id,
                    payment_id=payment.id,
                    reason=CANCEL_CANCELLATION_REASON,
                    decision=payment.version,
                )
                change = StatusChange(Status.CANCELED, Source.API, intent)
            except ProviderObjectMissing:
                # Stripe answers 404 for the intent. A stand-in that was reset and an account
                # switched under a pending payment look the same, and in the second the intent
                # can still be paid: the payment stays open (the reconciler expires it once
                # Stripe has not known the intent for a TTL, reconcile.UNKNOWN_INTENT_ATTEMPTS).
                log.warning(
                    "cancel refused: Stripe does not know the payment's intent",
                    payment_id=str(payment_id),
                    intent_id=payment.provider_payment_id,
                )
                raise TransitionRefused(
                    f"payment {payment_id} cannot be canceled: Stripe has no PaymentIntent "
                    f"{payment.provider_payment_id} (is STRIPE_API_KEY the account that made "
                    "it?); the payment is expired once Stripe has not known its intent for "
                    "PENDING_TTL_SECONDS"
                ) from None
            except (ProviderDeclined, IdempotencyKeyConflict):
                # Stripe would not cancel (e.g. it already succeeded), or holds this cancel's
                # key for a request still in flight: record what the intent says now.
                intent = self.gateway.retrieve_intent(payment.provider_payment_id)
                result = self.apply_intent(payment_id, intent, Source.API)
                current = result.payment or payment
                if current.status is Status.CANCELED:
                    return current
                raise TransitionRefused(
                    f"payment {payment_id} cannot be canceled: its PaymentIntent "
                    f"{intent.id} is {intent.status} at Stripe (payment is "
                    f"{current.status.value})"
                ) from None
        result = self.repo.transition(payment_id, change)
        if result.payment is None:
            raise NotFound(f"payment {payment_id} does not exist")
        if result.outcome in (TransitionOutcome.REFUSED, TransitionOutcome.FOREIGN_INTENT):
            raise TransitionRefused(
                f"payment {payment_id} is already {result.payment.status.value}; it cannot be "
                "canceled"
            )
        return result.payment

    # -- what Stripe says -------------------------------------------------------------------

    def apply_intent(
        self, payment_id: UUID, intent: Intent, source: Source, event: ProviderEvent | None = None
    ) -> TransitionResult:
        """Write what Stripe's intent says about a payment: its final status through the
        guarded transition, or only Stripe's own status while nothing is final. Only the
        payment's own intent is applied (the repository refuses any other)."""
        change = StatusChange.from_intent(intent, source, event)
        if change is None:
            return self.repo.record_provider_status(payment_id, intent)
        return self.repo.transition(payment_id, change)

    def apply_webhook_event(
        self, event: ProviderEvent, payload: Mapping[str, Any]
    ) -> WebhookResult:
        """Store the event in the inbox and apply it, once per Stripe event id."""
        intent = event.intent
        handled = event.type in HANDLED_EVENT_TYPES and intent is not None
        change = None
        if intent is not None and event.type in STATUS_EVENT_TYPES:
            change = StatusChange.from_intent(intent, Source.WEBHOOK, event)
        result = self.repo.apply_webhook(event, payload, change, handled=handled)
        log.info(
            "webhook event",
            event_id=event.id,
            event_type=event.type,
            outcome=result.outcome,
            reason=result.reason,
            duplicate=result.duplicate,
            payment_id=str(result.payment.id) if result.payment else intent and intent.payment_id,
        )
        return result

    # -- confirm ----------------------------------------------------------------------------

    def confirm(
        self, payment_id: UUID, payment_method: str, *, tenant_id: str | None = None
    ) -> Confirmation:
        """Confirm the payment's intent with a payment method made in the browser.

        The status change is left to the webhook (fast path) and the reconciler (safety net),
        exactly as when the browser confirms with Stripe.js itself. A retry with the same
        payment method reuses Stripe's idempotency key and gets Stripe's first answer. With
        ``tenant_id``, another tenant's payment is ``NotFound``.
        """
        payment = self.repo.get(payment_id, tenant_id=tenant_id)
        if payment is None:
            raise NotFound(f"payment {payment_id} does not exist")
        if payment.status not in (Status.PENDING, Status.FAILED):
            raise TransitionRefused(
                f"payment {payment_id} is already {payment.status.value}; it cannot be paid again"
            )
        if payment.provider_payment_id is None:
            raise CreationInProgress(
                f"payment {payment_id} has no PaymentIntent yet (Stripe was unreachable when it "
                "was stored); retry shortly",
                retry_after_seconds=2,
            )
        digest = hashlib.sha256(f"{payment.idempotency_key}\0{payment_method}".encode())
        intent = self.gateway.confirm_intent(
            payment.provider_payment_id,
            payment_method,
            idempotency_key=f"confirm-{payment.id}-{digest.hexdigest()[:32]}",
        )
        return Confirmation(payment, intent)

    # -- reads ------------------------------------------------------------------------------

    def history(self, payment_id: UUID, *, tenant_id: str | None = None) -> PaymentHistory:
        """The payment from the primary (never a lagging replica), its audit rows and inbox.
        With ``tenant_id``, another tenant's payment is ``NotFound``."""
        payment = self.repo.get(payment_id, tenant_id=tenant_id)
        if payment is None:
            raise NotFound(f"payment {payment_id} does not exist")
        return PaymentHistory(payment, self.repo.events(payment_id), self.repo.webhooks(payment_id))

    def get(self, payment_id: UUID, *, tenant_id: str | None = None) -> Payment:
        """With ``tenant_id``, another tenant's payment is ``NotFound``, as an unknown one."""
        payment = self.repo.get_for_read(payment_id, tenant_id=tenant_id)
        if payment is None:
            raise NotFound(f"payment {payment_id} does not exist")
        return payment

    def list(
        self,
        *,
        status: Status | None,
        limit: int,
        after: PageCursor | None,
        tenant_id: str | None = None,
    ) -> tuple[list[Payment], PageCursor | None]:
        """One page; with ``tenant_id``, of that tenant's payments only."""
        return self.repo.list_page(status=status, limit=limit, after=after, tenant_id=tenant_id)
