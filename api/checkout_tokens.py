"""Checkout tokens: what the customer's browser holds instead of an API key.

A token names one tenant and one payment and an expiry, signed with HMAC-SHA256 under
``CHECKOUT_TOKEN_SECRET``; it lets the browser confirm that payment and follow its timeline,
nothing else (``api.auth``). It is stateless: no table, valid on every API process that shares
the secret, for ``CHECKOUT_TOKEN_TTL_SECONDS``.

    ct1.<base64url(JSON {"t": tenant, "p": payment id, "e": expiry, unix seconds})>.<base64url(mac)>

The MAC covers ``ct1.`` and the payload, so neither the version nor any field can be changed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

TOKEN_PREFIX = "ct1."  # noqa: S105 (a format marker, not a secret)
# Domain separation: this key signs checkout tokens and nothing else.
_CONTEXT = b"payments checkout token v1\x00"


class TokenRefused(Exception):
    """The token is malformed, forged or expired (the message says which, never why in detail)."""


class TokensNotConfigured(Exception):
    """No ``CHECKOUT_TOKEN_SECRET``: tokens can be neither made nor checked."""


@dataclass(frozen=True)
class CheckoutGrant:
    tenant: str
    payment_id: UUID
    expires_at: int

    @property
    def expires_at_iso(self) -> str:
        return datetime.fromtimestamp(self.expires_at, UTC).isoformat()


@dataclass(frozen=True)
class IssuedToken:
    token: str
    grant: CheckoutGrant


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CheckoutTokens:
    def __init__(
        self, secret: str, ttl_seconds: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = secret.encode() if secret else b""
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    @property
    def configured(self) -> bool:
        return bool(self._key)

    def _mac(self, signed: str) -> bytes:
        if not self._key:
            raise TokensNotConfigured("CHECKOUT_TOKEN_SECRET is not set")
        return hmac.new(self._key, _CONTEXT + signed.encode(), hashlib.sha256).digest()

    def mint(self, tenant: str, payment_id: UUID) -> IssuedToken:
        grant = CheckoutGrant(tenant, payment_id, int(self._clock()) + self.ttl_seconds)
        payload = json.dumps(
            {"t": grant.tenant, "p": str(grant.payment_id), "e": grant.expires_at},
            separators=(",", ":"),
        )
        signed = TOKEN_PREFIX + _b64(payload.encode())
        return IssuedToken(f"{signed}.{_b64(self._mac(signed))}", grant)

    def verify(self, token: str) -> CheckoutGrant:
        """The grant of a genuine, unexpired token; ``TokenRefused`` otherwise."""
        if not token.startswith(TOKEN_PREFIX):
            raise TokenRefused("not a checkout token")
        signed, dot, mac = token.rpartition(".")
        if not dot or not signed.startswith(TOKEN_PREFIX):
            raise TokenRefused("the checkout token is malformed")
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            raise TokenRefused("the checkout token is malformed") from None
        if not self._key:
            raise TokensNotConfigured("CHECKOUT_TOKEN_SECRET is not set")
        if not hmac.compare_digest(given, self._mac(signed)):
            raise TokenRefused("the checkout token is not valid (bad signature)")
        try:
            data = json.loads(_unb64(signed[len(TOKEN_PREFIX) :]))
            grant = CheckoutGrant(str(data["t"]), UUID(str(data["p"])), int(data["e"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise TokenRefused("the checkout token is malformed") from None
        if grant.expires_at <= self._clock():
            raise TokenRefused(
                f"the checkout token expired at {grant.expires_at_iso}; ask the shop for a new "
                "checkout link"
            )
        return grant
