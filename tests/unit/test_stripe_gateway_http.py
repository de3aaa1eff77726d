"""The gateway's HTTP, against a small Stripe stand-in on a local port (no stack needed): a proxy
in the environment when the gateway is made carries every call, ``NO_PROXY`` is honoured,
Stripe's JSON answers and error answers come back as our intents and our errors, a Stripe that
does not answer fails the call within its timeout, and calls reuse their connections."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from payments.adapters.rate_limit import RateLimiter
from payments.adapters.stripe_gateway import StripeGateway
from payments.domain.errors import ProviderDeclined, ProviderObjectMissing, RetryableError
from payments.settings import Settings

INTENT = {
    "id": "pi_1",
    "object": "payment_intent",
    "status": "canceled",
    "amount": 1250,
    "currency": "eur",
    "metadata": {"payment_id": "0b6f7a52-5c1e-4f8e-9a51-0e4f5d3a2c10"},
    "cancellation_reason": "abandoned",
    "created": 1_764_000_000,
}


def error(kind: str, code: str, param: str, message: str) -> dict[str, Any]:
    """Stripe's error body."""
    return {"error": {"type": kind, "code": code, "param": param, "message": message}}


class StandIn(ThreadingHTTPServer):
    """Answers as Stripe (or as a forward proxy in front of it): ``seen`` keeps each request
    line's target (an absolute URL when it came as a proxy request) and its headers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.connections = 0
        self.hold = threading.Event()  # set: the handler may stop holding a slow answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as Stripe
    wbufsize = -1  # the head and the body in one write (no wait on a delayed ACK)

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        status, body = self._route()
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[int, dict[str, Any]]:
        if "/v1/payment_intents/pi_slow" in self.path:
            self.server.hold.wait(10)  # longer than the gateway's timeout
        if "/v1/payment_intents/pi_missing" in self.path:
            message = "No such payment_intent: 'pi_missing'"
            return 404, error("invalid_request_error", "resource_missing", "intent", message)
        if "/v1/payment_intents/pi_declined/confirm" in self.path:
            message = "Your card has insufficient funds."
            body = error("card_error", "card_declined", "payment_method", message)
            body["error"]["decline_code"] = "insufficient_funds"
            return 402, body
        if "/v1/payment_intents/pi_declined" in self.path:
            return 200, {**INTENT, "id": "pi_declined", "status": "requires_confirmation"}
        return 200, INTENT

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.hold.set()
    server.shutdown()
    server.server_close()


def gateway(api_base: str, *, timeout: float = 10.0, retries: int = 0) -> StripeGateway:
    settings = Settings(
        stripe_secret_key="sk_test_unit",
        stripe_api_base=api_base,
        stripe_timeout_seconds=timeout,
        stripe_max_retries=retries,
    )
    return StripeGateway(settings, RateLimiter(1000, burst=1000))


def _clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_a_proxy_in_the_environment_carries_every_call(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripe's address does not resolve here: only the proxy can reach it. The environment is
    read when the gateway is made, so a proxy removed afterwards is still the one used."""
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", standin.url)
    gw = gateway("http://stripe.invalid")
    monkeypatch.delenv("HTTP_PROXY")

    intent = gw.retrieve_intent("pi_1")
    canceled = gw.cancel_intent("pi_1", payment_id=uuid.uuid4(), reason="abandoned", decision=1)

    assert (intent.id, intent.amount, intent.currency) == ("pi_1", 1250, "eur")
    assert intent.payment_id == INTENT["metadata"]["payment_id"]  # type: ignore[index]
    assert canceled.cancellation_reason == "abandoned"
    targets = [(method, target) for method, target, _ in standin.seen]
    assert targets == [
        ("GET", "http://stripe.invalid/v1/payment_intents/pi_1"),
        ("POST", "http://stripe.invalid/v1/payment_intents/pi_1/cancel"),
    ]
    assert all(h["Authorization"] == "Bearer sk_test_unit" for _, _, h in standin.seen)
    assert "Idempotency-Key" in standin.seen[1][2]


def test_no_proxy_sends_the_calls_straight_to_stripe(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    intent = gateway(standin.url).retrieve_intent("pi_1")

    assert intent.id == "pi_1"
    assert [target for _, target, _ in standin.seen] == ["/v1/payment_intents/pi_1"]


def test_stripe_error_answers_become_our_errors(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_proxies(monkeypatch)
    gw = gateway(standin.url)

    with pytest.raises(ProviderObjectMissing, match="No such payment_intent"):
        gw.retrieve_intent("pi_missing")
    with pytest.raises(ProviderDeclined) as declined:
        gw.confirm_intent("pi_declined", "pm_card_visa", idempotency_key="confirm-1")
    assert (declined.value.code, declined.value.field) == ("card_declined", "payment_method")


def test_a_stripe_that_does_not_answer_fails_the_call_within_its_timeouts(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripe takes the connection and the request, and says nothing: each attempt ends at the
    read timeout, the retry too, and the caller gets a retryable error, not a hang."""
    _clear_proxies(monkeypatch)
    gw = gateway(standin.url, timeout=0.5, retries=1)

    started = time.monotonic()
    with pytest.raises(RetryableError, match="unreachable"):
        gw.retrieve_intent("pi_slow")
    waited = time.monotonic() - started

    assert gw.calls == 2  # the attempt and its one retry, each sent
    assert len(standin.seen) == 2
    assert 1.0 <= waited < 5.0  # two read timeouts and a backoff, far from the stand-in's 10 s


def test_calls_reuse_their_connections(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection to Stripe is opened once and kept (a TLS handshake per call would cost more
    than the call): 10 calls in a row use one; 40 more from 4 threads open at most 4 more."""
    _clear_proxies(monkeypatch)
    gw = gateway(standin.url)

    def calls(_: int = 0) -> None:
        for _ in range(10):
            assert gw.retrieve_intent("pi_1").id == "pi_1"

    calls()
    assert standin.connections == 1
    threads = [threading.Thread(target=calls, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(standin.seen) == 50 and gw.calls == 50
    assert standin.connections <= 5
