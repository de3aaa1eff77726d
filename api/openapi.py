"""The OpenAPI 3.1 document (paths by hand, schemas from the pydantic models) and its HTML page.

It describes the server exactly: every status an operation can answer is listed, and every
request the document allows is one the server accepts; ``tests/integration/
test_api_openapi_live.py`` runs Schemathesis with all its checks against the running API to keep
it so. Patterns are written once, in ``api.ids`` and ``api.schemas``, and used by both the server
and this document.
"""

from __future__ import annotations

import html
from typing import Any

from api.demo_shop import DEMO_KEY_MAX, DEMO_ORDERS, DemoOrderBody
from api.ids import CURSOR_PATTERN, UUID_PATTERN, idempotency_key_pattern
from api.schemas import schema_components


def _problem(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if retry_after:
        answer["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    return answer


def _json(ref: str, description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _body(ref: str, example: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{ref}"},
                "example": example,
            }
        },
    }


def _idempotency_key(max_length: int) -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": True,
        "description": "One key per payment attempt (e.g. a UUID): the same key and body "
        f"answer the same payment. 1 to {max_length} printable ASCII characters, no space at "
        "either end.",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": max_length,
            "pattern": idempotency_key_pattern(max_length),
        },
        "example": "order-1042-attempt-1",
    }


PAYMENT_ID = {
    "name": "payment_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN},
}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
OPEN: list[dict[str, list[str]]] = []
LOCATION = {"description": "/payments/<id>", "schema": {"type": "string"}}
REPLAYED = {
    "description": "true when the answer is the payment an earlier request with this key made",
    "schema": {"type": "string", "enum": ["true"]},
}

# What every bearer-protected operation may answer besides its own outcomes.
AUTHENTICATED = {
    "401": _problem("No bearer credential, or not a valid API key or checkout token"),
    "403": _problem("A checkout token used beyond its one payment's confirm and timeline"),
    "503": _problem(
        "Database or Stripe unavailable, or (a request that calls Stripe) every Stripe slot of "
        "the process taken (busy); nothing was stored: retry after Retry-After",
        retry_after=True,
    ),
}
JSON_BODY = {
    "400": _problem("The body is not valid JSON"),
    "413": _problem("The body is larger than the limit"),
    "415": _problem("The body is not application/json"),
    "422": _problem("A field is invalid (each one named in errors)"),
}
BAD_ID = {"422": _problem("The payment id is not a UUID")}
NO_PAYMENT = {"404": _problem("No such payment")}


def _payments_paths() -> dict[str, Any]:
    return {
        "/payments": {
            "post": {
                "operationId": "createPayment",
                "summary": "Start a payment (idempotent per Idempotency-Key)",
                "security": BEARER,
                "parameters": [_idempotency_key(255)],
                "requestBody": _body(
                    "CreatePayment",
                    {
                        "amount_minor": 1999,
                        "currency": "usd",
                        "description": "Order 1042",
                        "metadata": {"order_id": "1042"},
                    },
                ),
                "responses": {
                    "201": _json(
                        "CreatedPayment",
                        "Created, or replayed (Idempotent-Replayed: true)",
                        Location=LOCATION,
                        **{"Idempotent-Replayed": REPLAYED},
                    ),
                    "202": _json(
                        "CreatedPayment",
                        "Stored as pending; Stripe unreachable, the intent is created later",
                        Location=LOCATION,
                    ),
                    **AUTHENTICATED,
                    **JSON_BODY,
                    "400": _problem("Missing or invalid Idempotency-Key, or malformed JSON"),
                    "402": _problem(
                        "Refused by Stripe (errors name the field when Stripe does); the "
                        "payment is failed"
                    ),
                    "409": _problem(
                        "The key is in use by a request still in progress (Retry-After), or "
                        "was used with another body",
                        retry_after=True,
                    ),
                },
            },
            "get": {
                "operationId": "listPayments",
                "summary": "List payments, oldest first, keyset paginated",
                "security": BEARER,
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"$ref": "#/components/schemas/Status"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "The `next` of the previous page",
                        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                    },
                ],
                "responses": {
                    "200": _json("PaymentPage", "One page"),
                    **AUTHENTICATED,
                    "422": _problem("Invalid query parameter"),
                },
            },
        },
        "/payments/{payment_id}": {
            "get": {
                "operationId": "getPayment",
                "summary": "One payment (read from a replica, primary fallback)",
                "security": BEARER,
                "parameters": [PAYMENT_ID],
                "responses": {
                    "200": _json("Payment", "The payment"),
                    **AUTHENTICATED,
                    **NO_PAYMENT,
                    **BAD_ID,
                },
            },
        },
        "/payments/{payment_id}/cancel": {
            "post": {
                "operationId": "cancelPayment",
                "summary": "Cancel the payment (and its PaymentIntent)",
                "security": BEARER,
                "parameters": [PAYMENT_ID],
                "responses": {
                    "200": _json("Payment", "Canceled (or already was)"),
                    **AUTHENTICATED,
                    "402": _problem("Stripe refused the request"),
                    **NO_PAYMENT,
                    "409": _problem(
                        "Already final, being created (Retry-After), or Stripe does not know "
                        "its intent",
                        retry_after=True,
                    ),
                    **BAD_ID,
                },
            },
        },
        "/payments/{payment_id}/confirm": {
            "post": {
                "operationId": "confirmPayment",
                "summary": "Confirm the PaymentIntent with a payment method made by Stripe.js "
                "(server-side confirmation); the status follows by webhook. An API key or the "
                "payment's checkout token.",
                "security": BEARER,
                "parameters": [PAYMENT_ID],
                "requestBody": _body("ConfirmPayment", {"payment_method": "pm_card_visa"}),
                "responses": {
                    "200": _json("Confirmation", "Stripe's answer (e.g. requires_action)"),
                    **AUTHENTICATED,
                    **JSON_BODY,
                    "402": _problem(
                        "Stripe refused the payment method (declined, unknown or unusable); a "
                        "decline reaches the payment by webhook"
                    ),
                    **NO_PAYMENT,
                    "409": _problem(
                        "Already final, no intent yet (Retry-After), or the intent moved on at "
                        "Stripe",
                        retry_after=True,
                    ),
                    "422": _problem("Invalid payment id or payment method"),
                },
            },
        },
        "/payments/{payment_id}/timeline": {
            "get": {
                "operationId": "getPaymentTimeline",
                "summary": "The payment (from the primary), its audit rows, webhook inbox "
                "rows and payment-status-update events, as steps. An API key or the payment's "
                "checkout token.",
                "security": BEARER,
                "parameters": [PAYMENT_ID],
                "responses": {
                    "200": _json("Timeline", "The payment's way through the pipeline"),
                    **AUTHENTICATED,
                    **NO_PAYMENT,
                    **BAD_ID,
                },
            },
        },
        "/payments/{payment_id}/checkout-token": {
            "post": {
                "operationId": "createCheckoutToken",
                "summary": "A short-lived token the customer's browser uses to confirm and "
                "follow this one payment on /checkout?token=… (API key only)",
                "security": BEARER,
                "parameters": [PAYMENT_ID],
                "responses": {
                    "200": _json("CheckoutToken", "The token and its checkout page"),
                    **AUTHENTICATED,
                    **NO_PAYMENT,
                    **BAD_ID,
                },
            },
        },
    }


def _checkout_paths() -> dict[str, Any]:
    return {
        "/checkout": {
            "get": {
                "operationId": "checkoutPage",
                "summary": "HTML checkout page: with ?token=…, the merchant's payment; without, "
                "the demo shop (local Stripe stand-in only)",
                "security": OPEN,
                "parameters": [
                    {
                        "name": "token",
                        "in": "query",
                        "required": False,
                        "description": "A checkout token (POST /payments/{id}/checkout-token)",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "order",
                        "in": "query",
                        "required": False,
                        "description": "The demo shop's order to preselect",
                        "schema": {"type": "string", "enum": list(DEMO_ORDERS)},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "401": _problem("The checkout token is not valid or expired"),
                    "404": _problem("No such order, the token's payment is gone, or no demo shop"),
                    "503": _problem(
                        "Checkout tokens or the database unavailable", retry_after=True
                    ),
                },
            }
        },
        "/checkout/orders": {
            "post": {
                "operationId": "startDemoOrder",
                "summary": "The demo shop's server-side merchant step: prices the order, creates "
                "its payment (tenant demo) and answers a checkout token for it (local Stripe "
                "stand-in only)",
                "security": OPEN,
                "parameters": [_idempotency_key(DEMO_KEY_MAX)],
                "requestBody": _body("DemoOrder", {"order": "coffee"}),
                "responses": {
                    "201": _json(
                        "DemoOrderCreated",
                        "Created, or replayed (Idempotent-Replayed: true)",
                        **{"Idempotent-Replayed": REPLAYED},
                    ),
                    "202": _json("DemoOrderCreated", "Stored as pending; Stripe unreachable"),
                    **JSON_BODY,
                    "400": _problem("Missing or invalid Idempotency-Key, or malformed JSON"),
                    "402": _problem("Refused by Stripe"),
                    "404": _problem("No demo shop here (real Stripe)"),
                    "409": _problem(
                        "The key is in use by a request in progress, or was used for another order",
                        retry_after=True,
                    ),
                    "503": _problem(
                        "Database, Stripe or checkout tokens unavailable, or every Stripe slot "
                        "of the process taken (busy)",
                        retry_after=True,
                    ),
                },
            }
        },
    }


def _operations_paths() -> dict[str, Any]:
    return {
        "/webhooks/stripe": {
            "post": {
                "operationId": "stripeWebhook",
                "summary": "Stripe events, signed (Stripe-Signature over the raw body, with any "
                "of the configured secrets)",
                "security": [{"stripeSignature": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": _json("WebhookAck", "Accepted (applied, duplicate or ignored)"),
                    "401": _problem("Missing, wrong or stale signature"),
                    "413": _problem("Body too large"),
                    "422": _problem("Correctly signed, but not a Stripe event"),
                    "503": _problem(
                        "No webhook secret configured, or database unavailable; Stripe retries",
                        retry_after=True,
                    ),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "The process is up",
                "security": OPEN,
                "responses": {"200": _json("Health", "Up")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "summary": "Up or down per database part (primary, replicas), nothing more",
                "security": OPEN,
                "responses": {
                    "200": _json("Ready", "Every part is up"),
                    "503": _json("Ready", "A part is down"),
                },
            }
        },
    }


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


# What the HTTP server in front of Flask (gunicorn) answers before the API sees a request: any
# operation, whatever its parameters, in gunicorn's own HTML.
HTTP_SERVER = {
    "414": _html("Request line over gunicorn's limit (4094 bytes), e.g. a very long query"),
    "431": _html("A header over gunicorn's limit (8190 bytes)"),
}


def _with_server_limits(paths: dict[str, Any]) -> dict[str, Any]:
    for operations in paths.values():
        for operation in operations.values():
            operation["responses"].update(HTTP_SERVER)
    return paths


def build_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Payments API",
            "version": "0.2.0",
            "description": "Idempotent payment initiation with Stripe, signed webhooks, "
            "replica reads. Authenticate with 'Authorization: Bearer <API key>' (each key acts "
            "for its tenant); a checkout token may only confirm and follow its own payment. "
            "Errors are application/problem+json.",
        },
        "security": BEARER,
        "components": {
            "schemas": schema_components(DemoOrderBody),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key of API_KEYS (acts for its tenant), or on confirm "
                    "and timeline the payment's checkout token",
                },
                "stripeSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Stripe-Signature",
                    "description": "Stripe's signature of the raw body (t=…,v1=…)",
                },
            },
        },
        "paths": _with_server_limits(
            {**_payments_paths(), **_checkout_paths(), **_operations_paths()}
        ),
    }


def render_docs(spec: dict[str, Any]) -> str:
    """A plain HTML page of the spec: no scripts, no CDN."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>",
        html.escape(spec["info"]["title"]),
        "</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "code,pre{background:#f4f4f4}h3{margin-bottom:.2em}</style></head><body>",
        f"<h1>{html.escape(spec['info']['title'])} {html.escape(spec['info']['version'])}</h1>",
        f"<p>{html.escape(spec['info']['description'])}</p>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>",
    ]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            parts.append(f"<h3><code>{method.upper()} {html.escape(path)}</code></h3>")
            if op.get("summary"):
                parts.append(f"<p>{html.escape(op['summary'])}</p>")
            auth = (
                "none"
                if op.get("security") == []
                else ", ".join(
                    name
                    for requirement in op.get("security", spec["security"])
                    for name in requirement
                )
            )
            parts.append(f"<p>Authentication: {html.escape(auth)}</p>")
            params = op.get("parameters", [])
            if params:
                parts.append("<ul>")
                for p in params:
                    needed = " (required)" if p.get("required") else ""
                    parts.append(
                        f"<li>{html.escape(p['in'])} <code>"
                        f"{html.escape(p['name'])}</code>{needed}</li>"
                    )
                parts.append("</ul>")
            parts.append("<ul>")
            for code, response in op["responses"].items():
                parts.append(f"<li><b>{code}</b> {html.escape(response['description'])}</li>")
            parts.append("</ul>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in spec["components"]["schemas"].items():
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        parts.append(f"<h3>{html.escape(name)}</h3><ul>")
        for prop, prop_schema in props.items():
            mark = " <i>required</i>" if prop in required else ""
            desc = html.escape(prop_schema.get("description", ""))
            parts.append(f"<li><code>{html.escape(prop)}</code>{mark} {desc}</li>")
        parts.append("</ul>")
    parts.append("</body></html>")
    return "".join(parts)
