"""/ops and /ops.json against the running stack, checked against Kafka, PostgreSQL and the
workers read directly. Values move between reads, so each number the page shows must lie within
what a read just before and a read just after allow; every row the page shows is checked, none
is skipped. Payments made through the API here must show up as status events; with Kafka
Connect unreachable the page says so, and why, and still shows the rest."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from playwright.sync_api import Browser, Page

import api
from payments.settings import Settings
from tests import support_api
from tests.browser_support import chromium

pytestmark = pytest.mark.e2e
API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
SUCCEEDS = "4242424242424242"
DECLINED_WHEN_CHARGED = "4000000000000341"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def operator(s: Settings) -> dict[str, str]:
    """The operator credential (HTTP Basic) that /ops, /ops.json and /metrics want."""
    logins = s.operator_logins
    if not logins:
        pytest.fail(
            "OPERATOR_CREDENTIALS is empty (environment or .env): /ops is closed without an "
            "operator credential; set OPERATOR_CREDENTIALS=user:password for the stack"
        )
    user, password = next(iter(logins.items()))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def client(s: Settings) -> requests.Session:
    """The payment API as a client uses it (with an API key when keys are configured)."""
    session = requests.Session()
    keys = sorted(s.api_key_tenants)
    if keys:
        session.headers["Authorization"] = f"Bearer {keys[0]}"
    ready = session.get(f"{API}/readyz", timeout=10)
    assert ready.status_code == 200, f"API at {API} not ready: {ready.text}"
    return session


def open_ops(browser: Browser, base: str, headers: dict[str, str]) -> Page:
    page = browser.new_page(extra_http_headers=headers)
    response = page.goto(f"{base}/ops", timeout=30_000)
    assert response is not None and response.status == 200
    return page


def cells(page: Page, selector: str) -> list[tuple[dict[str, str], str]]:
    """Every element matching ``selector``: its data-* attributes and its text."""
    found: list[tuple[dict[str, str], str]] = page.eval_on_selector_all(
        selector,
        "els => els.map(e => [Object.assign({}, e.dataset), e.innerText.trim()])",
    )
    return found


# ----------------------------------------------------------------------------- what the parts say


class Truth:
    """Kafka, PostgreSQL, Connect and the workers read directly, as an operator would check."""

    def __init__(self, s: Settings, operator: dict[str, str]) -> None:
        self.s = s
        self.operator = operator
        self.admin = KafkaAdminClient(
            bootstrap_servers=s.kafka_bootstrap_servers, request_timeout_ms=10_000
        )
        self.consumer = KafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers, request_timeout_ms=20_000
        )

    def close(self) -> None:
        self.admin.close()
        self.consumer.close()

    def topics(self) -> set[str]:
        return {t["name"] for t in self.admin.describe_topics() if not t.get("is_internal")}

    def ends(self, topics: set[str]) -> dict[tuple[str, int], int]:
        tps = [
            TopicPartition(t, p)
            for t in sorted(topics)
            for p in sorted(self.consumer.partitions_for_topic(t) or [])
        ]
        return {(tp.topic, tp.partition): o for tp, o in self.consumer.end_offsets(tps).items()}

    def committed(self) -> dict[tuple[str, str, int], int]:
        """(group, topic, partition) -> committed offset, for every group."""
        groups = [str(g["group_id"]) for g in self.admin.list_groups()]
        found = self.admin.list_group_offsets({g: None for g in groups}) if groups else {}
        return {
            (group, tp.topic, tp.partition): o.offset
            for group, offsets in found.items()
            for tp, o in offsets.items()
        }

    def members(self, group: str) -> int:
        return len(self.admin.describe_groups([group])[group]["members"])

    def pg(self) -> dict[str, Any]:
        """Current WAL position, each slot's confirmed position, each replica's replay position
        (as byte numbers)."""
        with psycopg.connect(self.s.database_url, autocommit=True) as conn:
            (lsn,) = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
            ).fetchone() or (0,)
            slots = dict(
                conn.execute(
                    "SELECT slot_name, pg_wal_lsn_diff(coalesce(confirmed_flush_lsn, restart_lsn),"
                    " '0/0')::bigint FROM pg_replication_slots"
                ).fetchall()
            )
            replicas = {
                name: (pid, pos)
                for name, pid, pos in conn.execute(
                    "SELECT application_name, pid, pg_wal_lsn_diff(replay_lsn, '0/0')::bigint "
                    "FROM pg_stat_replication WHERE state = 'streaming'"
                ).fetchall()
            }
        return {"lsn": lsn, "slots": slots, "replicas": replicas}

    def connector(self) -> Any:
        url = f"{self.s.kafka_connect_url}/connectors/{self.s.cdc_connector_name}/status"
        return requests.get(url, timeout=10).json()

    def worker_post(self, url: str, path: str) -> dict[str, Any]:
        r = requests.post(f"{url}{path}", timeout=300, headers=self.operator)
        assert r.status_code == 200, f"worker at {url}: HTTP {r.status_code} {r.text[:200]}"
        body: dict[str, Any] = r.json()
        return body

    def worker_stats(self) -> dict[str, dict[str, Any]]:
        """What each worker of the stack (WORKER_URL lists them all) says of itself on
        ``/stats/``: its active and standby partitions, open payments, last cycle."""
        found = {}
        for url in self.s.worker_urls:
            r = requests.get(f"{url}/stats/", timeout=10, headers=self.operator)
            assert r.status_code == 200, f"worker at {url}: HTTP {r.status_code} {r.text[:200]}"
            found[url.rstrip("/")] = r.json()
        return found

    def record(self, topic: str, partition: int, offset: int) -> dict[str, Any]:
        """The status event at ``offset`` of ``partition``, its key and its JSON value."""
        tp = TopicPartition(topic, partition)
        self.consumer.assign([tp])
        self.consumer.seek(tp, offset)
        for _ in range(40):
            for r in self.consumer.poll(timeout_ms=500).get(tp, []):
                if r.offset == offset:
                    return {"key": r.key.decode(), **json.loads(r.value)}
        raise AssertionError(f"no record at {topic}/{partition}@{offset}")


@pytest.fixture(scope="module")
def truth(s: Settings, operator: dict[str, str]) -> Iterator[Truth]:
    t = Truth(s, operator)
    yield t
    t.close()


# ----------------------------------------------------------------------------- payments -> events


def create(client: requests.Session, amount: int) -> dict[str, Any]:
    r = client.post(
        f"{API}/payments",
        timeout=30,
        headers={"Idempotency-Key": f"e2e-ops-{uuid4()}"},
        json={"amount_minor": amount, "currency": "eur", "metadata": {"e2e": "ops"}},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def ops_json(operator: dict[str, str]) -> dict[str, Any]:
    r = requests.get(f"{API}/ops.json", headers=operator, timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture(scope="module")
def made(
    client: requests.Session, s: Settings, operator: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Three payments made through the API and moved by Stripe's side (paid, declined) and by
    the API (canceled); what each one's status event must say; and the first /ops.json that
    shows all three events (the test fails if they never show up)."""
    stripe = support_api.LocalStripe(s)
    paid, declined, canceled = create(client, 1999), create(client, 2501), create(client, 307)
    status, intent = stripe.pay(paid["provider_payment_id"], SUCCEEDS)
    assert status == 200 and intent["status"] == "succeeded", intent
    status, error = stripe.pay(declined["provider_payment_id"], DECLINED_WHEN_CHARGED)
    assert status == 402, error
    r = client.post(f"{API}/payments/{canceled['id']}/cancel", timeout=30)
    assert r.status_code == 200, r.text
    # What Stripe's side of the story says each payment's one status change is. A cancel asked
    # through the API may be recorded by the API or, first, by Stripe's canceled webhook.
    expected = {
        paid["id"]: ("succeeded", {"webhook"}, 1999),
        declined["id"]: ("failed", {"webhook"}, 2501),
        canceled["id"]: ("canceled", {"api", "webhook"}, 307),
    }

    def ours_on_the_page() -> dict[str, Any] | None:
        snap = ops_json(operator)
        events = snap["sections"]["events"]
        assert events["ok"], events["error"]
        shown = {e.get("payment_id") for e in events["data"]}
        return snap if set(expected) <= shown else None

    deadline = time.monotonic() + 90
    snap = ours_on_the_page()
    while snap is None and time.monotonic() < deadline:
        time.sleep(1)
        snap = ours_on_the_page()
    if snap is None:
        seen = ops_json(operator)["sections"]["events"]["data"]
        pytest.fail(f"the status events of {sorted(expected)} never reached /ops.json: {seen}")
    return expected, snap


def test_payments_made_through_the_api_show_up_as_the_latest_status_events(
    made: tuple[dict[str, Any], dict[str, Any]], s: Settings, truth: Truth
) -> None:
    expected, snap = made
    rows = snap["sections"]["events"]["data"]
    assert len(expected) <= len(rows) <= 5
    # newest first (broker time, then offset)
    assert [(e["timestamp"], e["offset"]) for e in rows] == sorted(
        ((e["timestamp"], e["offset"]) for e in rows), reverse=True
    )
    for row in rows:  # every row is the record Kafka holds at that place
        record = truth.record(s.status_topic, row["partition"], row["offset"])
        for name in (
            "event_id",
            "payment_id",
            "previous_status",
            "status",
            "source",
            "amount_minor",
            "currency",
            "version",
            "occurred_at",
        ):
            assert row[name] == record[name], (name, row, record)
        assert row["key"] == record["key"] == record["payment_id"]
        assert row["event_id"] == f"{row['payment_id']}:{row['version']}"
    for payment_id, (status_to, sources, amount) in expected.items():
        (row,) = [e for e in rows if e["payment_id"] == payment_id]
        assert (row["previous_status"], row["status"]) == ("pending", status_to), row
        assert row["source"] in sources, row
        assert (row["amount_minor"], row["currency"]) == (amount, "eur"), row


# ----------------------------------------------------------------------------- the page


def test_ops_page_shows_what_kafka_postgres_connect_and_the_workers_say(
    browser: Browser,
    truth: Truth,
    s: Settings,
    operator: dict[str, str],
    made: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    topics_before = truth.topics()
    ends_before, committed_before = truth.ends(topics_before), truth.committed()
    pg_before, connector_before = truth.pg(), truth.connector()
    members_before = truth.members(s.worker_app_id)
    for url in s.worker_urls:  # a cycle of each (`payments-worker reconcile-now`) to compare
        truth.worker_post(url, "/reconcile/")
    workers_before = truth.worker_stats()

    page = open_ops(browser, API, operator)

    workers_after = truth.worker_stats()
    pg_after, connector_after = truth.pg(), truth.connector()
    topics_after = truth.topics()
    committed_after, ends_after = truth.committed(), truth.ends(topics_after)
    members_after = truth.members(s.worker_app_id)

    # Every section could be read: the whole stack is up.
    for section in ["topics", "events", "consumer_groups", "connector", "slots", "replicas"]:
        box = page.locator(f"#section-{section}")
        assert box.get_attribute("data-ok") == "true", box.inner_text()

    # Topics: the page lists every topic Kafka has, and every end offset it shows lies within
    # what Kafka said before and after (end offsets only grow; a topic made in between had 0).
    shown = {attrs["topic"] for attrs, _ in cells(page, "tr.topic")}
    assert topics_before <= shown <= topics_after
    offsets = cells(page, ".end-offset")
    assert len(offsets) == len(ends_after)
    for attrs, text in offsets:
        key = (attrs["topic"], int(attrs["partition"]))
        assert ends_before.get(key, 0) <= int(text) <= ends_after[key], (key, text)

    # Consumer lag, every partition of every group the page shows: end minus committed, both
    # moving forward. A partition first committed between the reads had nothing committed.
    lags = cells(page, ".partition-lag")
    assert lags, "the page shows no consumer lag at all"
    for attrs, text in lags:
        key = (attrs["group"], attrs["topic"], int(attrs["partition"]))
        tp = key[1:]
        assert key in committed_after, f"{key} on the page but not committed in Kafka"
        low = max(0, ends_before.get(tp, 0) - committed_after[key])
        high = ends_after[tp] - committed_before.get(key, 0)
        assert low <= int(text) <= high, (key, low, text, high)
    for attrs, text in cells(page, ".group-lag"):
        parts = [int(t) for a, t in lags if a["group"] == attrs["group"]]
        assert text == ("—" if not parts else str(sum(parts))), (attrs, text)

    # Replication slots: lag = current WAL minus the slot's confirmed position.
    slots = cells(page, ".slot-lag")
    assert {a["slot"] for a, _ in slots} == set(pg_before["slots"]) == set(pg_after["slots"])
    assert "debezium_payments" in pg_before["slots"]
    for attrs, text in slots:
        slot = attrs["slot"]
        low = max(0, pg_before["lsn"] - pg_after["slots"][slot])
        high = pg_after["lsn"] - pg_before["slots"][slot]
        assert low <= int(text) <= high, (slot, low, text, high)

    # Replicas: replay lag in bytes, from pg_stat_replication on the primary; the same
    # walsender (pid) before and after, or the bounds mean nothing.
    replicas = cells(page, ".replay-lag-bytes")
    assert {a["replica"] for a, _ in replicas} == {"replica1", "replica2"}
    for attrs, text in replicas:
        name = attrs["replica"]
        (pid, replayed_before), (pid_after, replayed_after) = (
            pg_before["replicas"][name],
            pg_after["replicas"][name],
        )
        assert pid == pid_after, f"{name} reconnected while the page was read"
        low = max(0, pg_before["lsn"] - replayed_after)
        high = pg_after["lsn"] - replayed_before
        assert low <= int(text) <= high, (name, low, text, high)

    # The connector and each of its tasks, as Connect's REST API says them.
    assert connector_before["connector"]["state"] == connector_after["connector"]["state"]
    assert page.locator("#connector-state").inner_text() == connector_after["connector"]["state"]
    tasks = cells(page, "tr.task")
    assert {int(a["task"]) for a, _ in tasks} == {t["id"] for t in connector_after["tasks"]}
    for attrs, text in tasks:
        (state,) = [t["state"] for t in connector_after["tasks"] if t["id"] == int(attrs["task"])]
        assert text.endswith(state), (attrs, text)

    # The latest status events are records of the topic (the payments test checks each field).
    events = cells(page, "tr.event")
    status_ends = sum(n for (topic, _), n in ends_before.items() if topic == s.status_topic)
    assert status_ends >= len(made[0])  # the payments made above have their events
    assert len(events) == 5 if status_ends >= 5 else len(events) == status_ends
    for attrs, _ in events:
        record = truth.record(s.status_topic, int(attrs["partition"]), int(attrs["offset"]))
        assert attrs["eventId"] == record["event_id"], (attrs, record)

    # Workers: one row per member of the worker group, each a worker of the stack; each row
    # shows what that worker's /stats/ says, read just before and just after the page: its
    # active and standby partitions (which must not have moved meanwhile), an open count
    # between the two reads, its last cycle (one of the two reads'); the active ones together
    # cover the change topic.
    assert members_before == members_after, "the worker group changed while the page was read"
    assert page.locator("#section-worker").get_attribute("data-ok") == "true"
    assert page.locator("#workers-found-in").get_attribute("data-found-in") == "group"
    workers = cells(page, "tr.worker")
    assert len(workers) == members_after
    urls = [a["workerUrl"] for a, _ in workers]
    assert sorted(urls) == sorted(workers_after), "a row for each worker of the stack"

    def shown(text: str) -> list[int]:
        return [int(p) for p in text.split(",")] if text != "—" else []

    covered: list[int] = []
    for kind in ("active", "standby"):
        rows = cells(page, f".{kind}-partitions")
        assert sorted(a["workerUrl"] for a, _ in rows) == sorted(urls)
        for attrs, text in rows:
            url = attrs["workerUrl"]
            said = workers_before[url]["partitions"][kind]
            assert said == workers_after[url]["partitions"][kind], f"{url}'s {kind} moved"
            assert shown(text) == said, (url, kind, text, said)
            covered += said if kind == "active" else []
    partitions = {p for (topic, p) in ends_after if topic == s.cdc_payments_topic}
    assert sorted(covered) == sorted(partitions)

    counts = cells(page, ".open-count")
    assert sorted(a["workerUrl"] for a, _ in counts) == sorted(urls)
    for attrs, text in counts:
        url = attrs["workerUrl"]
        reads = workers_before[url]["open"]["count"], workers_after[url]["open"]["count"]
        assert min(reads) <= int(text) <= max(reads), (url, text, reads)

    for url in urls:
        cycle = page.locator(f'tr.worker[data-worker-url="{url}"] .cycle')
        assert cycle.count() == 1, f"{url}: no last cycle shown, though it just ran one"
        reported = {
            c["started_at"]: c
            for c in (workers_before[url]["last_cycle"], workers_after[url]["last_cycle"])
            if c is not None
        }
        said = reported.get(float(cycle.get_attribute("data-started-at") or "nan"))
        assert said is not None, f"{url}: the page shows a cycle the worker never reported"
        assert cycle.inner_text() == (
            f"{said['resolved']} resolved, {said['expired']} expired, {said['errors']} errors, "
            f"{said['stripe_calls']} Stripe calls, {said['duration_seconds']:.2f} s"
        ), url
    page.close()


def test_the_operator_endpoints_want_the_operator_credential(operator: dict[str, str]) -> None:
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ops:not-the-password").decode()}
    for path in ("/ops", "/ops.json", "/metrics"):
        for headers in ({}, wrong):
            r = requests.get(f"{API}{path}", headers=headers, timeout=30)
            assert r.status_code == 401, (path, r.status_code)
            assert r.headers["Content-Type"] == "application/problem+json"
            assert r.headers["WWW-Authenticate"] == 'Basic realm="payments-ops"'
        assert requests.get(f"{API}{path}", headers=operator, timeout=30).status_code == 200


def test_connect_unreachable_is_named_with_the_reason_and_the_rest_still_shows(
    browser: Browser, s: Settings, operator: dict[str, str]
) -> None:
    closed = support_api.free_port()  # nothing listens there
    settings = support_api.settings(kafka_connect_url=f"http://127.0.0.1:{closed}")
    app = api.create_app(settings)
    try:
        with support_api.serve(app) as base:
            page = open_ops(browser, base, operator)
            connector = page.locator("#section-connector")
            assert connector.get_attribute("data-ok") == "false"
            assert "UNAVAILABLE" in connector.locator(".status").inner_text()
            error = page.locator("#error-connector").inner_text()
            assert f"Kafka Connect at http://127.0.0.1:{closed} unreachable" in error
            assert "Connection refused" in error
            assert page.locator("#overall").inner_text() == "DEGRADED"
            for other in ["topics", "consumer_groups", "slots", "replicas", "worker"]:
                assert page.locator(f"#section-{other}").get_attribute("data-ok") == "true"
            assert page.locator(f'tr.topic[data-topic="{s.cdc_payments_topic}"]').count() == 1
            page.close()

            r = requests.get(f"{base}/ops.json", headers=operator, timeout=30)
            assert r.status_code == 200
            sections = r.json()["sections"]
            assert sections["connector"]["ok"] is False
            assert "Connection refused" in sections["connector"]["error"]
            assert sections["slots"]["ok"] and sections["topics"]["ok"]
    finally:
        for close in app.extensions["payments"].closers:
            close()
