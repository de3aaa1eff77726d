"""Contract: every write to Stripe carries an idempotency key derived from our own ids, the same
key on every retry, so that a retried call can never make a second intent or charge.

The gateway talks to stripe-mock through a recording proxy that can fail a request once (503:
stripe-python retries it), and the test reads the ``Idempotency-Key`` headers that went out.
Keys Stripe-python makes up itself (a random UUID per call) do not pass: they differ between two
calls for the same payment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from uuid import uuid4

import pytest
import requests

from payments.adapters.stripe_gateway import StripeGateway
from payments.domain.money import Money
from payments.domain.payment import Payment
from payments.domain.status import Status
from payments.settings import Settings

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Recorder:
    """What went out: (method, path, Idempotency-Key) per HTTP attempt."""

    upstream: str
    sent: list[tuple[str, str, str | None]] = field(default_factory=list)
    fail_next: int = 0  # answer this many next requests 503 instead of forwarding

    def writes(self, path_start: str) -> list[str | None]:
        return [
            key
            for method, path, key in self.sent
            if method == "POST" and path.startswith(path_start)
        ]


@pytest.fixture
def recorder(stripe_mock: str) -> Iterator[tuple[Recorder, str]]:
    rec = Recorder(stripe_mock)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            rec.sent.append((self.command, self.path, self.headers.get("Idempotency-Key")))
            if rec.fail_next > 0:
                rec.fail_next -= 1
                payload = b'{"error": {"type": "api_error", "message": "try again"}}'
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            up = requests.request(
                self.command, rec.upstream + self.path, headers=headers, data=body, timeout=10
            )
            self.send_response(up.status_code)
            for k, v in up.headers.items():
                if k.lower() not in HOP_BY_HOP | {"content-encoding"}:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(up.content)))
            self.end_headers()
            self.wfile.write(up.content)

        do_GET = do_POST = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def gateway_via(base: str) -> StripeGateway:
    return StripeGateway(
        Settings(stripe_api_base=base, stripe_secret_key="sk_test_123", stripe_max_retries=2)
    )


def payment() -> Payment:
    now = datetime.now(UTC)
    return Payment(
        id=uuid4(),
        idempotency_key=f"client-key-{uuid4()}",
        request_hash="h",
        money=Money(1999, "eur"),
        status=Status.PENDING,
        version=1,
        created_at=now,
        updated_at=now,
    )


def test_creating_an_intent_sends_a_key_made_of_the_payment_id(
    recorder: tuple[Recorder, str],
) -> None:
    rec, base = recorder
    p = payment()
    gateway_via(base).create_intent(p)
    gateway_via(base).create_intent(p)  # the worker finishing the same creation later
    assert rec.writes("/v1/payment_intents") == [f"pi-create-{p.id}"] * 2


def test_a_retried_create_sends_the_same_key(recorder: tuple[Recorder, str]) -> None:
    rec, base = recorder
    p = payment()
    rec.fail_next = 1
    gateway_via(base).create_intent(p)
    keys = rec.writes("/v1/payment_intents")
    assert len(keys) == 2, rec.sent  # the 503, then the retry
    assert keys[0] == keys[1]
    assert keys[0] == f"pi-create-{p.id}"


def test_confirming_sends_keys_derived_from_the_callers_key_on_every_attempt(
    recorder: tuple[Recorder, str],
) -> None:
    rec, base = recorder
    intent = gateway_via(base).create_intent(payment())
    own = f"confirm-{uuid4()}"
    rec.sent.clear()
    rec.fail_next = 1
    gateway_via(base).confirm_intent(intent.id, "pm_card_visa", idempotency_key=own)
    gateway_via(base).confirm_intent(intent.id, "pm_card_visa", idempotency_key=own)
    keys = rec.writes(f"/v1/payment_intents/{intent.id}")
    assert len(keys) == 5, rec.sent  # (503 + retry + confirm) + (attach + confirm)
    assert all(k and own in k for k in keys), keys
    first, second = keys[1:3], keys[3:5]
    assert keys[0] == keys[1]  # the retry of the failed attempt: same key
    assert first == second  # the same confirmation again: the same keys, so Stripe replays
