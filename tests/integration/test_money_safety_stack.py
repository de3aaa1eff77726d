"""Money safety on the running stack: what the reconciler does at the TTL, with foreign intents,
through a database outage and with checks that keep failing; one Stripe budget across the
real API and worker processes; webhook secret rotation.

The API and the worker are restarted for this module talking to Stripe through a recording
proxy (every request's arrival time, path, headers and body), with a short TTL and
reconciliation interval, as the fault suite runs them (``restart_apps``), and restored after.
Expected outcomes are written from Stripe's side of the story."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import psycopg
import pytest
import requests

from payments.settings import Settings
from tests import support_api
from tests.faults.chaos import restart_apps
from tests.stack_support import TopicSince, audit_sources, stack, stack_dir
from tests.stripe_proxy import RecordingProxy, most_in_one_second

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
TTL_SECONDS = 20
RECONCILE_SECONDS = 3
# The shared Stripe budget of the module's processes: 100 ms between calls, so that what the
# stand-in receives is measured well apart from the scheduling noise of a loaded machine.
STRIPE_MAX_RPS = 10
CUSTOMERS, PAYMENTS_EACH = 24, 5
# The first wait after a failed check: the retry delay (60 s) or the interval when shorter.
FIRST_RETRY_SECONDS = 3


@dataclass
class Rig:
    settings: Settings
    proxy: RecordingProxy
    env: dict[str, str]
    worker: str
    operator: tuple[str, str]


@pytest.fixture(scope="module")
def rig(settings: Settings) -> Iterator[Rig]:
    operator = support_api.operator_auth(settings)
    assert operator is not None, "OPERATOR_CREDENTIALS is empty: `make up` writes it"
    with RecordingProxy(settings.stripe_api_base) as proxy:
        env = {
            **os.environ,
            "STRIPE_API_BASE": proxy.url,
            "PENDING_TTL_SECONDS": str(TTL_SECONDS),
            "RECONCILE_INTERVAL_SECONDS": str(RECONCILE_SECONDS),
            "STRIPE_MAX_RPS": str(STRIPE_MAX_RPS),
        }
        try:
            restart_apps(settings, env)
            rig = Rig(settings, proxy, env, settings.worker_urls[0].rstrip("/"), operator)
            drain(rig)
            yield rig
        finally:
            stack("up")  # whatever a test left down
            restart_apps(settings, dict(os.environ))


def reconcile_now(rig: Rig) -> dict[str, Any]:
    resp = requests.post(f"{rig.worker}/reconcile/", auth=rig.operator, timeout=300)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def drain(rig: Rig) -> None:
    """With the short TTL, everything earlier tests left open is past it: cycles until one has
    nothing left to create or expire, so that the tests' own payments are not behind them."""

    def idle() -> bool:
        report = reconcile_now(rig)
        return bool(report["partitions"]) and (report["created"], report["expired"]) == (0, 0)

    support_api.wait_for(
        idle, timeout=600, interval=0.5, what="the worker to expire what earlier tests left"
    )


def create_payment(rig: Rig, amount_minor: int = 2500) -> dict[str, Any]:
    resp = requests.post(
        f"{API}/payments",
        json={"amount_minor": amount_minor, "currency": "usd"},
        headers={
            "Idempotency-Key": f"money-stack-{uuid.uuid4()}",
            **support_api.auth(rig.settings),
        },
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def db_row(rig: Rig, payment_id: str) -> tuple[str, str | None]:
    """(status, failure_code) on the primary."""
    with psycopg.connect(rig.settings.database_url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT status::text, failure_code FROM payments WHERE id = %s", (payment_id,)
        ).fetchone()
    assert row is not None, payment_id
    return str(row[0]), row[1]


def status_becomes(rig: Rig, payment_id: str, status: str, timeout: float = 120) -> None:
    support_api.wait_for(
        lambda: db_row(rig, payment_id)[0] == status,
        timeout=timeout,
        interval=0.5,
        what=f"payment {payment_id} {status}",
        tolerate=(psycopg.OperationalError,),
    )


def deliver(rig: Rig, raw: bytes, secret: str) -> requests.Response:
    return requests.post(
        f"{API}/webhooks/stripe",
        data=raw,
        headers={
            "Stripe-Signature": support_api.sign(raw, secret),
            "Content-Type": "application/json",
        },
        timeout=30,
    )


def worker_metric(rig: Rig, name: str) -> float:
    text = requests.get(f"{rig.worker}/metrics", auth=rig.operator, timeout=10).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


def cancels_of(rig: Rig, intent_id: str) -> list[tuple[str | None, dict[str, list[str]]]]:
    """(Idempotency-Key, form fields) of every cancel request of the intent."""
    return [
        (
            {k.lower(): v for k, v in seen.headers.items()}.get("idempotency-key"),
            parse_qs(seen.body.decode()),
        )
        for seen in rig.proxy.requests_to(f"/v1/payment_intents/{intent_id}/cancel")
    ]


def refused_reason_before(rig: Rig) -> bool:
    """Whether the stand-in refused a cancel's `cancellation_reason` (this module's run)."""
    return any(
        seen.path.endswith("/cancel") and seen.status == 400 and b"cancellation_reason" in seen.body
        for seen in rig.proxy.requests_to("/v1/payment_intents/")
    )


def test_a_failed_payment_is_expired_at_the_ttl(rig: Rig) -> None:
    """Declined (a signed `payment_intent.payment_failed`), then abandoned: at the TTL its
    intent is canceled at Stripe with reason `abandoned`, then the payment is `expired`, and
    both changes are announced."""
    events = TopicSince(rig.settings, rig.settings.status_topic)
    payment = create_payment(rig)
    pid, intent_id = payment["id"], payment["provider_payment_id"]
    raw = support_api.declined_event(intent_id, pid, 2500)
    answer = deliver(rig, raw, rig.settings.webhook_secrets[0])
    assert answer.status_code == 200 and answer.json()["outcome"] == "applied", answer.text
    assert db_row(rig, pid) == ("failed", "card_declined")

    status_becomes(rig, pid, "expired", timeout=TTL_SECONDS + 90)
    assert audit_sources(rig.settings, pid) == [
        ("pending", "failed", "webhook"),
        ("failed", "expired", "expiry"),
    ]
    cancels = cancels_of(rig, intent_id)
    assert cancels and {key for key, _ in cancels} == {f"pi-cancel-{pid}-abandoned-1"}
    intent = requests.get(
        f"{rig.settings.stripe_api_base}/v1/payment_intents/{intent_id}",
        auth=(rig.settings.stripe_secret_key, ""),
        timeout=10,
    ).json()
    assert intent["status"] == "canceled"
    # The reason sent is `abandoned`; the local stand-in refuses the parameter (400, once per
    # process: the gateway then cancels without it) and keeps no reason, Stripe keeps it.
    asked = [form["cancellation_reason"] for _, form in cancels if "cancellation_reason" in form]
    assert all(reason == ["abandoned"] for reason in asked)
    assert asked or refused_reason_before(rig), "the reason was asked for"
    assert intent.get("cancellation_reason") in (None, "abandoned")

    def announced() -> list[tuple[str, str]]:
        found = [json.loads(r.value) for r in events.read(timeout=5) if r.key == pid.encode()]
        return [(e["previous_status"], e["status"]) for e in found]

    support_api.wait_for(lambda: len(announced()) >= 2, timeout=60, what="both events")
    assert announced() == [("pending", "failed"), ("failed", "expired")]


@dataclass
class LostCreation:
    payment_id: str
    intent_id: str  # the intent Stripe made, whose answer nobody heard


def create_with_lost_answers(rig: Rig) -> LostCreation:
    """The create reaches Stripe and makes the intent, and every answer to it is lost (the
    connection reset on the way back, the API's retries too): the API answers 202 with no
    intent."""
    rig.proxy.lose_answers_to = "/v1/payment_intents"
    try:
        resp = requests.post(
            f"{API}/payments",
            json={"amount_minor": 2700, "currency": "usd"},
            headers={
                "Idempotency-Key": f"money-stack-{uuid.uuid4()}",
                **support_api.auth(rig.settings),
            },
            timeout=60,
        )
    finally:
        rig.proxy.lose_answers_to = None
    assert resp.status_code == 202, resp.text
    pid = resp.json()["id"]
    assert resp.json()["provider_payment_id"] is None
    made = [seen for seen in creates_of(rig, pid) if not seen.replayed]
    assert len(made) == 1 and made[0].status == 200, made  # Stripe made it; nobody heard
    key = {k.lower(): v for k, v in made[0].headers.items()}["idempotency-key"]
    return LostCreation(pid, json.loads(rig.proxy.lost[key][2])["id"])


def creates_of(rig: Rig, pid: str) -> list[Any]:
    """Every create request for the payment that reached the proxy, in order."""
    return [
        seen
        for seen in rig.proxy.requests_to("/v1/payment_intents")
        if seen.method == "POST"
        and seen.path == "/v1/payment_intents"
        and parse_qs(seen.body.decode()).get("metadata[payment_id]") == [pid]
    ]


def assert_closed_with_its_intent(rig: Rig, lost: LostCreation) -> None:
    """The intent Stripe made is canceled and is the payment's; no second one was made."""
    intent = requests.get(
        f"{rig.settings.stripe_api_base}/v1/payment_intents/{lost.intent_id}",
        auth=(rig.settings.stripe_secret_key, ""),
        timeout=10,
    ).json()
    assert intent["status"] == "canceled", intent
    creates = creates_of(rig, lost.payment_id)
    assert creates[-1].replayed, "closed without asking Stripe with the creation's key"
    assert sum(not seen.replayed for seen in creates) == 1, "a second intent was made"
    with psycopg.connect(rig.settings.database_url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT provider_payment_id FROM payments WHERE id = %s", (lost.payment_id,)
        ).fetchone()
    assert row == (lost.intent_id,)


def test_an_intent_whose_creation_answer_was_lost_is_canceled_when_the_payment_expires(
    rig: Rig,
) -> None:
    """At the TTL the payment is expired and the intent Stripe made is canceled with it: none
    is left open for a closed payment."""
    lost = create_with_lost_answers(rig)
    status_becomes(rig, lost.payment_id, "expired", timeout=TTL_SECONDS + 90)
    assert_closed_with_its_intent(rig, lost)


def test_an_intent_whose_creation_answer_was_lost_is_canceled_with_the_payment(
    rig: Rig,
) -> None:
    """The customer cancels before the TTL: the payment is canceled, and so is the intent
    Stripe made for it."""
    lost = create_with_lost_answers(rig)
    resp = requests.post(
        f"{API}/payments/{lost.payment_id}/cancel",
        headers=support_api.auth(rig.settings),
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "canceled"
    assert db_row(rig, lost.payment_id)[0] == "canceled"
    assert_closed_with_its_intent(rig, lost)


def test_a_foreign_intent_in_the_sweep_is_refused_and_recorded(rig: Rig) -> None:
    """Another integration on the same Stripe account makes and charges an intent that names
    our payment in its metadata (same amount and currency): the sweep sees its success and
    refuses it, counts it and logs a warning naming both; the payment stays pending."""
    payment = create_payment(rig)
    pid = payment["id"]
    made = requests.post(
        f"{rig.settings.stripe_api_base}/v1/payment_intents",
        data={"amount": 2500, "currency": "usd", "metadata[payment_id]": pid},
        auth=(rig.settings.stripe_secret_key, ""),
        timeout=10,
    )
    assert made.status_code == 200, made.text
    stranger = made.json()
    refused_before = worker_metric(rig, "payments_foreign_intents_refused_total")
    paid = support_api.LocalStripe(rig.settings).pay(stranger["id"], "4242424242424242")
    assert paid[0] == 200, paid

    support_api.wait_for(
        lambda: worker_metric(rig, "payments_foreign_intents_refused_total") > refused_before,
        timeout=60,
        what="the sweep to refuse the stranger's intent",
    )
    assert db_row(rig, pid)[0] == "pending"
    assert audit_sources(rig.settings, pid) == []
    log = (stack_dir() / "logs" / "worker.log").read_text(errors="replace")
    refusals = [
        doc
        for line in log.splitlines()
        if '"foreign intent refused"' in line
        and (doc := json.loads(line[line.index("{") :]))["payment_id"] == pid
    ]
    assert refusals and refusals[-1]["intent_id"] == stranger["id"]
    assert refusals[-1]["level"] == "warning"


def test_a_database_outage_inside_a_cycle_leaves_the_worker_up_and_the_next_cycle_works(
    rig: Rig,
) -> None:
    """The primary goes down while a payment reaches its TTL: the cycle that meets the outage
    counts its errors and ends, the worker answers throughout, and once the primary is back a
    later cycle expires the payment."""
    payment = create_payment(rig)
    pid, intent_id = payment["id"], payment["provider_payment_id"]
    created = datetime.fromisoformat(payment["created_at"])
    errors = 'payments_reconcile_results_total{result="errors"}'
    errors_before = worker_metric(rig, errors)
    stack("stop", "postgres")
    try:
        wait = (created + timedelta(seconds=TTL_SECONDS + 1) - datetime.now(UTC)).total_seconds()
        time.sleep(max(0.0, wait))
        support_api.wait_for(
            lambda: worker_metric(rig, errors) > errors_before,
            timeout=120,
            what="a cycle to meet the outage and count its errors",
        )
        health = requests.get(f"{rig.worker}/healthz", timeout=10)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert db_row_unreachable(rig)
    finally:
        stack("start", "postgres")
    status_becomes(rig, pid, "expired", timeout=180)
    assert cancels_of(rig, intent_id), "canceled at Stripe first"


def db_row_unreachable(rig: Rig) -> bool:
    try:
        psycopg.connect(rig.settings.database_url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return True
    return False


def test_a_check_that_keeps_failing_waits_longer_each_time_and_is_on_ops(rig: Rig) -> None:
    """A payment past its TTL whose intent Stripe does not know (404): its expiry fails, and is
    tried again 3 s, 6 s, then 12 s later (the delay doubles). It is listed with its attempts
    and next time in the worker's /stats/, the API's /ops.json and /ops, and `make status`."""
    pid = str(uuid.uuid4())
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    with psycopg.connect(rig.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO payments (id, idempotency_key, request_hash, amount_minor, currency, "
            "provider_payment_id, created_at, updated_at) "
            "VALUES (%s, %s, 'test', 1000, 'usd', %s, %s, %s)",
            (pid, f"money-stack-{pid}", f"pi_gone_{pid[:8]}", long_ago, long_ago),
        )
    delays: dict[int, float] = {}

    def third_failure() -> bool:
        with psycopg.connect(rig.settings.database_url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT attempts, extract(epoch FROM next_at - updated_at) "
                "FROM reconcile_retries WHERE payment_id = %s",
                (pid,),
            ).fetchone()
        if row is not None:
            delays[int(row[0])] = float(row[1])
        return {1, 2, 3} <= delays.keys()

    support_api.wait_for(third_failure, timeout=120, interval=0.2, what="three failed expiries")
    assert [round(delays[n]) for n in (1, 2, 3)] == [
        FIRST_RETRY_SECONDS,
        2 * FIRST_RETRY_SECONDS,
        4 * FIRST_RETRY_SECONDS,
    ], delays
    assert db_row(rig, pid)[0] == "pending", "never expired on one unanswered question"

    stats = requests.get(f"{rig.worker}/stats/", auth=rig.operator, timeout=10).json()
    mine = [r for r in stats["waiting_retry"]["payments"] if r["payment_id"] == pid]
    assert len(mine) == 1 and mine[0]["attempts"] >= 3
    assert "pi_gone_" in mine[0]["reason"]
    assert stats["waiting_retry"]["count"] >= 1

    ops = requests.get(f"{API}/ops.json", auth=rig.operator, timeout=30).json()
    workers = ops["sections"]["worker"]["data"]["workers"]
    listed = [
        r
        for w in workers
        for r in (w["waiting_retry"] or {}).get("payments", [])
        if r["payment_id"] == pid
    ]
    assert listed and listed[0]["attempts"] >= 3 and listed[0]["next_in_seconds"] is not None
    page = requests.get(f"{API}/ops", auth=rig.operator, timeout=30).text
    assert f'<tr class="retry" data-payment-id="{pid}">' in page
    status = stack("status").stdout
    assert any(line.strip().startswith(f"{pid} attempt ") for line in status.splitlines())


def test_every_process_together_stays_under_one_stripe_budget(rig: Rig) -> None:
    """The worker expires a batch of payments at their TTL (its cancels); once it has begun, 24
    clients create payments through the API's gunicorn processes (their intents) as fast as
    they can. The stand-in receives at most STRIPE_MAX_RPS (+1 on a window's boundary) in
    every sliding second, and both kinds of calls share those seconds. (While the API takes
    every turn, reconciliation waits: its rule leaves the API its half, never the reverse.)"""
    rate = STRIPE_MAX_RPS
    start = time.time()
    batch = [create_payment(rig, 1100) for _ in range(40)]
    batch_cancels = {f"/v1/payment_intents/{p['provider_payment_id']}/cancel" for p in batch}
    support_api.wait_for(
        lambda: any(s.path in batch_cancels for s in rig.proxy.requests_to("/v1/")),
        timeout=TTL_SECONDS + 60,
        what="the worker to start expiring the batch",
    )

    def customer() -> None:
        for _ in range(PAYMENTS_EACH):
            create_payment(rig, 1200)

    threads = [threading.Thread(target=customer) for _ in range(CUSTOMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for p in batch:
        status_becomes(rig, p["id"], "expired", timeout=120)
    seen = [s for s in rig.proxy.seen if s.at >= start]
    creates = [s.at for s in seen if s.method == "POST" and s.path == "/v1/payment_intents"]
    cancels = [s.at for s in seen if s.path.endswith("/cancel")]
    busiest = most_in_one_second([s.at for s in seen])
    print(
        f"\n{len(seen)} Stripe calls in {seen[-1].at - start:.1f} s ({len(creates)} creates, "
        f"{len(cancels)} cancels), at most {busiest} in one second, STRIPE_MAX_RPS={rate:g}"
    )
    assert len(creates) >= CUSTOMERS * PAYMENTS_EACH and len(cancels) >= len(batch)
    assert busiest <= rate + 1
    # Both the API and the worker were calling in the same seconds (the limit met both).
    first_cancel, last_cancel = min(cancels), max(cancels)
    assert any(first_cancel <= at <= last_cancel for at in creates)
    assert busiest >= rate - 2, "the burst met the limit"


def test_webhook_secrets_rotate_without_a_gap(rig: Rig) -> None:
    """Two secrets configured: a webhook signed with either is taken. The old one dropped:
    its signature is refused (401), the new one's is taken."""
    old = rig.settings.webhook_secrets[0]
    new = f"whsec_{uuid.uuid4().hex}"  # made here: a fresh secret
    raw = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": "charge.refunded",
            "created": int(time.time()),
            "data": {"object": {"object": "charge"}},
        }
    ).encode()

    def api_with(secrets: str) -> None:
        stack("stop", "api")
        stack("start", "api", env={**rig.env, "STRIPE_WEBHOOK_SECRET": secrets})

    try:
        api_with(f"{new},{old}")
        assert deliver(rig, raw, new).status_code == 200
        assert deliver(rig, raw, old).status_code == 200
        api_with(new)
        refused = deliver(rig, raw, old)
        assert refused.status_code == 401, refused.text
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert deliver(rig, raw, new).status_code == 200
    finally:
        stack("stop", "api")
        stack("start", "api", env=rig.env)
