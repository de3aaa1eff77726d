"""The fault suite: customers pay through the running stack while every part of it is killed or
disturbed once and hostile input keeps coming; then every payment is judged against Stripe.

The oracle is Stripe (``tests/faults/oracle.py``): for every intent the stand-in made during
the run, the status its payment must end in is written in the test, and the database, the audit
trail, the change stream and the ``payment-status-update`` events are each compared with it.
Every fault must have met traffic, and the run must show a minimum mix of outcomes.

Sizes: ``FAULT_PAYMENTS`` (default 60): the background customers, spread over the faults (the
faults bring customers of their own); ``FAULT_SEED`` (random, printed) replays the order of the
faults. ``make test`` runs the default size; ``make test-faults`` runs it alone, larger.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import requests
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from payments.settings import Settings
from tests import support_api
from tests.faults import oracle
from tests.faults.chaos import (
    Db,
    Faults,
    Ledger,
    SlotWatch,
    WebhookSink,
    restart_apps,
    worker_names,
)
from tests.faults.load import MALFORMED_CDC_RECORDS, PLANS, HostileReport, Load, send_hostile
from tests.faults.standin import StandIn
from tests.stack_support import TopicSince, stack
from tests.support_api import StripeProxy

API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
PAYMENTS = int(os.environ.get("FAULT_PAYMENTS", "60"))
SEED = int(os.environ.get("FAULT_SEED", str(random.SystemRandom().randrange(10**6))))
# The worker runs with a short TTL and reconciliation interval for the suite, so that expiry
# and reconciliation happen within the run.
TTL_SECONDS = 120
RECONCILE_SECONDS = 20
# About how long the schedule of faults takes (the long outages alone are 3 minutes, the restarts
# and canaries most of the rest): the background customers are spread over it.
SCHEDULE_SECONDS = 600
TRICKLE_SECONDS = 5.0
# Slot WAL the suite tolerates (the stack's max_slot_wal_keep_size is 2 GB).
SLOT_WAL_BOUND = 512 * 2**20
UNIT = max(1, PAYMENTS // 50)  # the minimum of each outcome
# The long outages (the issue's: longer than any producer retry; long enough for WAL to pile up).
BROKER_DOWN_SECONDS = float(os.environ.get("FAULT_BROKER_DOWN_SECONDS", "60"))
CONNECT_DOWN_SECONDS = float(os.environ.get("FAULT_CONNECT_DOWN_SECONDS", "120"))

pytestmark = pytest.mark.timeout(3600)


@dataclass
class Rig:
    """The suite's instruments around the running stack."""

    settings: Settings
    ledger: Ledger
    standin: StandIn
    proxy: StripeProxy
    sink: WebhookSink
    app_env: dict[str, str]


@pytest.fixture
def rig(settings: Settings) -> Iterator[Rig]:
    """The API and every worker talk to Stripe through the suite's proxy, with a short TTL and
    reconciliation interval; the stand-in is the suite's own (``standin``: a kill must not lose
    Stripe's state). Afterwards every part is up again and the apps run as before."""
    ledger = Ledger()
    standin = StandIn.of_stack(settings.stripe_api_base, API, settings.webhook_secrets[0])

    def heard(method: str, path: str, headers: Any, outcome: str, start: float) -> None:
        ledger.record("stripe", outcome, start)

    with StripeProxy(standin.base, on_call=heard) as proxy, WebhookSink() as sink:
        app_env = {
            **os.environ,
            "STRIPE_API_BASE": proxy.url,
            "PENDING_TTL_SECONDS": str(TTL_SECONDS),
            "RECONCILE_INTERVAL_SECONDS": str(RECONCILE_SECONDS),
        }
        apps = ("api", *worker_names(settings))
        for name in apps:
            stack("stop", name)
        try:
            standin.adopt()  # while nothing calls it
            for name in apps:
                stack("start", name, env=app_env)
            print(f"\nbefore the suite: {drain_backlog(settings)}")
            yield Rig(settings, ledger, standin, proxy, sink, app_env)
        finally:
            proxy.mode = "pass"
            if not standin.answers():
                standin.start()
            standin.register_webhook()
            stack("up")  # whatever a broken fault left down
            restart_apps(settings, dict(os.environ))


def drain_backlog(settings: Settings) -> str:
    """Let the worker, restarted with the suite's short TTL, expire what earlier tests left
    open, before the suite starts: otherwise it meets a burst of expiries that it spends whole
    cycles on (expiry goes first), which is the suite's doing, not a fault's. Done when no
    payment older than the TTL is left, or their number stopped falling (a payment the worker
    cannot resolve, e.g. a test row with a made-up intent id), or after 10 minutes. Every
    worker is read: each holds its own partitions' payments."""
    workers = [url.rstrip("/") for url in settings.worker_urls]
    auth = support_api.operator_auth(settings)
    t0 = last_drop = time.monotonic()
    first: int | None = None
    fewest: int | None = None
    while time.monotonic() - t0 < 600:
        with contextlib.suppress(requests.RequestException, ValueError, KeyError, TypeError):
            cycles = [
                requests.get(f"{w}/stats/", auth=auth, timeout=10).json()["last_cycle"]
                for w in workers
            ]
            # Every worker ran a cycle since its start, with the partitions it was given.
            if all(cycles) and any(c["partitions"] for c in cycles):
                old = 0
                for w in workers:
                    url = f"{w}/pending/?limit=1000"
                    pending = requests.get(url, auth=auth, timeout=10).json()
                    old += sum(1 for e in pending["oldest"] if e["age_seconds"] > TTL_SECONDS)
                first = old if first is None else first
                if fewest is None or old < fewest:
                    fewest, last_drop = old, time.monotonic()
                if old == 0 or time.monotonic() - last_drop > RECONCILE_SECONDS + 10:
                    break
        time.sleep(5)
    return (
        f"{first} payments past the TTL from before the suite, {fewest} left after "
        f"{time.monotonic() - t0:.0f} s"
    )


def schema_change(settings: Settings, *, add: bool) -> None:
    """An unexpected column on ``payments``: the change stream must carry on regardless.
    Retried while the primary is down (a fault may have just killed it)."""
    ddl = (
        "ALTER TABLE payments ADD COLUMN IF NOT EXISTS fault_probe text DEFAULT 'probe'"
        if add
        else "ALTER TABLE payments DROP COLUMN IF EXISTS fault_probe"
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as c:
                c.execute("SET lock_timeout = '10s'")
                c.execute(ddl)
                return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def send_malformed_records(settings: Settings, keys: dict[str, bytes]) -> None:
    """Records Debezium would never write (``MALFORMED_CDC_RECORDS``, each under its key in
    ``keys``), on the change topic; retried while the broker is down."""
    deadline = time.monotonic() + 240
    for kind, value in MALFORMED_CDC_RECORDS.items():
        while True:
            try:
                producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
                try:
                    producer.send(settings.cdc_payments_topic, key=keys[kind], value=value).get(
                        timeout=30
                    )
                    break
                finally:
                    producer.close(timeout=5)
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)


def stored(db: Db, prefix: str) -> dict[str, oracle.Row]:
    rows = db.query(
        "SELECT id::text, idempotency_key, status::text, amount_minor, currency::text, "
        "provider_payment_id, extract(epoch FROM now() - created_at) "
        "FROM payments WHERE idempotency_key LIKE %s",
        (prefix + "-%",),
    )
    return {
        r[0]: oracle.Row(r[0], r[1], r[2], int(r[3]), r[4].strip(), r[5], float(r[6])) for r in rows
    }


def audit_of(db: Db, ids: list[str]) -> list[oracle.Audit]:
    rows = db.query(
        "SELECT payment_id::text, from_status::text, to_status::text, source::text, version "
        "FROM payment_events WHERE payment_id = ANY(%s::uuid[]) ORDER BY id",
        (ids,),
    )
    return [oracle.Audit(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]


def earlier_payments(db: Db, intents: list[dict[str, Any]], ours: set[str]) -> set[str]:
    """Ids of the intents that belong to a payment stored before the suite (not one of
    ``ours``): by the payment their metadata names, or the payment that holds them."""
    named = {
        i["id"]: str((i.get("metadata") or {}).get("payment_id") or "")
        for i in intents
        if str((i.get("metadata") or {}).get("payment_id") or "") not in ours
    }
    if not named:
        return set()
    rows = db.query(
        "SELECT id::text, provider_payment_id FROM payments "
        "WHERE id::text = ANY(%s) OR provider_payment_id = ANY(%s)",
        ([pid for pid in named.values() if pid], list(named)),
    )
    known = {r[0] for r in rows if r[0] not in ours} | {
        r[1] for r in rows if r[1] and r[0] not in ours
    }
    return {i for i, pid in named.items() if i in known or pid in known}


def inbox_outcomes(db: Db, event_ids: list[str]) -> dict[str, str | None]:
    rows = db.query(
        "SELECT event_id, outcome FROM webhook_events WHERE event_id = ANY(%s)", (event_ids,)
    )
    return {r[0]: r[1] for r in rows}


def worker_exactly_once(settings: Settings) -> bool:
    """Whether the worker produces in Kafka transactions (Faust's exactly-once processing):
    then its transactional ids, which start with its app id, are on ``__transaction_state``,
    and no duplicate event is acceptable at all."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        request_timeout_ms=20_000,
    )
    try:
        found = consumer.partitions_for_topic("__transaction_state")
        if not found:
            return False
        parts = [TopicPartition("__transaction_state", p) for p in found]
        ends = consumer.end_offsets(parts)
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        app_id = settings.worker_app_id.encode()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                if any(r.key and app_id in r.key for r in batch):
                    return True
            if all(consumer.position(tp) >= ends[tp] for tp in parts):
                return False
        return False
    finally:
        consumer.close()


def settle(db: Db, prefix: str, last_arrival: float) -> dict[str, oracle.Row]:
    """Wait until every payment of the run is final, at least until the last one's TTL and a
    few reconciliation cycles have passed; at most a little longer."""
    earliest = last_arrival + TTL_SECONDS + 2 * RECONCILE_SECONDS
    latest = last_arrival + TTL_SECONDS + 4 * RECONCILE_SECONDS + 30
    while True:
        rows = stored(db, prefix)
        now = time.monotonic()
        settled = all(r.status in oracle.FINAL for r in rows.values())
        if (settled and now >= earliest) or now >= latest:
            return rows
        time.sleep(5)


def test_nothing_is_lost_wrong_or_left_open_under_faults(rig: Rig) -> None:
    settings = rig.settings
    started = int(time.time()) - 2
    rng = random.Random(SEED)
    prefix = f"faults-{uuid.uuid4().hex[:8]}"
    print(
        f"\nfault suite: seed {SEED}, {PAYMENTS} background payments, TTL {TTL_SECONDS} s, "
        f"reconciliation every {RECONCILE_SECONDS} s"
    )
    db = Db(settings)
    cdc = TopicSince(settings, settings.cdc_payments_topic)
    status_topic = TopicSince(settings, settings.status_topic)
    dlq = TopicSince(settings, settings.dlq_topic)
    exactly_once = worker_exactly_once(settings)
    slot = SlotWatch(db)
    slot.start()
    load = Load(API, rig.proxy.url, settings, prefix, rng, rig.ledger)
    faults = Faults(
        settings,
        rig.proxy,
        rig.sink,
        rig.standin,
        rig.ledger,
        load,
        slot,
        rig.app_env,
        rng,
        PAYMENTS,
        connect_down_seconds=CONNECT_DOWN_SECONDS,
        broker_down_seconds=BROKER_DOWN_SECONDS,
    )
    dlq_keys = {
        kind: json.dumps({"id": f"faults-malformed-{uuid.uuid4()}"}).encode()
        for kind in MALFORMED_CDC_RECORDS
    }

    fault_thread = threading.Thread(target=faults.run, kwargs={"pause": (1.0, 3.0)}, name="faults")
    hostile: dict[str, HostileReport] = {}

    def side_inputs(rounds: int) -> None:
        if rounds == 1:  # under the faults, not before them
            schema_change(settings, add=True)
            send_malformed_records(settings, dlq_keys)

    hostile_thread = threading.Thread(
        target=lambda: hostile.update(
            report=send_hostile(
                API,
                settings,
                prefix,
                ledger=rig.ledger,
                keep_going=fault_thread.is_alive,
                excusing=faults.excusing,
                target=load.target,
                between_rounds=side_inputs,
            )
        ),
        name="hostile",
    )
    t_start = time.monotonic()
    fault_thread.start()
    hostile_thread.start()
    spacing = min(TRICKLE_SECONDS, max(0.3, SCHEDULE_SECONDS / PAYMENTS))
    background = 0
    try:
        while fault_thread.is_alive() or background < PAYMENTS:
            load.start(PLANS[background % len(PLANS)])
            background += 1
            # Once FAULT_PAYMENTS came, a trickle while the last faults still need traffic.
            time.sleep(spacing if background < PAYMENTS else TRICKLE_SECONDS)
        last_arrival = time.monotonic()
        fault_thread.join()
        hostile_thread.join()
        load.wait_all()
    finally:
        faults.stop.set()
        schema_change(settings, add=False)
    print(f"  load and faults done after {time.monotonic() - t_start:.0f} s; settling")

    # Judge: Stripe first, then what our side wrote.
    rows = settle(db, prefix, last_arrival)
    slot.halt.set()
    made = [i for i in support_api.LocalStripe(settings).intents() if int(i["created"]) >= started]
    # The worker may finish the creation of a payment from before the suite: its intent is
    # not the suite's (and not an orphan). Every other intent made meanwhile must be ours.
    before = earlier_payments(db, made, set(rows))
    intents = [i for i in made if i["id"] not in before]
    ids = list(rows)
    audit = audit_of(db, ids)
    changes = oracle.cdc_changes(cdc.read(timeout=90), set(ids))
    wanted = set(changes) | {(a.payment_id, a.version) for a in audit}

    def covered(records: list[Any]) -> bool:
        seen = set()
        for r in records:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                body = json.loads(r.value)
                seen.add((str(body["payment_id"]), int(body["version"])))
        return wanted <= seen

    events = [
        oracle.Event(
            r.key.decode() if r.key else None,
            r.value,
            tuple((k, v) for k, v in (r.headers or [])),
        )
        for r in status_topic.read(timeout=180, stop=covered)
    ]
    dead = dlq.read(timeout=60, stop=lambda got: set(dlq_keys.values()) <= {r.key for r in got})
    tenant = "dev" if settings.api_auth_disabled else support_api.tenants(settings)[0]
    asked = {c.key: (c.request["amount_minor"], c.request["currency"]) for c in load.customers}
    v = oracle.judge(
        rows,
        intents,
        audit,
        changes,
        events,
        asked=asked,
        ttl_seconds=TTL_SECONDS + 3 * RECONCILE_SECONDS,
        tenant=tenant,
    )

    # The customers' side of the story.
    customers = {c.key: c for c in load.customers}
    row_of = {r.key: r for r in rows.values()}
    lost = [k for k, c in customers.items() if k not in row_of and c.payment_id]
    never_stored = [k for k, c in customers.items() if k not in row_of and not c.payment_id]
    stray = [k for k in row_of if k not in customers and "-reused-" not in k]
    gave_up = {k: c.gave_up for k, c in customers.items() if c.gave_up}
    trail: dict[str, list[oracle.Audit]] = defaultdict(list)
    for a in audit:
        trail[a.payment_id].append(a)
    went_failed = {
        pid for pid, steps in trail.items() if any(a.to_status == "failed" for a in steps)
    }
    lost_hooks = rig.sink.lost_intents()

    def final(c: Any) -> str | None:
        row = row_of.get(c.key)
        return row.status if row else None

    def own_intent(pid: str) -> dict[str, Any]:
        """The payment's own intent as the stand-in holds it at the end ({}: none)."""
        own = rows[pid].provider_payment_id
        return next((i for i in v.intents_of.get(pid, []) if i["id"] == own), {})

    expired = [pid for pid, r in rows.items() if r.status == "expired"]
    mix = {
        "succeeded": sum(1 for r in rows.values() if r.status == "succeeded"),
        # A decline the stand-in made (its intent keeps the charge's error), not one of the
        # suite's own forged payment_failed webhooks.
        "declined (failed)": sum(
            1 for pid in went_failed if own_intent(pid).get("last_payment_error")
        ),
        "failed, then paid on the same intent": sum(
            1
            for pid in went_failed
            if rows[pid].status == "succeeded" and len(v.intents_of.get(pid, [])) == 1
        ),
        # The customer saw its intent ask for 3-D Secure before it paid.
        "3-D Secure, then paid": sum(
            1
            for c in customers.values()
            if "requires_action" in c.seen_at_stripe and final(c) == "succeeded"
        ),
        "canceled": sum(1 for r in rows.values() if r.status == "canceled"),
        # Our expiry canceled the intent at Stripe, with its reason.
        "expired at the TTL": sum(
            1
            for pid in expired
            if own_intent(pid).get("status") == "canceled"
            and own_intent(pid).get("cancellation_reason") == oracle.EXPIRY_REASON
        ),
        "webhook lost, resolved by reconciliation": sum(
            1
            for c in customers.values()
            if c.plan.startswith("gap")
            and c.intent_id in lost_hooks
            and final(c) == "succeeded"
            and trail[row_of[c.key].id][-1].source == "reconciler"
        ),
        "202 while Stripe was down, finished by the worker": sum(
            1 for c in customers.values() if c.accepted and final(c) == "succeeded"
        ),
    }
    gave_up_on_purpose = sum(
        1 for c in customers.values() if c.plan in {"abandon", "3ds-abandon", "decline"}
    )
    report = hostile.get("report") or HostileReport()
    heals = [(r.heal_seconds, r.name) for r in faults.records if r.heal_seconds is not None]
    slowest = max(heals, default=(0.0, "-"))
    retained = slot.max_retained

    # One table.
    lines = [f"  {'fault injected':<44} {'up':<4} {'heal':>7}  what it met"]
    for r in faults.records:
        heal = f"{r.heal_seconds:.1f} s" if r.heal_seconds is not None else "never"
        lines.append(f"  {r.name:<44} {'yes' if r.up_before else 'NO':<4} {heal:>7}  {r.summary()}")
    figures: list[tuple[str, object]] = [
        ("faults injected", f"{len(faults.records)} of {faults.planned}"),
        ("faults that met no traffic", sum(1 for r in faults.records if not r.bit)),
        ("payments driven", len(rows)),
        *((f"  {name}", f"{n} (at least {UNIT})") for name, n in mix.items()),
        (
            "  expired without an intent (Stripe never saw it)",
            sum(1 for pid in expired if not v.intents_of.get(pid)),
        ),
        (
            "  pending / failed at the end",
            f"{sum(1 for r in rows.values() if r.status == 'pending')}"
            f" / {sum(1 for r in rows.values() if r.status == 'failed')}",
        ),
        ("customers who gave up on purpose", gave_up_on_purpose),
        ("customers who could not finish", len(gave_up)),
        ("payments lost", len(lost) + len(never_stored)),
        ("wrong final states (vs Stripe)", len(v.wrong_status)),
        ("wrong amount, currency or intent", len(v.wrong_money)),
        ("left open past the TTL", len(v.open_past_ttl)),
        ("intents without a payment", len(v.orphan_intents)),
        ("payments with 2+ intents / none", f"{len(v.duplicate_intents)} / {len(v.no_intent)}"),
        ("rows nobody asked for", len(stray)),
        ("audit trails that disagree", len(v.audit_wrong)),
        ("status writes without an audit row", len(v.writes_without_audit)),
        ("transitions out of a final status", len(v.illegal)),
        ("status changes in the database", v.status_changes),
        ("events lost", len(v.lost_events)),
        ("events wrong (content or chain)", len(v.wrong_events)),
        ("events without CloudEvents headers", len(v.wrong_headers)),
        ("events without a change behind them", len(v.events_without_change)),
        (
            "duplicate events (same event_id)",
            f"{v.duplicate_events} ({'exactly-once' if exactly_once else 'at-least-once'})",
        ),
        ("hostile inputs tried", f"{report.tried} in {report.rounds} rounds"),
        (
            "503s excused (a part they need was down)",
            f"{report.excused.total()}"
            + "".join(f"; {n} in {fault}" for fault, n in sorted(report.excused.items())),
        ),
        ("5xx to the caller's fault", len(report.server_errors)),
        ("slowest heal", f"{slowest[0]:.1f} s ({slowest[1]})"),
        ("max slot WAL retained (MB)", round(retained / 2**20, 1)),
    ]
    width = max(len(name) for name, _ in figures)
    print("\n".join(lines))
    print("\n".join(f"  {name:<{width}}  {value}" for name, value in figures))
    print("  answers to hostile input:", dict(sorted(report.answers.items())))

    # Every finding, then one assertion that lists them all.
    problems: list[str] = []

    def check(ok: bool, what: str, detail: object = "") -> None:
        if not ok:
            problems.append(f"{what}: {str(detail)[:1500]}")

    check(not faults.errors, "faults that broke", faults.errors)
    check(len(faults.records) == faults.planned > 0, "faults not injected", faults.planned)
    for r in faults.records:
        check(r.up_before, f"{r.name}: the part was not up when it was hit")
        check(r.bit, f"{r.name}: met no traffic", r.summary())
        check(r.heal_seconds is not None, f"{r.name}: the system did not heal", r.summary())
    check(faults.standin_lost == 0, "the stand-in's restart lost intents", faults.standin_lost)
    check("report" in hostile, "the hostile-input thread died (its traceback is above)")
    check(report.rounds >= 2, "hostile input did not keep coming during the faults", report.rounds)
    check(not report.server_errors, "5xx to the caller's fault", report.server_errors)
    inbox = inbox_outcomes(db, list(report.forged))
    # Refused, with an outcome that says why (not one of those of an event that was used).
    used = {None, "applied", "noop", "ignored", "unknown_payment", "provider_status", "duplicate"}
    accepted_forgeries = {e: inbox.get(e) for e in report.forged if inbox.get(e) in used}
    check(len(report.forged) >= 2, "no forged webhook about a real payment was sent")
    check(
        not accepted_forgeries,
        "webhooks about another intent not refused and kept with the reason",
        accepted_forgeries,
    )
    for kind, key in dlq_keys.items():
        # As it was sent, with the error and its kind (it can never be decoded).
        copies = [
            (r.value == MALFORMED_CDC_RECORDS[kind], dict(r.headers or []))
            for r in dead
            if r.key == key
        ]
        check(
            bool(copies)
            and all(
                same and h.get("error") and h.get("error.kind") == b"decode" for same, h in copies
            ),
            f"the malformed change record ({kind}) is not on the DLQ as sent, with its error "
            "header and error.kind decode",
            copies,
        )
    check(not lost and not never_stored, "payments lost", lost + never_stored)
    check(not stray, "rows no customer asked for", stray)
    check(len(gave_up) <= max(1, len(customers) // 100), "customers who could not finish", gave_up)
    for name, n in mix.items():
        check(n >= UNIT, f"too few '{name}' (need {UNIT})", n)
    check(not v.wrong_status, "payments not in Stripe's status", v.wrong_status)
    check(not v.wrong_money, "amount, currency or intent differ from Stripe's", v.wrong_money)
    check(not v.open_past_ttl, "payments left open past the TTL", v.open_past_ttl)
    check(not v.orphan_intents, "intents without a payment", v.orphan_intents)
    check(not v.duplicate_intents, "payments with more than one intent", v.duplicate_intents)
    # A payment Stripe never saw is judged like any other (expired past its TTL); with the
    # suite's short TTL a worker outage can legitimately outlast a 202's creation, and the
    # 202 minimum above and the bound on customers who could not finish cover the rest.
    check(not v.audit_wrong, "audit trails that disagree with Stripe", v.audit_wrong)
    check(not v.writes_without_audit, "status writes without an audit row", v.writes_without_audit)
    check(not v.illegal, "transitions out of a final status", v.illegal)
    check(not v.lost_events, "status changes never emitted", v.lost_events)
    check(not v.wrong_events, "wrong events", v.wrong_events)
    check(not v.wrong_headers, "events without their CloudEvents headers", v.wrong_headers)
    check(not v.events_without_change, "events with no change behind them", v.events_without_change)
    check(
        not v.inconsistent_duplicates, "one event_id, different events", v.inconsistent_duplicates
    )
    if exactly_once:
        check(v.duplicate_events == 0, "duplicate events under exactly-once", v.duplicate_events)
    check("lost" not in slot.statuses, "the replication slot lost WAL", slot.statuses)
    check(retained < SLOT_WAL_BOUND, "the slot retained too much WAL", retained)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
