"""The /ops page in headless Chromium (Debian's chromium via Playwright), against the running stack:
the numbers it shows agree with what Kafka and PostgreSQL say, read just before and just after
the page (values move between reads, so each must lie within what the two reads allow); and with
Kafka Connect unreachable the page says so, and why, and still shows the rest."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

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
GROUP = "payments-worker"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _headers(s: Settings) -> dict[str, str]:
    keys = sorted(s.api_key_tenants)
    return {"Authorization": f"Bearer {keys[0]}"} if keys else {}


def open_ops(browser: Browser, base: str, s: Settings) -> Page:
    page = browser.new_page(extra_http_headers=_headers(s))
    response = page.goto(f"{base}/ops", timeout=30_000)
    assert response is not None and response.status == 200
    return page


def number(page: Page, selector: str) -> int:
    cell = page.locator(selector)
    assert cell.count() == 1, f"expected one {selector} on the page, found {cell.count()}"
    return int(cell.inner_text().strip())


# ----------------------------------------------------------------------------- what the parts say


class Truth:
    """Kafka and PostgreSQL read directly, the way an operator would check the page."""

    def __init__(self, s: Settings) -> None:
        self.s = s
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

    def ends(self, topics: list[str]) -> dict[tuple[str, int], int]:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(self.consumer.partitions_for_topic(t) or [])
        ]
        return {(tp.topic, tp.partition): o for tp, o in self.consumer.end_offsets(tps).items()}

    def committed(self) -> dict[tuple[str, int], int]:
        found = self.admin.list_group_offsets({GROUP: None})[GROUP]
        return {(tp.topic, tp.partition): o.offset for tp, o in found.items()}

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

    def recent_event_ids(self, per_partition: int = 200) -> set[str]:
        import json

        topic = self.s.status_topic
        ends = self.ends([topic])
        tps = [TopicPartition(topic, p) for (_, p) in ends]
        self.consumer.assign(tps)
        for tp in tps:
            self.consumer.seek(tp, max(0, ends[(topic, tp.partition)] - per_partition))
        ids: set[str] = set()
        remaining = {tp.partition for tp in tps if ends[(topic, tp.partition)] > 0}
        for _ in range(100):
            if not remaining:
                break
            for tp, records in self.consumer.poll(timeout_ms=500).items():
                for r in records:
                    ids.add(json.loads(r.value)["event_id"])
                    if r.offset >= ends[(topic, tp.partition)] - 1:
                        remaining.discard(tp.partition)
        assert not remaining, f"could not read the end of {topic} partitions {remaining}"
        return ids


@pytest.fixture(scope="module")
def truth(s: Settings) -> Iterator[Truth]:
    t = Truth(s)
    yield t
    t.close()


# ----------------------------------------------------------------------------- the tests


def test_ops_page_shows_what_kafka_and_postgres_say(
    browser: Browser, truth: Truth, s: Settings
) -> None:
    watched = [s.cdc_payments_topic, s.status_topic]
    topics_before = truth.topics()
    ends_before, committed_before = truth.ends(watched), truth.committed()
    pg_before, connector_before = truth.pg(), truth.connector()

    page = open_ops(browser, API, s)

    pg_after, connector_after = truth.pg(), truth.connector()
    ends_after, committed_after = truth.ends(watched), truth.committed()
    topics_after = truth.topics()
    event_ids = truth.recent_event_ids()

    # Every section could be read: the whole stack is up.
    for section in ["topics", "events", "consumer_groups", "connector", "slots", "replicas"]:
        box = page.locator(f"#section-{section}")
        assert box.get_attribute("data-ok") == "true", box.inner_text()

    # Topics: the page lists every topic Kafka has, and each end offset lies within what Kafka
    # said before and after (end offsets only grow).
    shown = {
        page.locator("tr.topic").nth(i).get_attribute("data-topic")
        for i in range(page.locator("tr.topic").count())
    }
    assert topics_before <= shown <= topics_after
    for (topic, partition), before in ends_before.items():
        value = number(page, f'.end-offset[data-topic="{topic}"][data-partition="{partition}"]')
        assert before <= value <= ends_after[(topic, partition)], (topic, partition)

    # Consumer lag of the worker's group, per partition: end minus committed, both moving forward.
    for (topic, partition), committed in committed_before.items():
        if (topic, partition) not in ends_before:
            continue
        value = number(
            page,
            f'.partition-lag[data-group="{GROUP}"][data-topic="{topic}"]'
            f'[data-partition="{partition}"]',
        )
        low = max(0, ends_before[(topic, partition)] - committed_after[(topic, partition)])
        high = ends_after[(topic, partition)] - committed
        assert low <= value <= high, (topic, partition, low, value, high)
    total = number(page, f'.group-lag[data-group="{GROUP}"]')
    parts = page.locator(f'.partition-lag[data-group="{GROUP}"]')
    assert total == sum(int(parts.nth(i).inner_text()) for i in range(parts.count()))

    # Replication slots: lag = current WAL minus the slot's confirmed position.
    assert "debezium_payments" in pg_before["slots"]
    for slot, confirmed_before in pg_before["slots"].items():
        if slot not in pg_after["slots"]:
            continue
        value = number(page, f'.slot-lag[data-slot="{slot}"]')
        low = max(0, pg_before["lsn"] - pg_after["slots"][slot])
        high = pg_after["lsn"] - confirmed_before
        assert low <= value <= high, (slot, low, value, high)

    # Replicas: replay lag in bytes, from pg_stat_replication on the primary.
    assert {"replica1", "replica2"} <= set(pg_before["replicas"])
    for name, (pid, replayed_before) in pg_before["replicas"].items():
        if name.startswith("Debezium") or pg_after["replicas"].get(name, (None,))[0] != pid:
            continue
        value = number(page, f'.replay-lag-bytes[data-replica="{name}"]')
        low = max(0, pg_before["lsn"] - pg_after["replicas"][name][1])
        high = pg_after["lsn"] - replayed_before
        assert low <= value <= high, (name, low, value, high)

    # The connector's state, as Connect's REST API says it.
    if connector_before["connector"]["state"] == connector_after["connector"]["state"]:
        assert (
            page.locator("#connector-state").inner_text() == connector_after["connector"]["state"]
        )

    # The latest status events are real records of the topic.
    rows = page.locator("tr.event")
    shown_ids = [rows.nth(i).get_attribute("data-event-id") for i in range(rows.count())]
    events_before = sum(n for (topic, _), n in ends_before.items() if topic == s.status_topic)
    assert min(5, events_before) <= len(shown_ids) <= 5
    assert set(shown_ids) <= event_ids

    # The worker's pending count is shown as a number.
    assert page.locator("#section-worker").get_attribute("data-ok") == "true"
    assert number(page, ".pending-count") >= 0
    page.close()


def test_connect_unreachable_is_named_with_the_reason_and_the_rest_still_shows(
    browser: Browser, s: Settings
) -> None:
    closed = support_api.free_port()  # nothing listens there
    settings = support_api.settings(kafka_connect_url=f"http://127.0.0.1:{closed}")
    app = api.create_app(settings)
    try:
        with support_api.serve(app) as base:
            page = open_ops(browser, base, settings)
            connector = page.locator("#section-connector")
            assert connector.get_attribute("data-ok") == "false"
            assert "UNAVAILABLE" in connector.locator(".status").inner_text()
            error = page.locator("#error-connector").inner_text()
            assert f"Kafka Connect at http://127.0.0.1:{closed} unreachable" in error
            assert "Connection refused" in error
            assert page.locator("#overall").inner_text() == "DEGRADED"
            for other in ["topics", "consumer_groups", "slots", "replicas"]:
                assert page.locator(f"#section-{other}").get_attribute("data-ok") == "true"
            assert page.locator(f'tr.topic[data-topic="{s.cdc_payments_topic}"]').count() == 1
            page.close()

            r = requests.get(f"{base}/ops.json", headers=_headers(settings), timeout=30)
            assert r.status_code == 200
            sections = r.json()["sections"]
            assert sections["connector"]["ok"] is False
            assert "Connection refused" in sections["connector"]["error"]
            assert sections["slots"]["ok"] and sections["topics"]["ok"]
    finally:
        for close in app.extensions["payments"].closers:
            close()
