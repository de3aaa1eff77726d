"""The OpenAPI 3.1 document (paths by hand, schemas from the pydantic models) and its HTML page."""

from __future__ import annotations

import html
from typing import Any

from api.schemas import schema_components


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


PAYMENT_ID = {
    "name": "payment_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
COMMON = {
    "401": _problem("Missing or wrong API key (when API keys are configured)"),
    "503": _problem("Database or Stripe unavailable; retry after Retry-After seconds"),
}


def build_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Payments API",
            "version": "0.1.0",
            "description": "Idempotent payment initiation with Stripe, signed webhooks, "
            "replica reads. Errors are application/problem+json.",
        },
        "components": {
            "schemas": schema_components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/payments": {
                "post": {
                    "operationId": "createPayment",
                    "summary": "Start a payment (idempotent per Idempotency-Key)",
                    "security": [{"bearer": []}, {}],
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CreatePayment"}
                            }
                        },
                    },
                    "responses": {
                        "201": _json(
                            "CreatedPayment",
                            "Created (or replayed: header Idempotent-Replayed: true)",
                        ),
                        "202": _json(
                            "CreatedPayment",
                            "Stored as pending; Stripe unreachable, the intent is created later",
                        ),
                        "400": _problem("Malformed request or refused by Stripe"),
                        "402": _problem("Declined by Stripe; the payment is failed"),
                        "409": _problem("A request with this key is in progress"),
                        "413": _problem("Body too large"),
                        "415": _problem("Body is not JSON"),
                        "422": _problem("Invalid field, or key reused with another body"),
                        **COMMON,
                    },
                },
                "get": {
                    "operationId": "listPayments",
                    "summary": "List payments, oldest first, keyset paginated",
                    "security": [{"bearer": []}, {}],
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
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 100,
                                "default": 20,
                            },
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": _json("PaymentPage", "One page"),
                        "422": _problem("Invalid query parameter"),
                        **COMMON,
                    },
                },
            },
            "/payments/{payment_id}": {
                "get": {
                    "operationId": "getPayment",
                    "summary": "One payment (read from a replica, primary fallback)",
                    "security": [{"bearer": []}, {}],
                    "parameters": [PAYMENT_ID],
                    "responses": {
                        "200": _json("Payment", "The payment"),
                        "404": _problem("No such payment"),
                        **COMMON,
                    },
                },
            },
            "/payments/{payment_id}/cancel": {
                "post": {
                    "operationId": "cancelPayment",
                    "summary": "Cancel the payment (and its PaymentIntent)",
                    "security": [{"bearer": []}, {}],
                    "parameters": [PAYMENT_ID],
                    "responses": {
                        "200": _json("Payment", "Canceled (or already was)"),
                        "404": _problem("No such payment"),
                        "409": _problem("Already final, or being created"),
                        "503": _problem("Stripe unreachable; retry"),
                        **COMMON,
                    },
                },
            },
            "/payments/{payment_id}/confirm": {
                "post": {
                    "operationId": "confirmPayment",
                    "summary": "Confirm the PaymentIntent with a payment method made by Stripe.js "
                    "(server-side confirmation); the status follows by webhook",
                    "security": [{"bearer": []}, {}],
                    "parameters": [PAYMENT_ID],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ConfirmPayment"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json("Confirmation", "Stripe's answer (e.g. requires_action)"),
                        "402": _problem("Declined by Stripe; the webhook marks the payment failed"),
                        "404": _problem("No such payment"),
                        "409": _problem("Already final, or no intent yet"),
                        "422": _problem("Invalid id or payment method"),
                        **COMMON,
                    },
                },
            },
            "/payments/{payment_id}/timeline": {
                "get": {
                    "operationId": "getPaymentTimeline",
                    "summary": "The payment (from the primary), its audit rows, webhook inbox "
                    "rows and payment-status-update events, as steps",
                    "security": [{"bearer": []}, {}],
                    "parameters": [PAYMENT_ID],
                    "responses": {
                        "200": _json("Timeline", "The payment's way through the pipeline"),
                        "404": _problem("No such payment"),
                        "422": _problem("The id is not a UUID"),
                        **COMMON,
                    },
                },
            },
            "/checkout": {
                "get": {
                    "operationId": "checkoutPage",
                    "summary": "HTML checkout page: pay with a card and watch every hop",
                    "responses": {
                        "200": {
                            "description": "The page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/webhooks/stripe": {
                "post": {
                    "operationId": "stripeWebhook",
                    "summary": "Stripe events, signed (Stripe-Signature over the raw body)",
                    "parameters": [
                        {
                            "name": "Stripe-Signature",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {
                        "200": _json("WebhookAck", "Accepted (applied, duplicate or ignored)"),
                        "400": _problem("Bad or stale signature, or not an event"),
                        "413": _problem("Body too large"),
                        "503": _problem("Database unavailable; Stripe retries later"),
                    },
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "responses": {
                        "200": {
                            "description": "The process is up",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "responses": {
                        "200": {
                            "description": "Primary and every replica answer",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {
                            "description": "A database is unreachable",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                    },
                }
            },
        },
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
