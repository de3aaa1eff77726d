"""Issue 5 against the real stack: the Faust worker's pending table, reconciliation with
localstripe, payment-status-update events, a SIGKILLed worker, two workers, the DLQ."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import stripe
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from payments.settings import Settings
from tests.stack_support import ROOT, CdcTail, insert_payment, stack

pytestmark = pytest.mark.integration

API = "http://127.0.0.1:8000"
WORKER = "http://127.0.0.1:6066"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except requests.RequestException as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def pending_ids(url: str = WORKER) -> set[str]:
    return set(requests.get(f"{url}/pending/?limit=0&ids=1", timeout=10).json()["payment_ids"])


def create_payment(amount_minor: int = 2500) -> dict[str, Any]:
    resp = requests.post(
        f"{API}/payments",
        json={"amount_minor": amount_minor, "currency": "usd"},
        headers={"Idempotency-Key": f"worker-test-{uuid.uuid4()}"},
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


@pytest.fixture(scope="module")
def stripe_client(settings: Settings) -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.stripe_secret_key, base_addresses={"api": settings.stripe_api_base}
    )


@contextmanager
def webhooks_lost(settings: Settings) -> Iterator[None]:
    """Point localstripe's webhook at a closed port: Stripe's events never reach the API."""
    base = settings.stripe_api_base
    config = f"{base}/_config/webhooks/local"
    secret = settings.stripe_webhook_secret
    requests.post(config, data={"url": "http://127.0.0.1:9/lost", "secret": secret}, timeout=10)
    try:
        yield
    finally:
        requests.post(config, data={"url": f"{API}/webhooks/stripe", "secret": secret}, timeout=10)


def pay_on_stripe(client: stripe.StripeClient, intent_id: str) -> None:
    method = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"},
        }
    )
    client.v1.payment_intents.update(intent_id, params={"payment_method": method.id})
    client.v1.payment_intents.confirm(intent_id)


def db_status(settings: Settings, payment_id: str) -> tuple[str, int]:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT status::text, version FROM payments WHERE id = %s", (payment_id,)
        ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def audit_sources(settings: Settings, payment_id: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(settings.database_url) as conn:
        return [
            (str(a), str(b), str(c))
            for a, b, c in conn.execute(
                "SELECT coalesce(from_status::text, ''), to_status::text, source::text "
                "FROM payment_events WHERE payment_id = %s ORDER BY id",
                (payment_id,),
            )
        ]


@pytest.fixture
def status_tail(settings: Settings) -> Iterator[CdcTail]:
    tail = CdcTail(settings, settings.status_topic)
    yield tail
    tail.close()


def test_a_lost_webhook_is_caught_by_reconciliation_and_emitted_once(
    settings: Settings, stripe_client: stripe.StripeClient, status_tail: CdcTail
) -> None:
    payment = create_payment()
    pid = payment["id"]
    wait_for(f"payment {pid} in the worker's pending table", lambda: pid in pending_ids())

    with webhooks_lost(settings):
        pay_on_stripe(stripe_client, payment["provider_payment_id"])
        time.sleep(1)
        assert db_status(settings, pid)[0] == "pending", "no webhook should have reached the API"
        answer = requests.post(f"{WORKER}/reconcile/", timeout=120).json()

    assert pid in answer["owned_ids"]
    status, version = db_status(settings, pid)
    assert status == "succeeded"
    assert audit_sources(settings, pid)[-1] == ("pending", "succeeded", "reconciler")

    events = status_tail.events_for(pid, timeout=30)
    assert [e["event_id"] for e in events] == [f"{pid}:{version}"]
    event = events[0]
    assert (event["status"], event["previous_status"]) == ("succeeded", "pending")
    assert event["source"] == "reconciler"
    assert event["amount_minor"] == 2500 and event["currency"] == "usd"
    assert event["provider_payment_id"] == payment["provider_payment_id"]
    # The payment left the table, and nothing more is emitted for it.
    wait_for("the payment to leave the pending table", lambda: pid not in pending_ids())
    assert len(status_tail.events_for(pid, timeout=5, at_least=2)) == 1


def test_a_malformed_change_goes_to_the_dlq_and_the_partition_keeps_moving(
    settings: Settings, status_tail: CdcTail
) -> None:
    dlq = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    # The worker declares the DLQ at start, before any record needs it.
    partitions = wait_for("the DLQ topic", lambda: dlq.partitions_for_topic(settings.dlq_topic))
    dlq_parts = [TopicPartition(settings.dlq_topic, p) for p in sorted(partitions)]
    dlq.assign(dlq_parts)
    dlq.seek_to_end()
    for tp in dlq_parts:
        dlq.position(tp)

    cdc = CdcTail(settings)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        pid = insert_payment(conn)
        partition = cdc.collect([(str(pid), "c")], timeout=30)[(str(pid), "c")]["_partition"]
        cdc.close()
        key = json.dumps({"id": str(pid)}).encode()
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        producer.send(
            settings.cdc_payments_topic, key=key, value=b"{not json", partition=partition
        ).get(timeout=30)
        producer.close()
        # The next change on the same partition is still processed.
        conn.execute(
            "UPDATE payments SET status = 'canceled', version = version + 1 WHERE id = %s", (pid,)
        )

    events = status_tail.events_for(str(pid), timeout=60)
    assert [e["status"] for e in events] == ["canceled"]

    dead: list[Any] = []
    deadline = time.monotonic() + 30
    while not dead and time.monotonic() < deadline:
        for records in dlq.poll(timeout_ms=500).values():
            dead.extend(r for r in records if r.key == key)
    dlq.close()
    assert dead and dead[0].value == b"{not json"
    headers = dict(dead[0].headers)
    assert b"not JSON" in headers["error"]
    assert headers["source.partition"] == str(partition).encode()


def test_a_killed_worker_resumes_without_forgetting_or_missing_anything(
    settings: Settings, status_tail: CdcTail
) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        before = [str(insert_payment(conn)) for _ in range(5)]
        wait_for("the first payments in the table", lambda: set(before) <= pending_ids())

        stack("kill", "worker")
        during = [str(insert_payment(conn)) for _ in range(5)]
        for pid in before[:3]:
            conn.execute(
                "UPDATE payments SET status = 'succeeded', version = version + 1 WHERE id = %s",
                (pid,),
            )
        stack("start", "worker")

    settled, still_pending = before[:3], before[3:] + during
    table = wait_for(
        "the restarted worker's table to show every change made while it was down",
        lambda: (ids := pending_ids()) >= set(still_pending) and not ids & set(settled) and ids,
        timeout=180,
    )
    assert set(still_pending) <= table
    for pid in settled:
        events = status_tail.events_for(pid, timeout=60)
        assert {e["event_id"] for e in events} == {f"{pid}:2"}, events


@contextmanager
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[list[str]]:
    """Two workers of the same app (one consumer group) instead of the stack's one."""
    stack("stop", "worker")
    procs, urls = [], []
    try:
        for n, port in enumerate((6071, 6072)):
            env = dict(
                os.environ, WORKER_DATA_DIR=str(tmp_path / f"worker{n}"), WORKER_WEB_PORT=str(port)
            )
            log = open(tmp_path / f"worker{n}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(
                subprocess.Popen(
                    [
                        str(ROOT / ".venv/bin/payments-worker"),
                        "worker",
                        "--web-port",
                        str(port),
                        "--loglevel",
                        "info",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        stack("start", "worker")


def test_two_workers_split_the_partitions_and_reconcile_each_payment_once(
    settings: Settings, tmp_path: Path
) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        mine = {str(insert_payment(conn)) for _ in range(12)}

    with two_workers(settings, tmp_path) as urls:

        def split() -> list[list[int]] | None:
            parts = [
                requests.get(f"{u}/pending/?limit=0", timeout=10).json()["partitions"] for u in urls
            ]
            return parts if all(parts) and sorted(parts[0] + parts[1]) == list(range(6)) else None

        partitions = wait_for("both workers to own a share of the 6 partitions", split, 180)
        assert not set(partitions[0]) & set(partitions[1])
        wait_for(
            "the pending payments in the two tables",
            lambda: mine <= pending_ids(urls[0]) | pending_ids(urls[1]),
            120,
        )

        answers = [requests.post(f"{u}/reconcile/", timeout=300).json() for u in urls]
        owned = [set(a["owned_ids"]) for a in answers]
        assert not owned[0] & owned[1], "a payment was reconciled by both workers"
        assert mine <= owned[0] | owned[1], "a pending payment was reconciled by neither"
        assert [a["partitions"] for a in answers] == partitions
