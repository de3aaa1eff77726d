"""Stripe behind one small class: PaymentIntents and events, with timeouts, retries, a rate limit.

Stripe errors are translated here, once, into ``payments.domain.errors``:
rate limit, connection, 5xx, auth -> ``RetryableError`` (the payment stays as it is; retry later);
card or invalid request -> ``ProviderDeclined`` (the caller must change something).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import stripe

from payments.adapters.rate_limit import RateLimiter
from payments.domain.errors import (
    Conflict,
    InvalidRequest,
    PaymentsError,
    ProviderDeclined,
    RetryableError,
)
from payments.domain.payment import Payment
from payments.logs import get_logger
from payments.ports import Intent, ProviderEvent
from payments.settings import Settings

log = get_logger(__name__)

# Webhook event types this system acts on.
INTENT_EVENT_TYPES: tuple[str, ...] = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.processing",
    "payment_intent.requires_action",
)


def translate_error(exc: stripe.StripeError, action: str) -> PaymentsError:
    """One mapping from stripe-python's errors to ours, with a message naming the action."""
    status = exc.http_status
    detail = exc.user_message or str(exc) or type(exc).__name__
    if isinstance(exc, stripe.CardError):
        return ProviderDeclined(
            f"{action}: card declined: {detail}", code=exc.code, field=exc.param
        )
    if isinstance(exc, stripe.IdempotencyError):
        return Conflict(f"{action}: Stripe refused the idempotency key: {detail}")
    if isinstance(exc, (stripe.RateLimitError, stripe.APIConnectionError)):
        return RetryableError(f"{action}: Stripe unreachable or rate-limited: {detail}")
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        return RetryableError(
            f"{action}: Stripe refused the API key ({status}); check STRIPE_SECRET_KEY: {detail}"
        )
    if isinstance(exc, stripe.InvalidRequestError) and status is not None and status < 500:
        return ProviderDeclined(
            f"{action}: Stripe rejected the request: {detail}", code=exc.code, field=exc.param
        )
    if status is not None and 400 <= status < 500 and status not in (408, 409, 429):
        return ProviderDeclined(f"{action}: Stripe answered {status}: {detail}", code=exc.code)
    return RetryableError(f"{action}: Stripe failed ({status}): {detail}")


class _CountingClient(stripe.RequestsClient):
    """The requests-based HTTP client, rate limited and counted per HTTP attempt (retries too)."""

    def __init__(
        self, *, timeout: float, limiter: RateLimiter | None, acquire_timeout: float
    ) -> None:
        super().__init__(timeout=timeout)
        self._limiter = limiter
        self._acquire_timeout = acquire_timeout
        self._count_lock = threading.Lock()
        self.calls = 0

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        **kwargs: Any,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        if self._limiter is not None and not self._limiter.acquire(timeout=self._acquire_timeout):
            # An APIConnectionError is what stripe-python retries and we map to retryable.
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                f"local Stripe rate limit: no token within {self._acquire_timeout}s for "
                f"{method.upper()} {url}"
            )
        with self._count_lock:
            self.calls += 1
        result: tuple[bytes, int, Mapping[str, str]] = super().request(
            method, url, headers, post_data, **kwargs
        )
        return result


class StripeGateway:
    """PaymentIntents and events on Stripe (or a stand-in at ``settings.stripe_api_base``)."""

    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter | None = None,
        *,
        observer: Callable[[str, str], None] | None = None,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
    ) -> None:
        """``timeout_seconds``/``max_retries`` override the settings for callers with a tighter
        budget (an HTTP request must finish before gunicorn's worker timeout)."""
        self.settings = settings
        timeout = settings.stripe_timeout_seconds if timeout_seconds is None else timeout_seconds
        retries = settings.stripe_max_retries if max_retries is None else max_retries
        # observer(operation, outcome) after each call: outcome is "ok" or the error kind.
        self.observer = observer
        self.limiter = limiter or RateLimiter(settings.stripe_max_rps)
        self._http = _CountingClient(
            timeout=timeout,
            limiter=self.limiter,
            acquire_timeout=timeout,
        )
        options: dict[str, Any] = {}
        if settings.stripe_api_base:
            options["base_addresses"] = {"api": settings.stripe_api_base.rstrip("/")}
        self.client = stripe.StripeClient(
            settings.stripe_secret_key,
            max_network_retries=retries,
            http_client=self._http,
            **options,
        )

    @property
    def calls(self) -> int:
        """HTTP calls made so far (retries included)."""
        return self._http.calls

    def _fail(self, operation: str, exc: stripe.StripeError, action: str) -> PaymentsError:
        error = translate_error(exc, action)
        self._observe(operation, _error_kind(error))
        log.warning(
            "stripe call failed", operation=operation, error=str(error), http_status=exc.http_status
        )
        return error

    def _observe(self, operation: str, outcome: str) -> None:
        if self.observer is not None:
            self.observer(operation, outcome)

    def create_intent(self, payment: Payment) -> Intent:
        """Create the payment's intent; Stripe's idempotency key is the payment's own key."""
        metadata = {**payment.metadata, "payment_id": str(payment.id)}
        params: dict[str, Any] = {
            "amount": payment.money.amount_minor,
            "currency": payment.money.currency,
            "metadata": metadata,
            "payment_method_types": ["card"],
        }
        action = f"creating the PaymentIntent of payment {payment.id}"
        try:
            obj = self.client.v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": payment.idempotency_key},
            )
        except stripe.StripeError as exc:
            raise self._fail("create_intent", exc, action) from exc
        self._observe("create_intent", "ok")
        intent = Intent.from_dict(obj.to_dict())
        log.info(
            "stripe intent created",
            payment_id=str(payment.id),
            intent_id=intent.id,
            provider_status=intent.status,
        )
        return intent

    def retrieve_intent(self, intent_id: str) -> Intent:
        try:
            obj = self.client.v1.payment_intents.retrieve(intent_id)
        except stripe.StripeError as exc:
            raise self._fail(
                "retrieve_intent", exc, f"retrieving PaymentIntent {intent_id}"
            ) from exc
        self._observe("retrieve_intent", "ok")
        return Intent.from_dict(obj.to_dict())

    def cancel_intent(self, intent_id: str) -> Intent:
        try:
            obj = self.client.v1.payment_intents.cancel(intent_id)
        except stripe.StripeError as exc:
            raise self._fail("cancel_intent", exc, f"canceling PaymentIntent {intent_id}") from exc
        self._observe("cancel_intent", "ok")
        return Intent.from_dict(obj.to_dict())

    def confirm_intent(
        self, intent_id: str, payment_method: str, *, idempotency_key: str
    ) -> Intent:
        """Attach ``payment_method`` to the intent and confirm it (server-side confirmation).

        Two calls (update, then confirm) because the local stand-in does not take a payment
        method on confirm; Stripe accepts both forms. ``idempotency_key`` makes a retried
        confirmation return Stripe's first answer. A declined card raises ``ProviderDeclined``.
        """
        action = f"confirming PaymentIntent {intent_id} with {payment_method}"
        try:
            self.client.v1.payment_intents.update(
                intent_id,
                params={"payment_method": payment_method},
                options={"idempotency_key": f"{idempotency_key}-attach"},
            )
            obj = self.client.v1.payment_intents.confirm(
                intent_id, options={"idempotency_key": f"{idempotency_key}-confirm"}
            )
        except stripe.StripeError as exc:
            raise self._fail("confirm_intent", exc, action) from exc
        self._observe("confirm_intent", "ok")
        intent = Intent.from_dict(obj.to_dict())
        log.info(
            "stripe intent confirmed",
            payment_id=intent.payment_id,
            intent_id=intent.id,
            provider_status=intent.status,
        )
        return intent

    def list_intents_by_payment(self, payment_id: str, *, limit: int = 100) -> list[Intent]:
        """Every intent whose metadata names ``payment_id`` (walks all pages of intents; for
        tests and operators, not the hot path)."""
        found: list[Intent] = []
        try:
            page = self.client.v1.payment_intents.list(params={"limit": limit})
            for obj in page.auto_paging_iter():
                intent = Intent.from_dict(obj.to_dict())
                if intent.payment_id == payment_id:
                    found.append(intent)
        except stripe.StripeError as exc:
            raise self._fail(
                "list_intents", exc, f"listing intents of payment {payment_id}"
            ) from exc
        self._observe("list_intents", "ok")
        return found

    def list_events(self, event_type: str, *, created_gt: int) -> Iterator[ProviderEvent]:
        """Every event of ``event_type`` created after ``created_gt`` (newest first, all pages)."""
        params: dict[str, Any] = {"type": event_type, "created": {"gt": created_gt}, "limit": 100}
        try:
            page = self.client.v1.events.list(params=params)  # type: ignore[arg-type]
            for obj in page.auto_paging_iter():
                yield ProviderEvent.from_dict(obj.to_dict())
        except stripe.StripeError as exc:
            action = f"listing {event_type} events after {created_gt}"
            raise self._fail("list_events", exc, action) from exc
        self._observe("list_events", "ok")


def _error_kind(error: PaymentsError) -> str:
    if isinstance(error, RetryableError):
        return "retryable"
    if isinstance(error, ProviderDeclined):
        return "declined"
    return "conflict"


def verify_webhook(
    payload: bytes, signature_header: str | None, *, secret: str, tolerance_seconds: int
) -> tuple[ProviderEvent, dict[str, Any]]:
    """Check Stripe's signature over the raw body; return the event and its JSON.

    Raises ``InvalidRequest`` (field ``Stripe-Signature``) on a bad or stale signature.
    """
    if not signature_header:
        raise InvalidRequest("missing Stripe-Signature header", field="Stripe-Signature")
    try:
        event = stripe.Webhook.construct_event(
            payload, signature_header, secret, tolerance=tolerance_seconds
        )
    except stripe.SignatureVerificationError as exc:
        raise InvalidRequest(
            f"webhook signature rejected: {exc.user_message or exc}", field="Stripe-Signature"
        ) from exc
    except ValueError as exc:
        raise InvalidRequest(f"webhook body is not a Stripe event: {exc}", field="body") from exc
    data: dict[str, Any] = event.to_dict()
    if "id" not in data:
        raise InvalidRequest("webhook event has no id", field="id")
    return ProviderEvent.from_dict(data), data
