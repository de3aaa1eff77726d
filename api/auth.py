"""Who is calling, decided once per request before any view runs.

Three kinds of caller, one header (``Authorization: Bearer …``):

* an **API key** (``API_KEYS`` = ``tenant:key`` pairs): the merchant's server; acts for its
  tenant on every payment endpoint;
* a **checkout token** (``ct1.…``, minted by ``POST /payments/<id>/checkout-token`` or the demo
  shop, see ``api.checkout_tokens``): the customer's browser; may only confirm and follow the one
  payment it names, until it expires;
* nobody, on the open endpoints (health, docs, the checkout page, the Stripe webhook, which
  is verified by its signature instead) and, with ``API_AUTH_DISABLED=true``, everywhere: every
  request then acts as tenant ``dev`` and the app says so loudly at start.

The tenant lands in ``flask.g.tenant`` and in every log line of the request.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

import structlog
from flask import current_app, g, request

from api.checkout_tokens import TOKEN_PREFIX, CheckoutTokens, TokenRefused, TokensNotConfigured
from api.ids import parse_payment_id
from api.problems import ApiProblem
from payments.logs import get_logger
from payments.settings import Settings

log = get_logger("api.auth")

DEV_TENANT = "dev"
# A checkout-token secret shorter than this is refused at start (it signs what browsers hold).
MIN_TOKEN_SECRET_CHARS = 16

# Endpoints no API key opens: anyone's, or with a credential of their own (the webhook proves
# itself with Stripe's signature; /metrics, /ops and /ops.json check the operator credential,
# api/operator.py, since they show every tenant's payments and the internals).
OPEN_ENDPOINTS = frozenset(
    {
        "payments.stripe_webhook",
        "payments.healthz",
        "payments.readyz",
        "payments.metrics",
        "ops.ops_page",
        "ops.ops_json",
        "payments.openapi",
        "payments.docs",
        "contracts.asyncapi",  # the AsyncAPI contract of the topics: public, like /openapi.json
        "checkout.page",
        "checkout.static",
        # The demo shop: the server-side merchant step of the local stand-in (api.checkout).
        "checkout.start_demo_order",
    }
)
# What a checkout token may do, on its own payment only (the ``raw_id`` of the path).
TOKEN_ENDPOINTS = frozenset({"payments.confirm_payment", "payments.payment_timeline"})


class ConfigurationError(RuntimeError):
    """The settings would make the API insecure or unusable; the message names the setting."""


class CallerKind(StrEnum):
    API_KEY = "api_key"
    CHECKOUT_TOKEN = "checkout_token"  # noqa: S105 (a kind of caller, not a secret)
    DEV = "dev"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Caller:
    kind: CallerKind
    tenant: str | None
    # Set for a checkout token: the one payment it covers.
    payment_id: UUID | None = None


def check_settings(settings: Settings) -> None:
    """Refuse to build an app that would serve without keys or accept unverifiable webhooks."""
    if settings.api_auth_disabled:
        log.warning(
            "API AUTHENTICATION IS DISABLED (API_AUTH_DISABLED=true): every request acts as "
            f"tenant {DEV_TENANT!r} without a key; never run like this outside a development "
            "machine"
        )
    elif not settings.api_key_tenants:
        raise ConfigurationError(
            "API_KEYS is empty: set API_KEYS to comma-separated tenant:key pairs (make up "
            "generates local ones in .env), or set API_AUTH_DISABLED=true to serve without "
            "authentication on a development machine"
        )
    elif any(not key for key in settings.api_key_tenants):
        raise ConfigurationError("API_KEYS has a tenant with an empty key; give every tenant a key")
    elif any(key.startswith(TOKEN_PREFIX) for key in settings.api_key_tenants):
        raise ConfigurationError(
            f"API_KEYS has a key starting with {TOKEN_PREFIX!r}, the prefix of checkout tokens; "
            "choose another key"
        )
    if not settings.webhook_secrets:
        if not settings.stripe_is_local:
            raise ConfigurationError(
                "STRIPE_WEBHOOK_SECRET is empty while STRIPE_API_BASE is not the local stand-in: "
                "set it to the signing secret (whsec_…) of your Stripe webhook endpoint"
            )
        log.warning(
            "STRIPE_WEBHOOK_SECRET is not set: POST /webhooks/stripe refuses every event until "
            "it is (the reconciler still settles payments)"
        )
    secret = settings.checkout_token_secret
    if secret and len(secret) < MIN_TOKEN_SECRET_CHARS:
        raise ConfigurationError(
            f"CHECKOUT_TOKEN_SECRET is {len(secret)} characters; use a random value of at least "
            f"{MIN_TOKEN_SECRET_CHARS} (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    if not secret:
        log.warning(
            "CHECKOUT_TOKEN_SECRET is not set: the checkout page cannot be used with API keys "
            "on (its browser needs a signed single-payment token)"
        )


class KeyRing:
    """API key -> tenant, compared in constant time (every key is compared, whatever matches)."""

    def __init__(self, key_tenants: dict[str, str]) -> None:
        self._keys = [(_digest(key), tenant) for key, tenant in key_tenants.items()]

    def tenant_for(self, presented: str) -> str | None:
        digest = _digest(presented)
        found: str | None = None
        for key_digest, tenant in self._keys:
            if hmac.compare_digest(digest, key_digest):
                found = tenant
        return found


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def _unauthorized(detail: str, *, error: str | None = None) -> ApiProblem:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return ApiProblem(
        401,
        "Unauthorized",
        detail,
        kind="unauthorized",
        field="Authorization",
        headers={"WWW-Authenticate": challenge},
    )


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class Authenticator:
    """Decides the caller of each request (``before_request``)."""

    def __init__(self, settings: Settings, tokens: CheckoutTokens) -> None:
        self.disabled = settings.api_auth_disabled
        self.keys = KeyRing(settings.api_key_tenants)
        self.tokens = tokens

    def authenticate(self) -> Caller:
        endpoint = request.endpoint
        if request.routing_exception is not None or endpoint in OPEN_ENDPOINTS:
            # Unknown paths and methods answer 404/405 as they are; open endpoints need no one.
            return Caller(CallerKind.DEV, DEV_TENANT) if self.disabled else _anonymous()
        if self.disabled:
            return Caller(CallerKind.DEV, DEV_TENANT)
        presented = _bearer()
        if presented is None:
            raise _unauthorized("send 'Authorization: Bearer <API key>' with a key of API_KEYS")
        if presented.startswith(TOKEN_PREFIX):
            return self._checkout_token(presented, endpoint)
        tenant = self.keys.tenant_for(presented)
        if tenant is None:
            raise _unauthorized(
                "the bearer key is not one of the configured API keys", error="invalid_token"
            )
        return Caller(CallerKind.API_KEY, tenant)

    def _checkout_token(self, presented: str, endpoint: str | None) -> Caller:
        try:
            grant = self.tokens.verify(presented)
        except TokenRefused as exc:
            raise _unauthorized(str(exc), error="invalid_token") from None
        except TokensNotConfigured:
            raise tokens_not_configured() from None
        raw_id = (request.view_args or {}).get("raw_id")
        in_scope = endpoint in TOKEN_ENDPOINTS and raw_id is not None
        if in_scope:
            try:
                in_scope = parse_payment_id(str(raw_id)) == grant.payment_id
            except ValueError:
                in_scope = False
        if not in_scope:
            raise ApiProblem(
                403,
                "Forbidden",
                "a checkout token may only confirm and follow the timeline of its own payment",
                kind="checkout-token-scope",
                field="Authorization",
            )
        return Caller(CallerKind.CHECKOUT_TOKEN, grant.tenant, grant.payment_id)


def tokens_not_configured() -> ApiProblem:
    return ApiProblem(
        503,
        "Checkout not configured",
        "checkout tokens need CHECKOUT_TOKEN_SECRET, which this server does not have; set it "
        "(a random value of at least 16 characters) and restart the API",
        kind="checkout-not-configured",
    )


def _anonymous() -> Caller:
    return Caller(CallerKind.ANONYMOUS, None)


def remember(caller: Caller) -> None:
    """Put the caller on ``flask.g`` and on every log line of this request."""
    g.caller = caller
    g.tenant = caller.tenant
    if caller.tenant is not None:
        structlog.contextvars.bind_contextvars(tenant=caller.tenant)


def current_caller() -> Caller:
    caller: Caller = g.get("caller") or _anonymous()
    return caller


def checkout_tokens() -> CheckoutTokens:
    """The app's token maker and checker (``create_app`` builds it from the settings)."""
    tokens: CheckoutTokens = current_app.extensions["checkout_tokens"]
    return tokens
