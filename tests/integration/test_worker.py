"""The worker against the real stack: its open-payments table, reconciliation with the stand-in,
payment-status-update events, a SIGKILLed worker, a second worker started as the README says
beside the stack's, the DLQ."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
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
from tests import support_api
from tests.stack_support import (
    ROOT,
    CdcTail,
    audit_sources,
    generated_env,
    insert_payment,
    readme_section,
    stack,
)

pytestmark = pytest.mark.integration

API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
WORKER = os.environ.get("WORKER_URL", "http://127.0.0.1:6066").split(",")[0].rstrip("/")
OPERATOR = next(iter(Settings().operator_logins.items()), None)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    return support_api.wait_for(
        check, timeout=timeout, interval=0.5, what=what, tolerate=(requests.RequestException,)
    )


def created_at(settings: Settings, payment_id: str) -> str:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT created_at FROM payments WHERE id = %s", (payment_id,)
        ).fetchone()
    assert row is not None
    return str(row[0].isoformat())


def is_open(settings: Settings, payment_id: str, url: str = WORKER) -> bool:
    """Whether the worker at ``url`` holds the payment in its open table."""
    resp = requests.get(
        f"{url}/open/{payment_id}/",
        params={"created_at": created_at(settings, payment_id)},
        auth=OPERATOR,
        timeout=10,
    )
    assert resp.status_code in (200, 404), resp.text
    return resp.status_code == 200


def worker_post(url: str, path: str) -> dict[str, Any]:
    resp = requests.post(f"{url}{path}", auth=OPERATOR, timeout=300)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def api_headers(key: str) -> dict[str, str]:
    keys = sorted(Settings().api_key_tenants)
    return {"Idempotency-Key": key, **({"Authorization": f"Bearer {keys[0]}"} if keys else {})}


def create_payment(amount_minor: int = 2500) -> dict[str, Any]:
    resp = requests.post(
        f"{API}/payments",
        json={"amount_minor": amount_minor, "currency": "usd"},
        headers=api_headers(f"worker-test-{uuid.uuid4()}"),
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
    wait_for(f"payment {pid} in the worker's open table", lambda: is_open(settings, pid))

    with webhooks_lost(settings):
        pay_on_stripe(stripe_client, payment["provider_payment_id"])
        time.sleep(1.5)
        assert db_status(settings, pid)[0] == "pending", "no webhook should have reached the API"
        answer = worker_post(WORKER, "/reconcile/")

    assert answer["sweep"] is not None and answer["sweep"]["applied"] >= 1, answer
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
    wait_for("the payment to leave the open table", lambda: not is_open(settings, pid))
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
    def held(ids: list[str]) -> set[str]:
        return {pid for pid in ids if is_open(settings, pid)}

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        before = [str(insert_payment(conn)) for _ in range(5)]
        wait_for("the first payments in the table", lambda: held(before) == set(before))

        stack("kill", "worker")
        during = [str(insert_payment(conn)) for _ in range(5)]
        for pid in before[:3]:
            conn.execute(
                "UPDATE payments SET status = 'succeeded', version = version + 1 WHERE id = %s",
                (pid,),
            )
        stack("start", "worker")

    settled, still_pending = before[:3], before[3:] + during
    wait_for(
        "the restarted worker's table to show every change made while it was down",
        lambda: held(still_pending + settled) == set(still_pending),
        timeout=180,
    )
    for pid in settled:
        events = status_tail.events_for(pid, timeout=60)
        assert {e["event_id"] for e in events} == {f"{pid}:2"}, events


def readme_scale_out_command(port_offset: int) -> list[str]:
    """The README's command for another worker ("The worker and reconciliation": "by starting
    another worker by hand"), with its port shifted by the stack's STACK_PORT_OFFSET, as "Two
    stacks on one machine" says every port is."""
    section = readme_section("The worker and reconciliation")
    found = re.search(r"starting another worker by hand:\s*`([^`]+)`", section)
    assert found, "the README no longer says how to start another worker by hand"
    command = shlex.split(found.group(1))
    assert "--web-port" in command, f"the README's command names no web port: {command}"
    port_at = command.index("--web-port") + 1
    command[port_at] = str(int(command[port_at]) + port_offset)
    return command


@contextmanager
def worker_started_by_hand(command: list[str], tmp_path: Path) -> Iterator[None]:
    """The command run from the checkout, as a user types it there, beside the stack's worker;
    stopped (SIGTERM) at the end."""
    with open(tmp_path / "worker-by-hand.log", "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def test_a_worker_started_as_the_readme_says_shares_the_partitions_with_the_stacks(
    settings: Settings, tmp_path: Path
) -> None:
    offset = int(generated_env()["STACK_PORT_OFFSET"] or 0)
    command = readme_scale_out_command(offset)
    port = int(command[command.index("--web-port") + 1])
    urls = [WORKER, f"http://127.0.0.1:{port}"]
    tail = CdcTail(settings)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        mine = [str(insert_payment(conn)) for _ in range(12)]
    changes = tail.collect([(pid, "c") for pid in mine], timeout=60)
    tail.close()
    partition = {pid: int(changes[(pid, "c")]["_partition"]) for pid in mine}

    def active(url: str) -> list[int]:
        resp = requests.get(f"{url}/stats/", auth=OPERATOR, timeout=10)
        return list(resp.json()["partitions"]["active"])

    state = ROOT / settings.model_copy(update={"worker_web_port": port}).worker_state_dir
    with worker_started_by_hand(command, tmp_path):

        def split() -> list[list[int]] | None:
            parts = [active(u) for u in urls]
            return parts if all(parts) and sorted(parts[0] + parts[1]) == list(range(6)) else None

        partitions = wait_for("the two workers to own a share of the 6 partitions each", split, 180)
        assert not set(partitions[0]) & set(partitions[1])

        def holders() -> dict[str, list[int]] | None:
            found = {
                pid: [n for n, u in enumerate(urls) if is_open(settings, pid, u)] for pid in mine
            }
            return found if all(found.values()) else None

        # Each payment is held by the one worker that owns its partition, and by no other.
        held = wait_for("every payment held open by a worker", holders, 120)
        owner = {p: n for n, parts in enumerate(partitions) for p in parts}
        assert held == {pid: [owner[partition[pid]]] for pid in mine}

        mine_by_worker = [sum(1 for who in held.values() if who == [n]) for n in range(2)]

        def counted() -> bool:
            # Each worker counts its partitions' open payments once it has them (a recount
            # after the rebalance, off the event loop): wait for it before the cycle.
            opened = [
                requests.get(f"{u}/stats/", auth=OPERATOR, timeout=10).json()["open"]["count"]
                for u in urls
            ]
            return all(o >= m for o, m in zip(opened, mine_by_worker, strict=True))

        wait_for("each worker to count the payments it holds", counted, 60)
        answers = [worker_post(u, "/reconcile/") for u in urls]
        assert [a["partitions"] for a in answers] == partitions
        for n, answer in enumerate(answers):
            assert answer["open"] >= mine_by_worker[n], answer
        leaders = [n for n, a in enumerate(answers) if a["sweep"] is not None]
        assert leaders == [owner[0]], "one sweep of Stripe's events for the group, by partition 0"
    # Stopped: the stack's worker owns every partition again; the other kept its state apart.
    wait_for(
        "the stack's worker to own all 6 partitions again",
        lambda: active(WORKER) == list(range(6)),
        120,
    )
    assert state.is_dir(), f"the worker started by hand kept its RocksDB state in {state}"
    shutil.rmtree(state, ignore_errors=True)


def test_a_failed_payment_stays_tracked_and_a_later_payment_with_a_lost_webhook_is_found(
    settings: Settings, stripe_client: stripe.StripeClient, status_tail: CdcTail
) -> None:
    """Declined first (the payment is `failed`), then paid on the same intent while the
    `succeeded` webhook is lost: the worker still tracks it and reconciliation finds the money."""
    payment = create_payment()
    pid, intent_id = payment["id"], payment["provider_payment_id"]
    raw = support_api.intent_event(
        f"evt_{uuid.uuid4().hex}",
        "payment_intent.payment_failed",
        intent_id=intent_id,
        payment_id=pid,
        status="requires_payment_method",
        amount=2500,
        error={"code": "card_declined", "message": "Your card was declined."},
    )
    signed = support_api.sign(raw, settings.webhook_secrets[0])
    resp = requests.post(
        f"{API}/webhooks/stripe",
        data=raw,
        headers={"Stripe-Signature": signed, "Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 200 and resp.json()["outcome"] == "applied", resp.text
    assert db_status(settings, pid)[0] == "failed"
    wait_for("the failed payment still open in the worker", lambda: is_open(settings, pid))

    with webhooks_lost(settings):
        pay_on_stripe(stripe_client, intent_id)
        time.sleep(1.5)
        assert db_status(settings, pid)[0] == "failed"
        worker_post(WORKER, "/reconcile/")

    status, version = db_status(settings, pid)
    assert status == "succeeded"
    events = status_tail.events_for(pid, timeout=30, at_least=2)
    assert [(e["previous_status"], e["status"]) for e in events] == [
        ("pending", "failed"),
        ("failed", "succeeded"),
    ]
    assert events[-1]["event_id"] == f"{pid}:{version}"
    wait_for("the paid payment to leave the open table", lambda: not is_open(settings, pid))


@contextmanager
def status_topic_refusing_events(settings: Settings) -> Iterator[Callable[[], None]]:
    """The broker refuses every record on the status topic (``max.message.bytes`` below any
    event) until the returned ``heal()`` or the end: a status event that is never acknowledged,
    while the change topic keeps flowing."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    resource = ConfigResourceType.TOPIC

    def heal() -> None:
        admin.reset_configs(
            [ConfigResource(resource, settings.status_topic, {"max.message.bytes": None})]
        )

    admin.alter_configs(
        [ConfigResource(resource, settings.status_topic, {"max.message.bytes": "64"})]
    )
    try:
        yield heal
    finally:
        heal()
        admin.close()


def test_a_status_event_the_broker_refuses_is_retried_and_sent_after_a_stop(
    settings: Settings, status_tail: CdcTail
) -> None:
    """The worker stopped (SIGTERM) while the broker refuses a status event: the change is not
    committed as done, and the restarted worker sends the event, once."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        pid = str(insert_payment(conn))
        wait_for("the payment in the worker's table", lambda: is_open(settings, pid))
        with status_topic_refusing_events(settings) as heal:
            conn.execute(
                "UPDATE payments SET status = 'succeeded', version = version + 1 WHERE id = %s",
                (pid,),
            )
            health = wait_for(
                "the worker reporting its blocked partition",
                lambda: (
                    (r := requests.get(f"{WORKER}/healthz", timeout=5)).status_code == 503
                    and r.json()
                ),
            )
            assert health["status"] == "blocked"
            assert not status_tail.events_for(pid, timeout=3), "the broker took the event"
            stack("stop", "worker")
            heal()
        stack("start", "worker")
    status_tail.events_for(pid, timeout=120)
    status_tail.records(5, lambda _: False)  # a second copy would arrive meanwhile
    events = [json.loads(r.value) for r in status_tail.seen if r.key == pid.encode()]
    assert [e["event_id"] for e in events] == [f"{pid}:2"], events
    assert events[0]["status"] == "succeeded" and events[0]["previous_status"] == "pending"
    wait_for("the worker healthy again", lambda: requests.get(f"{WORKER}/healthz", timeout=5).ok)
