"""A recording proxy in front of the Stripe stand-in: it forwards every request, remembers what
it saw (time, method, path, headers, body), and can answer the next requests itself (429 with
``Retry-After``, 503, a 402 decline...) as Stripe would, or lose the answers to some requests
after Stripe acted on them (a connection reset on the way back)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass(frozen=True)
class Seen:
    at: float  # when the request arrived (epoch seconds), as Stripe counts it
    method: str
    path: str
    headers: dict[str, str]
    status: int
    body: bytes = b""
    replayed: bool = False  # answered from ``lost`` (Stripe's idempotent replay), not forwarded


def most_in_one_second(times: list[float]) -> int:
    """The most of ``times`` (epoch seconds) inside any window ``[t, t + 1)``: every sliding
    one-second window, not only the ones that start on a whole second."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


@dataclass
class Canned:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = '{"error": {"type": "api_error", "message": "injected"}}'


class RecordingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        self.canned: deque[Canned] = deque()
        # POSTs to exactly this path are forwarded, then the connection is closed without an
        # answer: Stripe acted, the caller never hears. Their answers are kept by
        # Idempotency-Key, and a later request with the key gets the kept answer, as Stripe
        # replays it (localstripe ignores the header and would act twice).
        self.lose_answers_to: str | None = None
        self.lost: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in HOP_BY_HOP | {"content-encoding"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                arrived = time.time()  # when Stripe would count it
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                key = self.headers.get("Idempotency-Key") if self.command == "POST" else None
                with proxy.lock:
                    canned = proxy.canned.popleft() if proxy.canned else None
                    kept = proxy.lost.get(key) if key and canned is None else None
                    lose = canned is None and key is not None and self.path == proxy.lose_answers_to
                replayed = kept is not None
                if kept is not None:
                    status, answer, content = kept
                elif canned is not None:
                    status = canned.status
                    answer = {"Content-Type": "application/json", **canned.headers}
                    content = canned.body.encode()
                else:
                    upstream = requests.request(
                        self.command,
                        proxy.upstream + self.path,
                        headers=headers,
                        data=body,
                        timeout=15,
                    )
                    status, answer, content = (
                        upstream.status_code,
                        dict(upstream.headers),
                        upstream.content,
                    )
                # Recorded before the caller has its answer: a test that asserts on what was
                # sent right after the call returns must find it here.
                with proxy.lock:
                    proxy.seen.append(
                        Seen(
                            arrived,
                            self.command,
                            self.path,
                            headers,
                            status,
                            body or b"",
                            replayed,
                        )
                    )
                    if lose and key is not None:
                        proxy.lost.setdefault(key, (status, answer, content))
                if lose:
                    self.close_connection = True  # no answer: the caller sees a reset
                    return
                self._answer(status, answer, content)

            do_GET = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer_next(self, *answers: Canned) -> None:
        with self.lock:
            self.canned.extend(answers)

    def requests_to(self, path_prefix: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path.startswith(path_prefix)]

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
