"""The one error translator: every error leaves the API as ``application/problem+json``."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, json
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from payments.domain.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PaymentsError,
    ProviderDeclined,
    RetryableError,
    StoreUnavailable,
    TransitionRefused,
)
from payments.logs import get_logger
from payments.service import CreationInProgress, IdempotencyKeyReused, PaymentDeclined

log = get_logger(__name__)
PROBLEM_JSON = "application/problem+json"
# What a 5xx says: never an upstream error or a host name (those are logged, with the request id).
INTERNAL_DETAIL = "an unexpected error occurred; see the server log"


class ApiProblem(Exception):
    """Raised by views for HTTP-level refusals (auth, headers, malformed JSON)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        kind: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind
        self.field = field
        self.headers = headers or {}


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    kind: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": f"/problems/{kind}",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": errors or [],
        **extra,
    }
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _field_errors(field: str | None, message: str) -> list[dict[str, str]]:
    return [{"field": field, "message": message}] if field else []


def _pydantic_errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "body"
        out.append({"field": loc, "message": err["msg"]})
    return out


def translate(exc: Exception) -> Response:
    if isinstance(exc, ApiProblem):
        return problem(
            exc.status,
            exc.title,
            exc.detail,
            kind=exc.kind,
            errors=_field_errors(exc.field, exc.detail),
            headers=exc.headers,
        )
    if isinstance(exc, ValidationError):
        errors = _pydantic_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", detail, kind="validation-error", errors=errors)
    if isinstance(exc, InvalidRequest) and exc.field == "Stripe-Signature":
        # The signature is how a webhook authenticates: missing, wrong or stale is a 401.
        return problem(
            401,
            "Webhook signature refused",
            str(exc),
            kind="webhook-signature",
            errors=_field_errors(exc.field, str(exc)),
            headers={"WWW-Authenticate": 'Stripe-Signature realm="webhooks"'},
        )
    if isinstance(exc, InvalidRequest):
        return problem(
            422,
            "Invalid request",
            str(exc),
            kind="invalid-request",
            errors=_field_errors(exc.field, str(exc)),
        )
    if isinstance(exc, NotFound):
        return problem(404, "Not found", str(exc), kind="not-found")
    if isinstance(exc, IdempotencyKeyReused):
        # 409: the key is bound to the stored request. The detail is ours, not the service's:
        # it names the caller's own key and nothing stored under it.
        detail = (
            "this Idempotency-Key was already used with a different request body; send the "
            "same body to get that payment again, or use a new key for a new payment"
        )
        return problem(
            409,
            "Idempotency key reused with a different body",
            detail,
            kind="idempotency-key-reused",
            errors=_field_errors("Idempotency-Key", detail),
        )
    if isinstance(exc, CreationInProgress):
        return problem(
            409,
            "Request in progress",
            str(exc),
            kind="request-in-progress",
            headers={"Retry-After": str(exc.retry_after_seconds)},
        )
    if isinstance(exc, TransitionRefused):
        return problem(409, "Status change refused", str(exc), kind="transition-refused")
    if isinstance(exc, Conflict):
        return problem(409, "Conflict", str(exc), kind="conflict")
    if isinstance(exc, ProviderDeclined):
        extra: dict[str, Any] = {"code": exc.code}
        if isinstance(exc, PaymentDeclined):
            extra["payment_id"] = str(exc.payment.id)
            g.payment_id = str(exc.payment.id)
        if exc.code == "payment_intent_unexpected_state":
            # The intent moved on at Stripe (e.g. already paid): a conflict with its state.
            return problem(
                409, "Conflict at the payment provider", str(exc), kind="conflict", **extra
            )
        # The provider refused a well-formed request: a declined or unknown card, or a value
        # only Stripe checks (errors name it when Stripe does). Never a validation answer of
        # ours (those are 400, 415, 422), so a client can tell the two apart by status alone.
        return problem(
            402,
            "Declined by the payment provider",
            str(exc),
            kind="provider-declined",
            errors=_field_errors(exc.field, str(exc)),
            **extra,
        )
    if isinstance(exc, RetryableError):
        # Stripe's error text names hosts and internals: it goes to the log, not the caller.
        log.warning("payment provider unavailable", error=str(exc))
        return problem(
            503,
            "Payment provider unavailable",
            "the payment provider could not be reached; retry after Retry-After seconds",
            kind="provider-unavailable",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, StoreUnavailable):
        log.warning("database unavailable", error=str(exc))
        return problem(
            503,
            "Database unavailable",
            "the payments database did not answer in time; retry shortly",
            kind="database-unavailable",
            headers={"Retry-After": "2"},
        )
    if isinstance(exc, HTTPException):
        return _http_problem(exc)
    if isinstance(exc, PaymentsError):
        log.error("unclassified payments error", error=str(exc))
        return problem(
            500,
            "Internal error",
            INTERNAL_DETAIL,
            kind="internal",
        )
    log.exception("unhandled error")
    return problem(500, "Internal error", INTERNAL_DETAIL, kind="internal")


def _http_problem(exc: HTTPException) -> Response:
    code = exc.code or 500
    kind = (exc.name or "error").lower().replace(" ", "-")
    detail = exc.description or exc.name
    if code >= 500:
        log.error("http error", status=code, error=detail)
        detail = INTERNAL_DETAIL
    if code == 413:
        detail = f"request body is larger than the limit ({detail})"
    response = problem(code, exc.name, detail, kind=kind)
    if code == 405 and exc.get_response().headers.get("Allow"):
        response.headers["Allow"] = exc.get_response().headers["Allow"]
    return response


def register(app: Flask) -> None:
    app.register_error_handler(Exception, translate)
