"""The one error translator: every error leaves the API as ``application/problem+json``."""

from __future__ import annotations

from typing import Any

import psycopg
from flask import Flask, Response, g, json
from psycopg_pool import PoolTimeout
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from payments.domain.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PaymentsError,
    ProviderDeclined,
    RetryableError,
    TransitionRefused,
)
from payments.logs import get_logger
from payments.service import CreationInProgress, IdempotencyKeyReused, PaymentDeclined

log = get_logger(__name__)
PROBLEM_JSON = "application/problem+json"


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
    if isinstance(exc, InvalidRequest):
        return problem(
            400 if exc.field == "Stripe-Signature" else 422,
            "Invalid request",
            str(exc),
            kind="invalid-request",
            errors=_field_errors(exc.field, str(exc)),
        )
    if isinstance(exc, NotFound):
        return problem(404, "Not found", str(exc), kind="not-found")
    if isinstance(exc, IdempotencyKeyReused):
        return problem(
            422,
            "Idempotency key reused with a different body",
            str(exc),
            kind="idempotency-key-reused",
            errors=_field_errors("Idempotency-Key", str(exc)),
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
        status = 400 if exc.field else 402
        return problem(
            status,
            "Declined by the payment provider",
            str(exc),
            kind="provider-declined",
            errors=_field_errors(exc.field, str(exc)),
            **extra,
        )
    if isinstance(exc, RetryableError):
        return problem(
            503,
            "Payment provider unavailable",
            str(exc),
            kind="provider-unavailable",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, (psycopg.OperationalError, PoolTimeout)):
        log.warning("database unavailable", error=str(exc))
        return problem(
            503,
            "Database unavailable",
            "the payments database did not answer in time; retry shortly",
            kind="database-unavailable",
            headers={"Retry-After": "2"},
        )
    if isinstance(exc, HTTPException):
        code = exc.code or 500
        kind = (exc.name or "error").lower().replace(" ", "-")
        detail = exc.description or exc.name
        if code == 413:
            detail = f"request body is larger than the limit ({detail})"
        response = problem(code, exc.name, detail, kind=kind)
        if code == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response
    if isinstance(exc, PaymentsError):
        log.error("unclassified payments error", error=str(exc))
        return problem(500, "Internal error", str(exc), kind="internal")
    log.exception("unhandled error")
    return problem(
        500, "Internal error", "an unexpected error occurred; see the server log", kind="internal"
    )


def register(app: Flask) -> None:
    app.register_error_handler(Exception, translate)
