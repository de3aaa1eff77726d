"""Thin views: parse, call one use case, answer."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from flask import Blueprint, Response, current_app, g, jsonify, request

from api.auth import CallerKind, checkout_tokens, current_caller, tokens_not_configured
from api.bootstrap import ApiServices
from api.capacity import stripe_bound
from api.checkout_tokens import TokensNotConfigured
from api.ids import (
    IDEMPOTENCY_KEY_PATTERN,
    LIMIT_PATTERN,
    decode_cursor,
    encode_cursor,
    parse_payment_id,
)
from api.openapi import build_spec, render_docs
from api.operator import operator_required
from api.problems import ApiProblem
from api.schemas import ConfirmPaymentBody, CreatePaymentBody
from api.timeline import timeline
from payments.domain.errors import InvalidRequest
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Status
from payments.logs import get_logger
from payments.service import CreateOutcome, CreatePayment

log = get_logger(__name__)
bp = Blueprint("payments", __name__)
WEBHOOK_MAX_BYTES = 1024 * 1024
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_LIMIT = re.compile(LIMIT_PATTERN)
# What a 202 tells the caller; Stripe's own error text (hosts, internals) goes to the log.
PENDING_REASON = (
    "the payment is stored as pending but Stripe could not be reached; it will be completed "
    "automatically, or retry with the same Idempotency-Key"
)


def services() -> ApiServices:
    found: ApiServices = current_app.extensions["payments"]
    return found


def _payment_id(raw: str) -> UUID:
    try:
        return parse_payment_id(raw)
    except ValueError:
        raise InvalidRequest(
            f"payment id must be a UUID (8-4-4-4-12 hex digits), got {raw!r}", field="payment_id"
        ) from None


def idempotency_key() -> str:
    """The ``Idempotency-Key`` header: 1 to 255 printable ASCII characters, no space at either
    end (HTTP would strip it)."""
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        raise ApiProblem(
            400,
            "Idempotency-Key required",
            "send an Idempotency-Key header of 1 to 255 printable characters, e.g. a UUID",
            kind="idempotency-key-required",
            field="Idempotency-Key",
        )
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiProblem(
            400,
            "Invalid Idempotency-Key",
            "the Idempotency-Key header must be 1 to 255 printable ASCII characters "
            f"(got {len(key)} characters: {key[:80]!r})",
            kind="invalid-idempotency-key",
            field="Idempotency-Key",
        )
    return key


def json_object() -> dict[str, Any]:
    """The request body as a JSON object (415 when not JSON, 400 when malformed, 422 when not an
    object)."""
    if not request.is_json:
        raise ApiProblem(
            415,
            "Unsupported media type",
            f"send the body as application/json, got {request.mimetype or 'none'!r}",
            kind="unsupported-media-type",
            field="Content-Type",
        )
    data = request.get_json(silent=True)
    if data is None:
        raise ApiProblem(
            400,
            "Malformed JSON",
            "the request body is not valid JSON",
            kind="malformed-json",
            field="body",
        )
    if not isinstance(data, dict):
        raise ApiProblem(
            422,
            "Invalid request",
            "the body must be a JSON object",
            kind="validation-error",
            field="body",
        )
    return data


def created_body(payment: Payment, pending_reason: str | None = None) -> dict[str, Any]:
    return {
        **payment.public_dict(),
        "client_secret": payment.client_secret,
        "pending_reason": pending_reason,
    }


def tenant() -> str:
    """The caller's tenant: every payment read or written here is that tenant's only."""
    found = current_caller().tenant
    if found is None:  # only open endpoints have no tenant, and they do not ask
        raise RuntimeError(f"no tenant for {request.endpoint}: is it wrongly open?")
    return found


def created_response(result: Any) -> Response:
    """201 (created or replayed) or 202 (stored, intent later) for a ``CreateResult``."""
    payment: Payment = result.payment
    g.payment_id = str(payment.id)
    if result.outcome is CreateOutcome.DEFERRED:
        log.warning("payment stored without intent", payment_id=str(payment.id), why=result.detail)
        response = jsonify(created_body(payment, PENDING_REASON))
        response.status_code = 202
    else:
        response = jsonify(created_body(payment))
        response.status_code = 201
        if result.outcome is CreateOutcome.REPLAYED:
            response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/payments/{payment.id}"
    return response


@bp.post("/payments")
@stripe_bound
def create_payment() -> Response:
    key = idempotency_key()
    body = CreatePaymentBody.model_validate(json_object())
    result = services().service.create_payment(
        CreatePayment(
            idempotency_key=key,
            money=Money(body.amount_minor, body.currency),
            customer_email=body.customer_email,
            description=body.description,
            metadata=body.metadata,
            tenant_id=tenant(),
        )
    )
    return created_response(result)


@bp.get("/payments/<raw_id>")
def get_payment(raw_id: str) -> Response:
    payment = services().service.get(_payment_id(raw_id), tenant_id=tenant())
    g.payment_id = str(payment.id)
    return jsonify(payment.public_dict())


@bp.get("/payments")
def list_payments() -> Response:
    args = request.args
    status: Status | None = None
    if "status" in args:
        try:
            status = Status(args["status"])
        except ValueError:
            raise InvalidRequest(
                f"status must be one of {', '.join(s.value for s in Status)}, "
                f"got {args['status']!r}",
                field="status",
            ) from None
    raw_limit = args.get("limit", "20")
    if not _LIMIT.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= 100:
        raise InvalidRequest(
            f"limit must be an integer from 1 to 100, got {raw_limit!r}", field="limit"
        )
    after = None
    if "after" in args:
        try:
            after = decode_cursor(args["after"])
        except ValueError:
            raise InvalidRequest(
                f"after must be a cursor returned as `next` by GET /payments, got "
                f"{args['after'][:80]!r}",
                field="after",
            ) from None
    payments, cursor = services().service.list(
        status=status, limit=int(raw_limit), after=after, tenant_id=tenant()
    )
    return jsonify(
        {
            "data": [p.public_dict() for p in payments],
            "next": encode_cursor(cursor) if cursor else None,
        }
    )


@bp.post("/payments/<raw_id>/cancel")
@stripe_bound
def cancel_payment(raw_id: str) -> Response:
    payment_id = _payment_id(raw_id)
    g.payment_id = str(payment_id)
    payment = services().service.cancel(payment_id, tenant_id=tenant())
    return jsonify(payment.public_dict())


@bp.post("/payments/<raw_id>/confirm")
@stripe_bound
def confirm_payment(raw_id: str) -> Response:
    payment_id = _payment_id(raw_id)
    g.payment_id = str(payment_id)
    body = ConfirmPaymentBody.model_validate(json_object())
    confirmation = services().service.confirm(payment_id, body.payment_method, tenant_id=tenant())
    intent = confirmation.intent
    return jsonify(
        {
            "payment": confirmation.payment.public_dict(),
            "provider_payment_id": intent.id,
            "provider_status": intent.status,
            "failure_code": intent.failure_code,
            "failure_message": intent.failure_message,
        }
    )


@bp.get("/payments/<raw_id>/timeline")
def payment_timeline(raw_id: str) -> Response:
    payment_id = _payment_id(raw_id)
    g.payment_id = str(payment_id)
    history = services().service.history(payment_id, tenant_id=tenant())
    emitted = services().status_events.events_for(payment_id, history.payment.created_at)
    response = jsonify(timeline(history, emitted))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/payments/<raw_id>/checkout-token")
def checkout_token(raw_id: str) -> Response:
    """The merchant's step of a checkout: a short-lived token the customer's browser may use to
    confirm and follow this one payment (``/checkout?token=…``)."""
    caller = current_caller()
    if caller.kind is CallerKind.CHECKOUT_TOKEN:  # pragma: no cover - api.auth refuses it first
        raise ApiProblem(403, "Forbidden", "an API key is needed", kind="checkout-token-scope")
    payment_id = _payment_id(raw_id)
    g.payment_id = str(payment_id)
    payment = services().service.get(payment_id, tenant_id=tenant())
    try:
        issued = checkout_tokens().mint(tenant(), payment.id)
    except TokensNotConfigured:
        raise tokens_not_configured() from None
    response = jsonify(
        {
            "payment_id": str(payment.id),
            "token": issued.token,
            "expires_at": issued.grant.expires_at_iso,
            "checkout_url": f"/checkout?token={issued.token}",
        }
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/webhooks/stripe")
def stripe_webhook() -> Response:
    request.max_content_length = WEBHOOK_MAX_BYTES
    settings = services().settings
    secrets = settings.webhook_secrets
    if not secrets:
        # Never accepted unverified: without a secret there is nothing to verify against.
        raise ApiProblem(
            503,
            "Webhook secret not configured",
            "this server has no STRIPE_WEBHOOK_SECRET, so it cannot verify Stripe's signature "
            "and accepts no event; Stripe retries later",
            kind="webhook-secret-not-configured",
            headers={"Retry-After": "60"},
        )
    raw = request.get_data(cache=True)
    event, payload = services().verify_webhook(
        raw,
        request.headers.get("Stripe-Signature"),
        secrets=secrets,
        tolerance_seconds=settings.stripe_webhook_tolerance_seconds,
    )
    result = services().service.apply_webhook_event(event, payload)
    if result.payment is not None:
        g.payment_id = str(result.payment.id)
    elif event.intent is not None and event.intent.payment_id:
        g.payment_id = event.intent.payment_id
    services().metrics.webhooks.labels(event.type, result.outcome).inc()
    if result.duplicate:
        return jsonify({"status": "duplicate", "outcome": None})
    return jsonify({"status": "processed", "outcome": result.outcome})


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "up"})


@bp.get("/readyz")
def readyz() -> Response:
    """Up or down per part, nothing more: why a part is down goes to the log."""
    checks: dict[str, str] = {}
    for name, check in services().readiness.items():
        result = check()
        checks[name] = "up" if result == "ok" else "down"
        if result != "ok":
            log.warning("readiness check failed", part=name, error=result)
    ready = all(v == "up" for v in checks.values())
    response = jsonify({"status": "ready" if ready else "not ready", "checks": checks})
    response.status_code = 200 if ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/metrics")
@operator_required
def metrics() -> Response:
    return Response(services().metrics.render(), mimetype="text/plain; version=0.0.4")


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_spec())


@bp.get("/docs")
def docs() -> Response:
    return Response(render_docs(build_spec()), mimetype="text/html")
