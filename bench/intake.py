"""Payment intake: ``POST /payments`` per second through gunicorn, as ``make up`` runs it
(``api/pools.py`` and ``gunicorn.conf.py``: the intake and hooks pools, each in a session of its
own, threads, pool sizes), with the Stripe gateway replaced by
the in-process fake (``bench.intake_app``), measured three ways in one run:

* **zero latency** (the fake answers at once): the API's own cost, against raw psycopg INSERTs of
  the same rows over 8 connections (the baseline);
* **Stripe's latency** (the fake sleeps ``--stripe-latency-ms``, 250 by default, in each call, as
  a real call blocks its thread): the intake rate against the same API at zero latency;
* **webhooks while intake is saturated** (at Stripe's latency): signed
  ``payment_intent.succeeded`` events for payments made in the run, at a steady rate, each timed
  from send to answer (p50/p99);

plus the API's ``/metrics`` answer time, scraped with the operator login during both runs. At
Stripe's latency there are more clients than the intake pool has threads, so every thread that
may call Stripe is taken (``api/capacity.py``). The webhooks and scrapes go to the hooks pool, as
Stripe's endpoint and Prometheus do in the stack.
Clients are closed loops on keep-alive connections (``http.client``: cheap, so the client takes
little of the CPU the API needs). A 503 with ``Retry-After`` (intake shed while the API is
full) is retried with the same idempotency key after the advised pause, as a client would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import psycopg
import requests

from api.pools import HOOKS, INTAKE, command
from bench.report import Figure, format_rate, format_seconds, percentile, say
from bench.stack import BENCH_DIR, ROOT, Context, free_port, wait_for, wait_worker_caught_up

API_WORKERS = 2  # as `make up` runs the intake pool (its threads come from gunicorn.conf.py)
APP = "bench.intake_app:create_app()"
# Each worker's threads, as gunicorn.conf.py reads them.
API_THREADS = int(os.environ.get("API_THREADS", "64"))
SQL_CONCURRENCY = 8
# Closed-loop intake clients at zero latency: enough to keep both cores busy (more only queue).
INTAKE_CLIENTS = 64
# At Stripe's latency, more clients than the API has threads: intake is saturated, every
# Stripe slot of both processes taken and the rest of the clients shed (503) and retrying.
SATURATING_CLIENTS = API_WORKERS * API_THREADS * 5 // 4
WEBHOOKS_PER_SECOND = 20.0
BODY: dict[str, str | int] = {
    "amount_minor": 1999,
    "currency": "usd",
    "customer_email": "bench@example.com",
    "description": "benchmark",
}
RAW_INSERT = """
    INSERT INTO payments (id, idempotency_key, request_hash, amount_minor, currency,
                          customer_email, description, metadata, creation_claimed_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, '{}'::jsonb, now())"""
CLEANUP = [
    "DELETE FROM payment_events WHERE payment_id IN "
    "(SELECT id FROM payments WHERE idempotency_key LIKE %(prefix)s)",
    "DELETE FROM webhook_events WHERE payment_id IN "
    "(SELECT id FROM payments WHERE idempotency_key LIKE %(prefix)s)",
    "DELETE FROM payments WHERE idempotency_key LIKE %(prefix)s",
]


def cleanup(ctx: Context, prefix: str) -> int:
    with psycopg.connect(ctx.settings.database_url, autocommit=True, connect_timeout=5) as conn:
        deleted = 0
        for sql in CLEANUP:
            deleted = conn.execute(sql, {"prefix": prefix + "%"}).rowcount
        return deleted


def _in_threads(
    threads: int, work: Callable[[int], Callable[[int], None]], total: int | None, seconds: float
) -> tuple[float, int, int]:
    """Calls over ``threads`` closed loops (``work(thread)`` builds each thread's call), until
    ``total`` calls were made or ``seconds`` passed; (seconds elapsed, calls done, failures)."""
    counter = iter(range(total if total is not None else 10**12))
    lock = threading.Lock()
    done = [0, 0]
    errors: list[Exception] = []
    deadline = time.perf_counter() + seconds

    def loop(thread: int) -> None:
        call = work(thread)
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                call(i)
                ok, bad = 1, 0
            except Exception as exc:
                ok, bad = 0, 1
                errors.append(exc)
            with lock:
                done[0] += ok
                done[1] += bad

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, range(threads)))
    if errors and not done[0]:
        raise RuntimeError(f"all {done[1]:,} calls failed; the first: {errors[0]}")
    return time.perf_counter() - started, done[0], done[1]


class Client:
    """One keep-alive HTTP/1.1 connection (reconnects when the server closed it)."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Intake:
    """What the intake clients saw: payments made (for the webhooks) and sheds (503)."""

    made: list[tuple[str, str]] = field(default_factory=list)  # (payment id, intent id)
    shed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def work(self, port: int, prefix: str, api_key: str) -> Callable[[int], Callable[[int], None]]:
        body = json.dumps(BODY).encode()

        def per_thread(thread: int) -> Callable[[int], None]:
            client = Client(port)

            def post(i: int) -> None:
                headers = {
                    "Authorization": f"Bearer {api_key}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"{prefix}{i}",
                }
                while True:
                    status, rheaders, data = client.request("POST", "/payments", body, headers)
                    if status == 503 and "retry-after" in rheaders:
                        with self.lock:
                            self.shed += 1
                        time.sleep(min(1.0, float(rheaders["retry-after"])))
                        continue
                    if status != 201:
                        raise RuntimeError(f"POST /payments answered {status}: {data[:200]!r}")
                    doc = json.loads(data)
                    with self.lock:
                        self.made.append((doc["id"], doc["provider_payment_id"]))
                    return

            return post

        return per_thread


def sign(payload: bytes, secret: str) -> str:
    ts = int(time.time())
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def succeeded_event(payment_id: str, intent_id: str) -> bytes:
    return json.dumps(
        {
            "id": f"evt_bench_{uuid.uuid4().hex}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": intent_id,
                    "object": "payment_intent",
                    "status": "succeeded",
                    "amount": BODY["amount_minor"],
                    "currency": BODY["currency"],
                    "metadata": {"payment_id": payment_id},
                    "created": int(time.time()),
                }
            },
        }
    ).encode()


class Webhooks:
    """Signed ``payment_intent.succeeded`` events for ``targets`` (payments made earlier, as
    (payment id, intent id)), at a steady rate, each timed from send to answer (connecting
    included). Each goes on a new connection, as from Stripe's many senders: a kept one would
    stay with one of the API's processes, and time that process only."""

    def __init__(self, client: Client, targets: list[tuple[str, str]], secret: str) -> None:
        self.client = client
        self.targets = targets
        self.secret = secret
        self.times: list[float] = []
        self.failures = 0
        self.stop = threading.Event()

    def send(self, limit: int | None = None) -> None:
        """One event per target in turn, until ``limit`` were sent, the targets ran out or
        ``stop`` is set."""
        started = time.perf_counter()
        for sent, target in enumerate(self.targets[:limit]):
            time.sleep(max(0.0, started + sent / WEBHOOKS_PER_SECOND - time.perf_counter()))
            if self.stop.is_set():
                return
            payload = succeeded_event(*target)
            headers = {
                "Content-Type": "application/json",
                "Stripe-Signature": sign(payload, self.secret),
            }
            t = time.perf_counter()
            try:
                status, _, _ = self.client.request("POST", "/webhooks/stripe", payload, headers)
            except Exception:
                status = 0
            finally:
                self.client.close()
            if status == 200:
                self.times.append(time.perf_counter() - t)
            else:
                self.failures += 1


class BenchApi:
    """``bench.intake_app:create_app()`` as ``make up`` starts the API (``api/pools.py``): the
    intake pool (``API_WORKERS`` processes) and the hooks pool, one metrics directory for both.
    The intake is sent to ``port``, the webhooks and scrapes to ``hooks_port``."""

    def __init__(self, ctx: Context, latency_ms: float) -> None:
        self.ctx = ctx
        self.latency_ms = latency_ms
        self.port = free_port()
        self.hooks_port = free_port()
        self.metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
        self.log_path = BENCH_DIR / ctx.run / f"intake-api-{latency_ms:.0f}ms.log"
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> BenchApi:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **self.ctx.env(),
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            "BENCH_STRIPE_LATENCY_MS": str(self.latency_ms),
        }
        with self.log_path.open("ab") as log:
            for pool, port, workers in (
                (INTAKE, self.port, API_WORKERS),
                (HOOKS, self.hooks_port, None),
            ):
                argv = command(pool, f"127.0.0.1:{port}", workers=workers, app=APP)
                self.procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=ROOT,
                        env={**env, "API_POOL": pool.name},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        # A session of its own, as the stack starts each part: where the kernel
                        # groups the CPU by session (autogroup), each pool is a group.
                        start_new_session=True,
                    )
                )
        for port in (self.port, self.hooks_port):
            wait_for(f"the benchmark API's /healthz on {port}", self._healthy(port), timeout=60)
        return self

    def _healthy(self, port: int) -> Callable[[], bool]:
        def check() -> bool:
            return (
                all(proc.poll() is None for proc in self.procs)
                and requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            )

        return check

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def config(self) -> str:
        """The worker class gunicorn reports in its log."""
        text = self.log_path.read_text(errors="replace")
        kind = "sync"
        for line in text.splitlines():
            if "Using worker:" in line:
                kind = line.rsplit("Using worker:", 1)[1].strip()
        return kind


def timed_scrape(client: Client, headers: dict[str, str]) -> float:
    """Seconds one ``GET /metrics`` took, on a new connection (any of the API's processes may
    answer; a kept connection would time one of them only)."""
    started = time.perf_counter()
    try:
        status, _, _ = client.request("GET", "/metrics", headers=headers)
    finally:
        client.close()
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return time.perf_counter() - started


@contextmanager
def sampling(interval: float, sample: Callable[[], float]) -> Iterator[list[float]]:
    """Call ``sample`` every ``interval`` seconds in a thread while the block runs."""
    found: list[float] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                found.append(sample())
            except Exception as exc:
                say(f"  (sample failed: {type(exc).__name__}: {exc})")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join(timeout=10)


@dataclass
class Heard:
    """What the probe process timed: webhook answers (seconds), failed webhooks, scrapes."""

    webhooks: list[float] = field(default_factory=list)
    failures: int = 0
    scrapes: list[float] = field(default_factory=list)


def _probe(
    port: int,
    targets: list[tuple[str, str]],
    secret: str,
    auth_header: dict[str, str] | None,
    limit: int | None,
    stop: Any,
    ready: Any,
    out: Any,
) -> None:
    """The probe process: signed webhooks for ``targets`` (``limit`` of them, or until
    ``stop``) and, when ``auth_header`` is given, a ``/metrics`` scrape every 0.25 s."""
    hooks = Webhooks(Client(port), targets, secret)
    scraper = Client(port)
    with (
        sampling(0.25, lambda: timed_scrape(scraper, auth_header))
        if auth_header is not None
        else nullcontext([])
    ) as scrapes:
        ready.set()
        if limit is None:
            threading.Thread(target=lambda: (stop.wait(), hooks.stop.set()), daemon=True).start()
        hooks.send(limit)
        if limit is None:
            stop.wait()
    out.put({"webhooks": hooks.times, "failures": hooks.failures, "scrapes": list(scrapes)})


@contextmanager
def probing(
    port: int,
    *,
    targets: list[tuple[str, str]] | None = None,
    secret: str = "",
    auth_header: dict[str, str] | None = None,
    limit: int | None = None,
) -> Iterator[Heard]:
    """Webhooks and scrapes timed from a process of their own while the block runs (or, with
    ``limit``, that many webhooks before it ends). In the load's process they would share its
    GIL with up to 160 client threads, and time those as much as the API."""
    mp = multiprocessing.get_context("spawn")
    stop, ready, out = mp.Event(), mp.Event(), mp.Queue()
    proc = mp.Process(
        target=_probe,
        args=(port, targets or [], secret, auth_header, limit, stop, ready, out),
        daemon=True,
    )
    proc.start()
    deadline = time.monotonic() + 60
    while not ready.wait(0.2):
        if not proc.is_alive() or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the probe process did not start (exit code {proc.exitcode})")
    heard = Heard()
    try:
        yield heard
    finally:
        stop.set()
        got = out.get(timeout=120)
        proc.join(timeout=30)
        heard.webhooks, heard.failures, heard.scrapes = (
            got["webhooks"],
            got["failures"],
            got["scrapes"],
        )


def _percentile(values: list[float], q: float) -> float:
    return percentile(values, q) if values else float("nan")


def run(ctx: Context) -> list[Figure]:
    total = 10_000 if ctx.full else (300 if ctx.smoke else 1_500)
    seconds = 60.0 if ctx.full else (5.0 if ctx.smoke else 15.0)
    clients = 8 if ctx.smoke else INTAKE_CLIENTS
    slow_clients = 8 if ctx.smoke else SATURATING_CLIENTS
    latency_ms = ctx.stripe_latency_ms
    prefix = f"{ctx.run}-intake-"
    settings = ctx.settings
    login = next(iter(settings.operator_logins.items()), None)
    auth_header = (
        {"Authorization": "Basic " + base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()}
        if login
        else {}
    )
    secret = (settings.webhook_secrets or [""])[0]
    # The payments are made as a client makes them: with an API key (of the first tenant).
    api_key = next(iter(settings.api_key_tenants), "")

    # 1. The API with a zero-latency Stripe, and its /metrics while it is loaded.
    say(f"intake: API at zero Stripe latency, {total:,} POST /payments, {clients} clients")
    with BenchApi(ctx, 0.0) as api:
        zero = Intake()
        _in_threads(clients, zero.work(api.port, f"{prefix}warm-", api_key), 100, 60)
        zero = Intake()
        with probing(api.hooks_port, auth_header=auth_header) as busy:
            api_seconds, api_done, api_failures = _in_threads(
                clients, zero.work(api.port, f"{prefix}zero-", api_key), total, 600
            )
        worker_kind = api.config()
    scrapes = busy.scrapes
    api_rate = api_done / api_seconds
    say(f"intake: {api_rate:,.0f}/s ({worker_kind}); /metrics scraped {len(scrapes)} times")

    # 2. The baseline: raw INSERTs of the same rows.
    request_hash = hashlib.sha256(json.dumps(BODY, sort_keys=True).encode()).hexdigest()

    def sql_work(thread: int) -> Callable[[int], None]:
        conn = psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5)

        def insert(i: int) -> None:
            conn.execute(
                RAW_INSERT,
                (
                    uuid.uuid4(),
                    f"{prefix}sql-{i}",
                    request_hash,
                    BODY["amount_minor"],
                    BODY["currency"],
                    BODY["customer_email"],
                    BODY["description"],
                ),
            )

        return insert

    wait_worker_caught_up(ctx)
    say(f"intake: baseline, {total:,} raw INSERTs over {SQL_CONCURRENCY} connections")
    sql_seconds, sql_done, sql_failures = _in_threads(SQL_CONCURRENCY, sql_work, total, 600)
    sql_rate = sql_done / sql_seconds

    # 3. The same API with Stripe's latency, saturated, with webhooks meanwhile.
    wait_worker_caught_up(ctx)
    say(
        f"intake: API at {latency_ms:.0f} ms per Stripe call, {slow_clients} clients for "
        f"{seconds:.0f}s"
    )
    with BenchApi(ctx, latency_ms) as api:
        # The payments the webhooks will settle, made first: the idle baseline's, then one
        # for every webhook of the run.
        made = Intake()
        idle_count = 20 if ctx.smoke else 100
        wanted = idle_count + int(WEBHOOKS_PER_SECOND * seconds * 1.2)
        _in_threads(clients, made.work(api.port, f"{prefix}slow-warm-", api_key), wanted, 120)
        # The webhooks' own cost first: the same API with nothing else to do (same run).
        with probing(
            api.hooks_port, targets=made.made[:idle_count], secret=secret, limit=idle_count
        ) as idle_hooks:
            pass
        slow = Intake()
        with probing(
            api.hooks_port, targets=made.made[idle_count:], secret=secret, auth_header=auth_header
        ) as hooks:
            slow_seconds, slow_done, slow_failures = _in_threads(
                slow_clients, slow.work(api.port, f"{prefix}slow-", api_key), None, seconds
            )
    slow_scrapes = hooks.scrapes
    slow_rate = slow_done / slow_seconds
    say(f"intake: {slow_rate:,.0f}/s at {latency_ms:.0f} ms; {len(hooks.webhooks)} webhooks timed")

    deleted = cleanup(ctx, prefix)
    say(f"intake: deleted {deleted:,} benchmark rows ({prefix}*)")

    ratio = api_rate / sql_rate
    slow_ratio = slow_rate / api_rate
    hook_p50, hook_p99 = _percentile(hooks.webhooks, 0.5), _percentile(hooks.webhooks, 0.99)
    idle_p99 = _percentile(idle_hooks.webhooks, 0.99)
    scrape_p50, scrape_p99 = _percentile(slow_scrapes, 0.5), _percentile(slow_scrapes, 0.99)
    busy_p99 = _percentile(scrapes, 0.99)
    api_desc = f"intake pool: gunicorn {API_WORKERS} workers ({worker_kind}, gunicorn.conf.py)"
    return [
        Figure(
            "payment intake (zero-latency Stripe)",
            format_rate(api_rate),
            format_rate(sql_rate),
            ratio,
            "≥ 0.25",
            ratio >= 0.25,
            f"{api_done:,} requests, {clients} keep-alive clients, {api_desc}, Stripe = "
            f"in-process FakeStripeGateway; baseline: one autocommit INSERT per row (same "
            f"columns) over {SQL_CONCURRENCY} connections; failures {api_failures}/"
            f"{sql_failures}, shed (503) {zero.shed}",
            {
                "requests": api_done,
                "api_rate": api_rate,
                "sql_rate": sql_rate,
                "api_failures": api_failures,
                "sql_failures": sql_failures,
                "shed": zero.shed,
                "clients": clients,
                "worker": worker_kind,
            },
        ),
        Figure(
            f"payment intake at {latency_ms:.0f} ms per Stripe call",
            format_rate(slow_rate),
            f"{format_rate(api_rate)} (zero latency)",
            slow_ratio,
            "≥ 0.5",
            slow_ratio >= 0.5,
            f"{slow_done:,} payments in {slow_seconds:.0f}s, {slow_clients} clients (API: "
            f"{API_WORKERS} x {API_THREADS} threads); the fake Stripe sleeps {latency_ms:.0f} ms "
            f"per call in the request's thread; failures {slow_failures}, shed (503 busy, "
            f"retried after Retry-After) {slow.shed}",
            {
                "rate": slow_rate,
                "zero_latency_rate": api_rate,
                "latency_ms": latency_ms,
                "payments": slow_done,
                "failures": slow_failures,
                "shed": slow.shed,
                "clients": slow_clients,
            },
        ),
        Figure(
            "webhooks while intake is saturated",
            f"p50 {format_seconds(hook_p50)}, p99 {format_seconds(hook_p99)}",
            f"p99 {format_seconds(idle_p99)} (API otherwise idle)",
            hook_p99 / idle_p99 if idle_p99 > 0 else None,
            "p99 < 100 ms",
            bool(hooks.webhooks) and hook_p99 < 0.1,
            f"{len(hooks.webhooks)} signed payment_intent.succeeded events at "
            f"{WEBHOOKS_PER_SECOND:.0f}/s to the hooks pool during the {latency_ms:.0f} ms intake "
            f"run (full webhook path: verify, inbox, guarded transition, audit); baseline: "
            f"{len(idle_hooks.webhooks)} before the intake started; failures "
            f"{hooks.failures}/{idle_hooks.failures}",
            {
                "webhooks": len(hooks.webhooks),
                "p50": hook_p50,
                "p99": hook_p99,
                "idle_p99": idle_p99,
                "failures": hooks.failures,
            },
        ),
        Figure(
            "API /metrics under intake load",
            f"p50 {format_seconds(scrape_p50)}, p99 {format_seconds(scrape_p99)}",
            "— (absolute)",
            None,
            "< 50 ms",
            bool(slow_scrapes) and scrape_p99 < 0.05,
            f"{len(slow_scrapes)} scrapes of the hooks pool (operator login, both pools' "
            f"metrics) every 0.25 s during the "
            f"{latency_ms:.0f} ms intake run; during the zero-latency run (every core busy): "
            f"p99 {format_seconds(busy_p99)} over {len(scrapes)} scrapes",
            {
                "scrapes": len(slow_scrapes),
                "p50": scrape_p50,
                "p99": scrape_p99,
                "cpu_bound_p99": busy_p99,
            },
        ),
    ]
