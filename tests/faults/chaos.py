"""Fault injection for the fault suite: a proxy in front of the Stripe stand-in that can answer
429 or 503 on demand, and the faults that kill and restart parts of the running stack."""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from tests.stack_support import ROOT, stack

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class StripeProxy:
    """Forwards every request to ``upstream``; ``mode`` makes it answer 429 (rate limited) or
    503 (Stripe having a bad minute) as Stripe itself would, or drop the connection
    (``reset``)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "pass"
        self.answers: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                mode = proxy.mode
                proxy.answers[mode] += 1
                if mode == "reset":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode in {"429", "503"}:
                    kind = "rate_limit" if mode == "429" else "api_error"
                    payload = f'{{"error": {{"type": "{kind}", "message": "injected"}}}}'.encode()
                    self.send_response(int(mode))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                try:
                    upstream = requests.request(
                        self.command,
                        proxy.upstream + self.path,
                        headers=headers,
                        data=body,
                        timeout=15,
                    )
                except requests.RequestException:
                    self.send_error(502, "upstream unreachable")
                    return
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in HOP_BY_HOP | {"content-encoding"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            do_GET = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StripeProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _stack_dir() -> Path:
    return (ROOT / os.environ.get("STACK_DIR", ".stack")).resolve()


def api_worker_pids() -> list[int]:
    """The gunicorn worker processes (children of the API's master)."""
    master = int((_stack_dir() / "run" / "api.pid").read_text().split()[0])
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


@dataclass
class Faults:
    """Kills and restarts parts of the stack at random moments, one fault at a time, and
    records what it did. ``app_env`` is the environment the API and worker restart with."""

    proxy: StripeProxy
    app_env: dict[str, str]
    rng: random.Random
    log: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    planned: int = 0

    def _note(self, what: str) -> None:
        self.counts[what] += 1
        self.log.append(f"{time.strftime('%H:%M:%S')} {what}")

    def _kill_and_restart(self, name: str, down_for: float) -> None:
        stack("kill", name)
        self._note(f"SIGKILL {name}")
        self.stop.wait(down_for)
        env = self.app_env if name in {"api", "worker"} else None
        stack("start", name, env=env)

    def kill_api_worker(self) -> None:
        pid = self.rng.choice(api_worker_pids())
        os.kill(pid, signal.SIGKILL)  # the gunicorn master starts a new one
        self._note("SIGKILL an API worker")

    def stripe_frozen(self) -> None:
        """SIGSTOP the stand-in: calls time out. (A restart would lose localstripe's state,
        which real Stripe never does.)"""
        pid = int((_stack_dir() / "run" / "localstripe.pid").read_text().split()[0])
        os.kill(pid, signal.SIGSTOP)
        self._note("Stripe stand-in frozen (timeouts)")
        try:
            self.stop.wait(self.rng.uniform(3, 6))
        finally:
            os.kill(pid, signal.SIGCONT)

    def stripe_answers(self, mode: str) -> None:
        self.proxy.mode = mode
        self._note(f"Stripe answers {mode}")
        self.stop.wait(self.rng.uniform(3, 6))
        self.proxy.mode = "pass"

    def restart_connect(self) -> None:
        """A clean restart: Debezium resumes from its last committed offset and replays."""
        stack("stop", "connect")
        self._note("Connect restarted")
        stack("start", "connect")

    def plan(self) -> list[Callable[[], None]]:
        down = self.rng.uniform
        steps: list[Callable[[], None]] = [
            lambda: self._kill_and_restart("worker", down(1, 4)),
            lambda: self._kill_and_restart("connect", down(2, 5)),
            lambda: self._kill_and_restart("kafka", down(2, 5)),
            lambda: self._kill_and_restart(self.rng.choice(["replica1", "replica2"]), down(1, 4)),
            self.kill_api_worker,
            lambda: self._kill_and_restart("api", down(1, 3)),
            self.stripe_frozen,
            lambda: self.stripe_answers("reset"),
            lambda: self.stripe_answers("429"),
            lambda: self.stripe_answers("503"),
            self.restart_connect,
        ]
        self.rng.shuffle(steps)
        return steps

    def run(self, pause: tuple[float, float]) -> None:
        """Inject every fault once, in random order, with random pauses between them."""
        steps = self.plan()
        self.planned = len(steps)
        for step in steps:
            if self.stop.wait(self.rng.uniform(*pause)):
                return
            step()
