"""Thin views: parse, call one use case, answer."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import Blueprint, Response, current_app, g, jsonify, request

from api.bootstrap import ApiServices
from api.openapi import build_spec, render_docs
from api.operator import operator_required
from api.problems import ApiProblem
from api.schemas import ConfirmPaymentBody, CreatePaymentBody
from api.timeline import timeline
from payments.adapters.stripe_gateway import verify_webhook
from payments.domain.errors import InvalidRequest
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Status
from payments.ports import PageCursor
from payments.service import CreateOutcome, CreatePayment

bp = Blueprint("payments", __name__)
WEBHOOK_MAX_BYTES = 1024 * 1024


def services() -> ApiServices:
    found: ApiServices = current_app.extensions["payments"]
    return found


def _payment_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise InvalidRequest(
            f"payment id must be a UUID, got {raw!r}", field="payment_id"
        ) from None


def _json_body() -> Any:
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
    return data


def _created_body(payment: Payment, pending_reason: str | None = None) -> dict[str, Any]:
    return {
        **payment.public_dict(),
        "client_secret": payment.client_secret,
        "pending_reason": pending_reason,
    }


@bp.post("/payments")
def create_payment() -> Response:
    key = request.headers.get("Idempotency-Key", "")
    if not 1 <= len(key) <= 255:
        raise ApiProblem(
            400,
            "Idempotency-Key required",
            f"send an Idempotency-Key header of 1 to 255 characters (got {len(key)})",
            kind="idempotency-key-required",
            field="Idempotency-Key",
        )
    if not key.isprintable():
        raise ApiProblem(
            400,
            "Invalid Idempotency-Key",
            f"the Idempotency-Key header must be printable text, got {key!r}",
            kind="invalid-idempotency-key",
            field="Idempotency-Key",
        )
    data = _json_body()
    if not isinstance(data, dict):
        raise ApiProblem(
            422,
            "Invalid request",
            "the body must be a JSON object",
            kind="validation-error",
            field="body",
        )
    body = CreatePaymentBody.model_validate(data)
    result = services().service.create_payment(
        CreatePayment(
            idempotency_key=key,
            money=Money(body.amount_minor, body.currency),
            customer_email=body.customer_email,
            description=body.description,
            metadata=body.metadata,
        )
    )
    payment = result.payment
    g.payment_id = str(payment.id)
    if result.outcome is CreateOutcome.DEFERRED:
        response = jsonify(_created_body(payment, result.detail))
        response.status_code = 202
    else:
        response = jsonify(_created_body(payment))
        response.status_code = 201
        if result.outcome is CreateOutcome.REPLAYED:
            response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/payments/{payment.id}"
    return response


@bp.get("/payments/<raw_id>")
def get_payment(raw_id: str) -> Response:
    payment = services().service.get(_payment_id(raw_id))
    g.payment_id = str(payment.id)
    return jsonify(payment.public_dict())


@bp.get("/payments")
def list_payments() -> Response:
    args = request.args
    status: Status | None = None
    if args.get("status"):
        try:
            status = Status(args["status"])
        except ValueError:
            raise InvalidRequest(
                f"status must be one of {', '.join(s.value for s in Status)}, "
                f"got {args['status']!r}",
                field="status",
            ) from None
    raw_limit = args.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise InvalidRequest(
            f"limit must be an integer from 1 to 100, got {raw_limit!r}", field="limit"
        )
    after = PageCursor.decode(args["after"]) if args.get("after") else None
    payments, cursor = services().service.list(status=status, limit=int(raw_limit), after=after)
    return jsonify(
        {"data": [p.public_dict() for p in payments], "next": cursor.encode() if cursor else None}
    )


@bp.post("/payments/<raw_id>/cancel")
def cancel_payment(raw_id: str) -> Response:
    payment_id = _payment_id(raw_id)
    g.payment_id = str(payment_id)
    payment = services().service.cancel(payment_id)
    return jsonify(payment.public_dict())


@bp.post("/payments/<raw_id>/confirm")
def confirm_payment(raw_id: str) -> Response:
    payment_id = _payment_id(raw_id)
    g.payment_id = str(payment_id)
    data = _json_body()
    if not isinstance(data, dict):
        raise ApiProblem(
            422,
            "Invalid request",
            "the body must be a JSON object",
            kind="validation-error",
            field="body",
        )
    body = ConfirmPaymentBody.model_validate(data)
    confirmation = services().service.confirm(payment_id, body.payment_method)
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
    history = services().service.history(payment_id)
    emitted = services().status_events.events_for(payment_id, history.payment.created_at)
    response = jsonify(timeline(history, emitted))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/webhooks/stripe")
def stripe_webhook() -> Response:
    request.max_content_length = WEBHOOK_MAX_BYTES
    raw = request.get_data(cache=True)
    settings = services().settings
    event, payload = verify_webhook(
        raw,
        request.headers.get("Stripe-Signature"),
        secret=settings.stripe_webhook_secret,
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
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    checks = {name: check() for name, check in services().readiness.items()}
    ready = all(v == "ok" for v in checks.values())
    response = jsonify({"status": "ready" if ready else "not ready", "checks": checks})
    response.status_code = 200 if ready else 503
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
