"""Payment intake: ``POST /payments`` per second through gunicorn (Stripe gateway replaced by the
in-process fake) vs raw psycopg inserts of the same rows, same concurrency."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import requests

from bench.report import Figure, format_rate, say
from bench.stack import BENCH_DIR, ROOT, Context, free_port, wait_for, wait_worker_caught_up

API_WORKERS = 2  # as `make up` runs the API
CONCURRENCY = 8
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
    "DELETE FROM payments WHERE idempotency_key LIKE %(prefix)s",
]


def _in_threads(total: int, work: Callable[[int], Callable[[int], None]]) -> tuple[float, int]:
    """Run ``total`` calls over CONCURRENCY threads (``work(thread)`` builds each thread's
    call); seconds elapsed and the number of failures."""
    counter = iter(range(total))
    lock = threading.Lock()
    failures = [0]

    def worker(thread: int) -> None:
        call = work(thread)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                call(i)
            except Exception:
                with lock:
                    failures[0] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(worker, range(CONCURRENCY)))
    return time.perf_counter() - started, failures[0]


def cleanup(ctx: Context, prefix: str) -> int:
    with psycopg.connect(ctx.settings.database_url, autocommit=True, connect_timeout=5) as conn:
        deleted = 0
        for sql in CLEANUP:
            deleted = conn.execute(sql, {"prefix": prefix + "%"}).rowcount
        return deleted


def run(ctx: Context) -> list[Figure]:
    total = 10_000 if ctx.full else 1_500
    prefix = f"{ctx.run}-intake-"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
    log_path = BENCH_DIR / ctx.run / "intake-api.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say(f"intake: starting gunicorn ({API_WORKERS} workers, fake Stripe) on :{port}")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(API_WORKERS),
                "--timeout",
                "30",
                "bench.intake_app:create_app()",
            ],
            cwd=ROOT,
            env={**ctx.env(), "PROMETHEUS_MULTIPROC_DIR": metrics_dir},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            "the benchmark API's /healthz",
            lambda: (
                proc.poll() is None
                and requests.get(f"{base}/healthz", timeout=2).status_code == 200
            ),
            timeout=60,
        )

        def api_work(thread: int) -> Callable[[int], None]:
            session = requests.Session()

            def post(i: int) -> None:
                resp = session.post(
                    f"{base}/payments",
                    json=BODY,
                    headers={"Idempotency-Key": f"{prefix}api-{i}"},
                    timeout=30,
                )
                if resp.status_code != 201:
                    raise RuntimeError(f"POST /payments answered {resp.status_code}")

            return post

        def warm(thread: int) -> Callable[[int], None]:
            session = requests.Session()
            return lambda i: session.post(
                f"{base}/payments",
                json=BODY,
                headers={"Idempotency-Key": f"{prefix}warm-{i}"},
                timeout=30,
            ).raise_for_status()

        _in_threads(100, warm)
        say(f"intake: {total:,} POST /payments over {CONCURRENCY} client threads")
        api_seconds, api_failures = _in_threads(total, api_work)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(metrics_dir, ignore_errors=True)

    request_hash = hashlib.sha256(json.dumps(BODY, sort_keys=True).encode()).hexdigest()

    def sql_work(thread: int) -> Callable[[int], None]:
        conn = psycopg.connect(ctx.settings.database_url, autocommit=True, connect_timeout=5)

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
    say(f"intake: baseline, {total:,} raw INSERTs over {CONCURRENCY} connections")
    sql_seconds, sql_failures = _in_threads(total, sql_work)
    deleted = cleanup(ctx, prefix)
    say(f"intake: deleted {deleted:,} benchmark rows ({prefix}*)")

    api_rate = (total - api_failures) / api_seconds
    sql_rate = (total - sql_failures) / sql_seconds
    ratio = api_rate / sql_rate
    return [
        Figure(
            "payment intake",
            format_rate(api_rate),
            format_rate(sql_rate),
            ratio,
            "≥ 0.5",
            ratio >= 0.5,
            f"{total:,} requests, {CONCURRENCY} client threads, gunicorn {API_WORKERS} workers, "
            f"Stripe = in-process FakeStripeGateway; baseline: one autocommit INSERT per row "
            f"(same columns); failures {api_failures}/{sql_failures}",
            {
                "requests": total,
                "api_seconds": api_seconds,
                "sql_seconds": sql_seconds,
                "api_failures": api_failures,
                "sql_failures": sql_failures,
            },
        )
    ]
