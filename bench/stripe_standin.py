"""A Stripe stand-in for the worker benchmark: the few endpoints the reconciler calls, over HTTP
(so the worker's real ``StripeGateway`` and rate budget are exercised), for the synthetic
payments of ``bench.envelopes``, with a fixed latency per call.

Intent ids carry what the stand-in needs to answer without a table per intent:
``pi_bench_<payment id hex>_<created epoch>``. Answers: ``GET /v1/events`` (none),
``GET /v1/payment_intents`` (listed by ``created[gte]``/``created[lt]``, 100 a page, from the
registered population), ``GET /v1/payment_intents/<id>`` and
``POST /v1/payment_intents/<id>/cancel`` (every intent is open until canceled).
"""

from __future__ import annotations

import bisect
import json
import threading
import time
import uuid
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.stack import free_port


def intent_id(payment_id: str, created: int) -> str:
    return f"pi_bench_{uuid.UUID(payment_id).hex}_{created}"


def _parse(intent: str) -> tuple[str, int] | None:
    parts = intent.split("_")
    if len(parts) != 4 or parts[:2] != ["pi", "bench"]:
        return None
    return str(uuid.UUID(parts[2])), int(parts[3])


class StripeStandIn:
    def __init__(self, latency_seconds: float = 0.030) -> None:
        self.latency = latency_seconds
        self.port = free_port()
        self._created = array("q")
        self._ids: list[bytes] = []
        self._sorted = True
        self._lock = threading.Lock()
        self.canceled: set[str] = set()
        self.calls = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def register(self, payment_id: str, created: int) -> str:
        """Record an intent of the population; its id."""
        self._created.append(created)
        self._ids.append(uuid.UUID(payment_id).bytes)
        self._sorted = False
        return intent_id(payment_id, created)

    def _sort(self) -> None:
        with self._lock:
            if self._sorted:
                return
            order = sorted(range(len(self._ids)), key=lambda i: (self._created[i], self._ids[i]))
            self._created = array("q", (self._created[i] for i in order))
            self._ids = [self._ids[i] for i in order]
            self._sorted = True

    def intent(self, ident: str, *, canceled: bool = False) -> dict[str, Any] | None:
        parsed = _parse(ident)
        if parsed is None:
            return None
        payment_id, created = parsed
        done = canceled or ident in self.canceled
        return {
            "id": ident,
            "object": "payment_intent",
            "status": "canceled" if done else "requires_payment_method",
            "amount": 1999,
            "currency": "usd",
            "metadata": {"payment_id": payment_id},
            "created": created,
            "client_secret": None,
            "last_payment_error": None,
            "cancellation_reason": "abandoned" if done else None,
        }

    def listing(self, query: dict[str, list[str]]) -> dict[str, Any]:
        self._sort()
        gte = int(query.get("created[gte]", ["0"])[0])
        lt = int(query.get("created[lt]", [str(2**62)])[0])
        limit = int(query.get("limit", ["10"])[0])
        low = bisect.bisect_left(self._created, gte)
        high = bisect.bisect_left(self._created, lt)
        after = query.get("starting_after", [None])[0]
        if after:
            parsed = _parse(after)
            if parsed is not None:
                key = (parsed[1], uuid.UUID(parsed[0]).bytes)
                i = bisect.bisect_left(self._created, key[0], low, high)
                while i < high and (self._created[i], self._ids[i]) <= key:
                    i += 1
                low = i
        data = []
        for i in range(low, min(high, low + limit)):
            ident = intent_id(str(uuid.UUID(bytes=self._ids[i])), self._created[i])
            data.append(self.intent(ident))
        return {
            "object": "list",
            "url": "/v1/payment_intents",
            "has_more": low + limit < high,
            "data": data,
        }

    def start(self) -> StripeStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The head and the body in one write: written apart, the body waited for the
            # client's delayed ACK (about 40 ms on Linux) on top of the latency it stands for.
            wbufsize = -1

            def log_message(self, *args: Any) -> None:
                return

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self, method: str) -> None:
                with standin._lock:
                    standin.calls += 1
                time.sleep(standin.latency)
                split = urlsplit(self.path)
                query = parse_qs(split.query)
                path = split.path.rstrip("/")
                if method == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    self.rfile.read(length)
                found: dict[str, Any] | None = None
                if method == "GET" and path == "/v1/events":
                    found = {"object": "list", "url": "/v1/events", "has_more": False, "data": []}
                elif method == "GET" and path == "/v1/payment_intents":
                    found = standin.listing(query)
                elif path.startswith("/v1/payment_intents/"):
                    rest = path[len("/v1/payment_intents/") :].split("/")
                    if method == "GET" and len(rest) == 1:
                        found = standin.intent(rest[0])
                    elif method == "POST" and len(rest) == 2 and rest[1] == "cancel":
                        found = standin.intent(rest[0], canceled=True)
                        if found is not None:
                            with standin._lock:
                                standin.canceled.add(rest[0])
                if found is None:
                    error = {"type": "invalid_request_error", "code": "resource_missing"}
                    self._answer(404, {"error": {**error, "message": f"no {self.path}"}})
                else:
                    self._answer(200, found)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
