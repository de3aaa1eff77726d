"""The fault suite: a steady load of payments through the running stack while every part is
killed or disturbed once, plus hostile input; then the end state is checked against Stripe.

Sizes: ``FAULT_PAYMENTS`` (default 60), ``FAULT_CLIENTS`` (4), ``FAULT_SEED`` (random, printed).
``make test`` runs the default size; ``make test-faults`` runs it alone, larger.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
import requests
from kafka import KafkaProducer
from kafka.errors import KafkaError

from payments.domain.status import Status, can_transition
from payments.ports import Intent
from payments.settings import Settings
from tests import support_api
from tests.faults.chaos import Faults, StripeProxy
from tests.faults.load import HostileReport, Load, malformed_cdc_record, send_hostile
from tests.stack_support import CdcTail, stack

API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
WORKER = os.environ.get("WORKER_URL", "http://127.0.0.1:6066").rstrip("/")
PAYMENTS = int(os.environ.get("FAULT_PAYMENTS", "60"))
CLIENTS = int(os.environ.get("FAULT_CLIENTS", "4"))
SEED = int(os.environ.get("FAULT_SEED", str(random.SystemRandom().randrange(10**6))))
SLOT = "debezium_payments"

pytestmark = pytest.mark.timeout(1200)


def restart_apps(env: dict[str, str]) -> None:
    for name in ("api", "worker"):
        stack("stop", name)
        stack("start", name, env=env)


@pytest.fixture
def proxy(settings: Settings) -> Iterator[StripeProxy]:
    """The API and worker talk to Stripe through the fault proxy for the test, and are
    restarted talking to it directly afterwards, whatever happened."""
    with StripeProxy(settings.stripe_api_base) as p:
        restart_apps({**os.environ, "STRIPE_API_BASE": p.url})
        try:
            yield p
        finally:
            p.mode = "pass"
            restart_apps(dict(os.environ))


class SlotWatch(threading.Thread):
    """Samples the replication slot's retained WAL while the suite runs."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.max_retained = 0
        self.statuses: set[str] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            while not self.halt.wait(0.5):
                row = conn.execute(
                    "SELECT pg_current_wal_lsn() - restart_lsn, wal_status "
                    "FROM pg_replication_slots WHERE slot_name = %s",
                    (SLOT,),
                ).fetchone()
                if row is not None and row[0] is not None:
                    self.max_retained = max(self.max_retained, int(row[0]))
                    self.statuses.add(row[1])


def schema_change(settings: Settings, *, add: bool) -> None:
    """An unexpected column on ``payments``: the change stream must carry on regardless."""
    ddl = (
        "ALTER TABLE payments ADD COLUMN IF NOT EXISTS fault_probe text DEFAULT 'probe'"
        if add
        else "ALTER TABLE payments DROP COLUMN IF EXISTS fault_probe"
    )
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(ddl)


def send_malformed_record(settings: Settings) -> None:
    """A record Debezium would never write, on the CDC topic; retried while the broker is
    down (the fault thread may have just killed it)."""
    deadline = time.monotonic() + 180
    while True:
        try:
            producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
            try:
                producer.send(
                    settings.cdc_payments_topic,
                    key=json.dumps({"id": str(uuid.uuid4())}).encode(),
                    value=malformed_cdc_record(),
                ).get(timeout=30)
                return
            finally:
                producer.close()
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def all_intents(stripe: support_api.LocalStripe) -> dict[str, list[dict[str, Any]]]:
    by_payment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for intent in stripe.intents():
        pid = (intent.get("metadata") or {}).get("payment_id")
        if pid:
            by_payment[pid].append(intent)
    return by_payment


def stored(settings: Settings, prefix: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT id::text, idempotency_key, status::text, provider_payment_id "
            "FROM payments WHERE idempotency_key LIKE %s",
            (prefix + "-%",),
        ).fetchall()
    return {r[1]: {"id": r[0], "key": r[1], "status": r[2], "intent": r[3]} for r in rows}


def audit(settings: Settings, ids: list[str]) -> list[tuple[str, str | None, str, int]]:
    with psycopg.connect(settings.database_url) as conn:
        return [
            (r[0], r[1], r[2], int(r[3]))
            for r in conn.execute(
                "SELECT payment_id::text, from_status::text, to_status::text, version "
                "FROM payment_events WHERE payment_id = ANY(%s::uuid[]) ORDER BY id",
                (ids,),
            ).fetchall()
        ]


def payment_exists(settings: Settings, payment_id: str) -> bool:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT 1 FROM payments WHERE id::text = %s", (payment_id,)).fetchone()
    return row is not None


def expected_status(intents: list[dict[str, Any]]) -> Status:
    outcome = Intent.from_dict(intents[0]).outcome() if len(intents) == 1 else None
    return outcome or Status.PENDING


def test_nothing_is_lost_double_charged_or_left_pending_under_faults(
    settings: Settings, proxy: StripeProxy
) -> None:
    started = int(time.time()) - 1
    rng = random.Random(SEED)
    print(f"\nfault suite: seed {SEED}, {PAYMENTS} payments, {CLIENTS} clients")
    prefix = f"faults-{uuid.uuid4().hex[:8]}"
    stripe = support_api.LocalStripe(settings)
    status_tail = CdcTail(settings, settings.status_topic)
    app_env = {**os.environ, "STRIPE_API_BASE": proxy.url}
    faults = Faults(proxy, app_env, rng)
    load = Load(API, settings, prefix, rng)
    watch = SlotWatch(settings)
    watch.start()

    fault_thread = threading.Thread(target=faults.run, kwargs={"pause": (1.5, 4.0)})
    hostile: dict[str, Any] = {}
    hostile_thread = threading.Thread(
        target=lambda: hostile.update(report=send_hostile(API, settings, prefix, rounds=2))
    )
    fault_thread.start()
    hostile_thread.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            index = 0
            # Customers keep arriving until every fault has been injected (and PAYMENTS came).
            while index < PAYMENTS or fault_thread.is_alive():
                pool.submit(load.customer, index)
                index += 1
                if index == PAYMENTS // 3:
                    schema_change(settings, add=True)
                    send_malformed_record(settings)
                time.sleep(0.4)
        fault_thread.join()
        hostile_thread.join()
    finally:
        faults.stop.set()
        schema_change(settings, add=False)
        watch.halt.set()
    print("faults:", *faults.log, sep="\n  ")

    # The final reconciliation: the worker resolves what webhooks missed and finishes creations
    # that never reached Stripe (it waits 30 s before taking a creation over from the API).
    deadline = time.monotonic() + 240
    while True:
        with contextlib.suppress(requests.RequestException):  # still starting after a kill
            requests.post(f"{WORKER}/reconcile/", timeout=120)
        rows = stored(settings, prefix)
        intents = all_intents(stripe)
        wrong = {
            key: (row["status"], expected_status(intents.get(row["id"], [])))
            for key, row in rows.items()
            if row["status"] != expected_status(intents.get(row["id"], []))
            or len(intents.get(row["id"], [])) != 1
        }
        if not wrong or time.monotonic() > deadline:
            break
        time.sleep(5)

    customers = {c.key: c for c in load.customers}
    lost = [k for k in customers if k not in rows]
    stray = [k for k in rows if k not in customers and "-reused-" not in k]
    duplicate_intents = {
        k: len(intents[r["id"]]) for k, r in rows.items() if len(intents.get(r["id"], [])) > 1
    }
    # Every intent made during the run belongs to a stored payment (the row is written first).
    orphan_intents = sorted(
        pid
        for pid, found in intents.items()
        if any(i["created"] >= started for i in found) and not payment_exists(settings, pid)
    )

    ids = [r["id"] for r in rows.values()]
    trail = audit(settings, ids)
    illegal = [
        t for t in trail if t[1] is not None and not can_transition(Status(t[1]), Status(t[2]))
    ]
    wanted = {f"{pid}:{version}" for pid, before, after, version in trail if before != after}
    id_set = set(ids)

    def emitted(records: list[Any]) -> dict[str, list[str]]:
        seen: dict[str, list[str]] = defaultdict(list)
        for r in records:
            if r.key is not None and r.key.decode() in id_set:
                event = json.loads(r.value)
                seen[event["event_id"]].append(event["status"])
        return seen

    events = emitted(status_tail.records(120, lambda got: wanted <= set(emitted(got))))
    missing_events = sorted(wanted - set(events))
    inconsistent = {e: s for e, s in events.items() if len(set(s)) > 1}
    replayed = sum(len(s) - 1 for s in events.values())

    report = hostile.get("report") or HostileReport()
    answers = Counter(code for c in load.customers for code in c.answers)
    table = [
        ("faults injected", sum(faults.counts.values())),
        ("payments driven", len(customers)),
        ("hostile inputs tried", report.tried),
        ("payments lost", len(lost)),
        ("wrong final states", len(wrong)),
        ("duplicate intents", len(duplicate_intents)),
        ("rows nobody asked for", len(stray)),
        ("illegal transitions", len(illegal)),
        ("status changes not emitted", len(missing_events)),
        ("duplicate events (same event_id)", replayed),
        ("5xx to the caller's fault", len(report.server_errors)),
        ("max slot WAL retained (MB)", round(watch.max_retained / 2**20, 1)),
    ]
    width = max(len(name) for name, _ in table)
    print("\n".join(f"  {name:<{width}}  {value}" for name, value in table))
    print("  answers to customers:", dict(sorted(answers.items())))
    print("  answers to hostile input:", dict(sorted(report.answers.items())))

    assert faults.planned and sum(faults.counts.values()) == faults.planned, faults.log
    assert "report" in hostile, "the hostile-input thread died (its traceback is above)"
    assert not lost, f"payments lost: {lost[:10]}"
    assert not wrong, (
        f"payments not in Stripe's status (db, expected): {dict(list(wrong.items())[:10])}"
    )
    assert not duplicate_intents, f"more than one PaymentIntent: {duplicate_intents}"
    assert not stray, f"rows no customer asked for: {stray[:10]}"
    assert not orphan_intents, f"intents without a payment: {orphan_intents[:10]}"
    assert not illegal, f"transitions the status rules forbid: {illegal}"
    assert not missing_events, f"status changes never emitted: {missing_events[:10]}"
    assert not inconsistent, f"one event_id with different statuses: {inconsistent}"
    assert not report.server_errors, "\n".join(report.server_errors)
    assert "lost" not in watch.statuses, "the replication slot lost WAL while Connect was down"
    assert watch.max_retained < 2 * 2**30  # max_slot_wal_keep_size
