"""Helpers for the API's integration and end-to-end tests (real PostgreSQL, localstripe)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import requests
from flask import Flask
from flask.testing import FlaskClient
from psycopg_pool import ConnectionPool
from werkzeug.serving import BaseWSGIServer, make_server

from payments.adapters.postgres.pools import make_pool
from payments.adapters.postgres.repository import PostgresRepository
from payments.migrate import migrate
from payments.settings import Settings


def settings(**overrides: Any) -> Settings:
    """The stack's settings (environment / .env / local defaults), with overrides."""
    return Settings(**overrides)


def api_key(s: Settings, tenant: str | None = None) -> str:
    """An API key of ``API_KEYS`` (of ``tenant``, or of the first tenant by name)."""
    by_tenant = sorted((t, key) for key, t in s.api_key_tenants.items())
    for t, key in by_tenant:
        if tenant is None or t == tenant:
            return key
    raise AssertionError(
        f"no API key{f' of tenant {tenant!r}' if tenant else ''} in API_KEYS "
        f"(tenants: {[t for t, _ in by_tenant]}); `make up` writes them to .env"
    )


def tenants(s: Settings) -> list[str]:
    return sorted(set(s.api_key_tenants.values()))


def auth(s: Settings, tenant: str | None = None) -> dict[str, str]:
    """``Authorization`` header with an API key, or nothing when auth is disabled."""
    if s.api_auth_disabled:
        return {}
    return {"Authorization": f"Bearer {api_key(s, tenant)}"}


def keyed_client(app: Flask, s: Settings, tenant: str | None = None) -> FlaskClient:
    """A Flask test client that sends an API key (of ``tenant``) with every request."""
    client = app.test_client()
    for name, value in auth(s, tenant).items():
        client.environ_base[f"HTTP_{name.upper()}"] = value
    return client


def primary_pool(s: Settings) -> ConnectionPool:
    migrate(s.database_url)
    return make_pool(s.database_url, s, name="tests", wait=True, max_size=20)


def repository(s: Settings) -> tuple[PostgresRepository, ConnectionPool]:
    pool = primary_pool(s)
    return PostgresRepository(pool), pool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Run ``app`` on a threaded werkzeug server on a free port; yield its base URL."""
    port = free_port()
    server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True)
    server.socket.listen(256)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def sign(payload: bytes, secret: str, *, at: int | None = None) -> str:
    """A Stripe-Signature header for ``payload`` (HMAC-SHA256 over "<t>.<body>")."""
    ts = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def intent_event(
    event_id: str,
    kind: str,
    *,
    intent_id: str,
    payment_id: str,
    status: str,
    created: int | None = None,
    error: dict[str, str] | None = None,
    amount: int = 1000,
    currency: str = "usd",
) -> bytes:
    obj: dict[str, Any] = {
        "id": intent_id,
        "object": "payment_intent",
        "status": status,
        "amount": amount,
        "currency": currency,
        "metadata": {"payment_id": payment_id},
        "last_payment_error": error,
    }
    body = {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": created or int(time.time()),
        "data": {"object": obj},
    }
    return json.dumps(body).encode()


def declined_event(intent_id: str, payment_id: str, amount: int, currency: str = "usd") -> bytes:
    """A `payment_intent.payment_failed` for the intent (a declined card), as Stripe sends it:
    the stand-in cannot decline an intent and let it be paid again afterwards, Stripe can."""
    return intent_event(
        f"evt_{uuid4().hex}",
        "payment_intent.payment_failed",
        intent_id=intent_id,
        payment_id=payment_id,
        status="requires_payment_method",
        amount=amount,
        currency=currency,
        error={"code": "card_declined", "message": "Your card was declined."},
    )


class LocalStripe:
    """Just enough of localstripe's API for tests: intents by metadata, paying with a card."""

    def __init__(self, s: Settings) -> None:
        self.base = s.stripe_api_base.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (s.stripe_secret_key, "")

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        response = self.session.request(method, self.base + path, timeout=10, **kw)
        return response.status_code, response.json()

    def intents(self) -> Iterator[dict[str, Any]]:
        """Every PaymentIntent the stand-in holds, page by page."""
        params: dict[str, Any] = {"limit": 100}
        while True:
            status, page = self._call("GET", "/v1/payment_intents", params=params)
            assert status == 200, page
            yield from page["data"]
            if not page.get("has_more") or not page["data"]:
                return
            params["starting_after"] = page["data"][-1]["id"]

    def intents_for(self, payment_id: str) -> list[dict[str, Any]]:
        return [
            i for i in self.intents() if (i.get("metadata") or {}).get("payment_id") == payment_id
        ]

    def events(self, kind: str, *, created_after: int) -> list[dict[str, Any]]:
        """The stand-in's events of type ``kind`` created after ``created_after`` (one page)."""
        status, page = self._call(
            "GET",
            "/v1/events",
            params={"type": kind, "created[gt]": created_after, "limit": 100},
        )
        assert status == 200, page
        return list(page["data"])

    def pay(self, intent_id: str, card_number: str) -> tuple[int, dict[str, Any]]:
        """Attach a card to the intent and confirm it, as a browser would."""
        status, pm = self._call(
            "POST",
            "/v1/payment_methods",
            data={
                "type": "card",
                "card[number]": card_number,
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
        )
        assert status == 200, pm
        status, updated = self._call(
            "POST", f"/v1/payment_intents/{intent_id}", data={"payment_method": pm["id"]}
        )
        assert status == 200, updated
        return self._call("POST", f"/v1/payment_intents/{intent_id}/confirm")


def wait_for(
    predicate: Any,
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "the condition",
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll until ``predicate()`` is truthy; return it, or fail after ``timeout`` seconds,
    naming ``what`` and the last value. An exception of a ``tolerate`` type (a server still
    coming up) counts as a falsy answer and is shown as the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except tolerate as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


class StripeProxy:
    """A proxy in front of Stripe (or a stand-in) for tests: forwards every request to
    ``upstream``, or answers as Stripe does when it is in trouble: ``mode`` ``429`` (rate
    limited), ``503`` (a bad minute), ``reset`` (drops the connection), and ``fail_next``
    answers that many next requests 503; while ``gate`` is cleared, requests to be forwarded
    wait for it (Stripe taking its time). ``on_call(method, path, headers, outcome, start)``
    hears of every request once answered (``outcome``: ``ok``, the mode, ``refused`` or
    ``timeout`` when the upstream did not answer, a 5xx status, ``caller gone``)."""

    def __init__(
        self, upstream: str, on_call: Callable[[str, str, Any, str, float], None] | None = None
    ) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.upstream = upstream.rstrip("/")
        self.mode = "pass"
        self.fail_next = 0
        self.in_flight = 0  # requests forwarded (or waiting at the gate) and not answered yet
        self.gate = threading.Event()
        self.gate.set()
        self.on_call = on_call
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                start = time.monotonic()
                try:
                    outcome = proxy._answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    outcome = "caller gone"  # e.g. a client killed while it waited
                if proxy.on_call is not None:
                    proxy.on_call(self.command, self.path, self.headers, outcome, start)

            do_GET = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _answer(self, handler: Any) -> str:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        with self._lock:
            mode = self.mode
            if self.fail_next > 0:
                self.fail_next -= 1
                mode = "503"
        if mode == "reset":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return "reset"
        if mode in {"429", "503"}:
            kind = "rate_limit_error" if mode == "429" else "api_error"
            payload = json.dumps({"error": {"type": kind, "message": "injected"}}).encode()
            handler.send_response(int(mode))
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return mode
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        with self._lock:
            self.in_flight += 1
        try:
            self.gate.wait(timeout=60)
            upstream = requests.request(
                handler.command,
                self.upstream + handler.path,
                headers=headers,
                data=body,
                timeout=30,
            )
        except requests.ConnectionError:
            handler.send_error(502, "Stripe unreachable")
            return "refused"
        except requests.Timeout:
            handler.send_error(504, "Stripe timed out")
            return "timeout"
        finally:
            with self._lock:
                self.in_flight -= 1
        handler.send_response(upstream.status_code)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP | {"content-encoding"}:
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(upstream.content)))
        handler.end_headers()
        handler.wfile.write(upstream.content)
        return "ok" if upstream.status_code < 500 else str(upstream.status_code)

    def __enter__(self) -> StripeProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def sample_payment(**overrides: Any) -> Any:
    """A pending ``Payment`` (1999 EUR, fresh ids) for gateway tests, with ``overrides``."""
    from datetime import UTC, datetime
    from uuid import uuid4

    from payments.domain.money import Money
    from payments.domain.payment import Payment
    from payments.domain.status import Status

    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "id": uuid4(),
        "idempotency_key": f"test-{uuid4()}",
        "request_hash": "h",
        "money": Money(1999, "eur"),
        "status": Status.PENDING,
        "version": 1,
        "created_at": now,
        "updated_at": now,
        **overrides,
    }
    return Payment(**fields)


def operator_auth(s: Settings) -> tuple[str, str] | None:
    """Basic-auth credentials for the operators' views (/ops, the worker's /stats/, /pending/)
    when ``OPERATOR_CREDENTIALS`` is set, else None."""
    logins = s.operator_logins
    if not logins:
        return None
    user = sorted(logins)[0]
    return user, logins[user]
