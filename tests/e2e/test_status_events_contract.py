"""Real records of a live run against the AsyncAPI contract (api/asyncapi.yaml).

One run through the whole stack (API, localstripe, PostgreSQL, Debezium, Kafka, the worker):
payment A is paid, B is declined and then canceled through the API, C is canceled through the
API while pending, and one malformed record goes onto the change topic. Every record the run
left on every topic (read from the end offsets taken before it; other tests' records filtered
out by key) must match its channel's schemas; the status events' CloudEvents headers must agree
with their bodies; and the README's consumer, run as written, must print each event once
although one was delivered twice.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import requests
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.consumer.fetcher import ConsumerRecord

from payments.settings import Settings
from tests import asyncapi_support as contract
from tests import support_api
from tests.stack_support import readme_section

pytestmark = pytest.mark.e2e
API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
SUCCEEDS = "4242424242424242"
DECLINED_WHEN_CHARGED = "4000000000000341"
TIMEOUT = 90.0
# Records read back on the topics that are not about payments (heartbeats, Kafka Connect's):
# the run may be too short for them to write anything new.
HISTORY = 50


@dataclass
class LiveRun:
    """What the run did, and every record it left, by topic."""

    settings: Settings
    payments: dict[str, dict[str, Any]]  # "A" | "B" | "C" -> the API's answer at creation
    dead_letter_key: bytes
    dead_letter_value: bytes
    dead_letter_at: tuple[int, int]  # (partition, offset) of the malformed change record
    redelivered: ConsumerRecord | None = None  # the status record the test sent again
    records: dict[str, list[ConsumerRecord]] = field(default_factory=lambda: defaultdict(list))

    def ids(self) -> dict[str, str]:
        return {name: str(p["id"]) for name, p in self.payments.items()}

    def mine(self, record: ConsumerRecord) -> bool:
        key = record.key or b""
        own = [pid.encode() for pid in self.ids().values()]
        return key == self.dead_letter_key or any(pid in key for pid in own)

    def status_records(self, name: str | None = None) -> list[ConsumerRecord]:
        wanted = [self.ids()[name]] if name else list(self.ids().values())
        return [
            r
            for r in self.records[self.settings.status_topic]
            if r.key is not None and r.key.decode() in wanted
        ]


class TopicReader:
    """One consumer over every partition of the given topics, from the end offsets it finds
    when made (for the ``history`` topics: up to ``HISTORY`` records before them); what it
    reads accumulates in ``run.records``."""

    def __init__(self, settings: Settings, topics: list[str], history: set[str]) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            request_timeout_ms=20_000,
        )
        existing = self.consumer.topics()
        self.parts = [
            TopicPartition(topic, p)
            for topic in topics
            if topic in existing
            for p in sorted(self.consumer.partitions_for_topic(topic) or [])
        ]
        self.consumer.assign(self.parts)
        begins = self.consumer.beginning_offsets(self.parts)
        ends = self.consumer.end_offsets(self.parts)
        for tp in self.parts:
            back = HISTORY if tp.topic in history else 0
            self.consumer.seek(tp, max(begins[tp], ends[tp] - back))

    def read_until(self, run: LiveRun, done: Callable[[LiveRun], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not done(run):
            if time.monotonic() > deadline:
                raise AssertionError(f"within {TIMEOUT:.0f}s: {what} never came")
            for batch in self.consumer.poll(timeout_ms=500).values():
                for record in batch:
                    run.records[record.topic].append(record)

    def drain(self, run: LiveRun) -> None:
        """Read up to the end offsets as they are now."""
        ends = self.consumer.end_offsets(self.parts)
        self.read_until(
            run, lambda _: all(self.consumer.position(tp) >= ends[tp] for tp in self.parts), "end"
        )

    def close(self) -> None:
        self.consumer.close()


def api_session(s: Settings) -> requests.Session:
    session = requests.Session()
    keys = sorted(s.api_key_tenants)
    if keys:  # when API keys are configured, any one of them
        session.headers["Authorization"] = f"Bearer {keys[0]}"
    ready = session.get(f"{API}/readyz", timeout=10)
    assert ready.status_code == 200, f"API at {API} not ready: {ready.text}"
    return session


def create(api: requests.Session, amount: int) -> dict[str, Any]:
    r = api.post(
        f"{API}/payments",
        timeout=30,
        headers={"Idempotency-Key": f"e2e-contract-{uuid.uuid4()}"},
        json={"amount_minor": amount, "currency": "usd"},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert body["provider_payment_id"], body
    return body


def types_of(run: LiveRun, name: str) -> list[str]:
    return [dict(r.headers).get("ce_type", b"").decode() for r in run.status_records(name)]


def payment_topics(s: Settings) -> set[str]:
    """Topics whose records are about one payment each (other tests' are filtered out)."""
    return {
        s.cdc_payments_topic,
        s.status_topic,
        s.dlq_topic,
        f"{s.worker_app_id}-open-payments-changelog",
        f"{s.worker_app_id}-last-emitted-changelog",
    }


@pytest.fixture(scope="module")
def live(s: Settings) -> Iterator[LiveRun]:
    doc = contract.document()
    topics = [channel["address"] for channel in doc["channels"].values()]
    reader = TopicReader(s, topics, history=set(topics) - payment_topics(s))
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers, acks="all")
    stripe = support_api.LocalStripe(s)
    api = api_session(s)
    try:
        payments = {"A": create(api, 2100), "B": create(api, 2200), "C": create(api, 2300)}
        bad_key = json.dumps({"id": str(uuid.uuid4())}).encode()
        bad_value = b'{"op": "u", "after": {"id": '  # cut short: never decodable
        sent = producer.send(s.cdc_payments_topic, key=bad_key, value=bad_value).get(timeout=30)
        run = LiveRun(s, payments, bad_key, bad_value, (sent.partition, sent.offset))

        status, intent = stripe.pay(payments["A"]["provider_payment_id"], SUCCEEDS)
        assert (status, intent.get("status")) == (200, "succeeded"), intent
        status, error = stripe.pay(payments["B"]["provider_payment_id"], DECLINED_WHEN_CHARGED)
        assert status == 402, error
        r = api.post(f"{API}/payments/{payments['C']['id']}/cancel", timeout=30)
        assert r.status_code == 200, r.text

        reader.read_until(run, lambda run: types_of(run, "B") != [], "B's failed event")
        # Deliver B's failed event a second time, byte for byte, on its own partition (what a
        # worker restart between send and commit does), before B's next event.
        (first,) = run.status_records("B")
        producer.send(
            first.topic,
            key=first.key,
            value=first.value,
            headers=list(first.headers),
            partition=first.partition,
        ).get(timeout=30)
        run.redelivered = first
        # A failed payment may still be canceled (the stand-in cannot retry a declined intent).
        r = api.post(f"{API}/payments/{payments['B']['id']}/cancel", timeout=30)
        assert r.status_code == 200, r.text

        def finished(run: LiveRun) -> bool:
            ids = run.ids()
            emitted = {
                r.key.decode(): json.loads(r.value)["s"]
                for r in run.records[f"{s.worker_app_id}-last-emitted-changelog"]
                if r.key and r.value and r.key.decode() in ids.values()
            }
            dead = [r for r in run.records[s.dlq_topic] if r.key == bad_key]
            return (
                len(types_of(run, "A")) >= 1
                and len(types_of(run, "B")) >= 3
                and len(types_of(run, "C")) >= 1
                and bool(dead)
                and emitted.get(ids["A"]) == "succeeded"
                and emitted.get(ids["B"]) == "canceled"
                and emitted.get(ids["C"]) == "canceled"
            )

        reader.read_until(run, finished, "every event, the dead letter and the table entries")
        reader.drain(run)
        yield run
    finally:
        producer.close()
        reader.close()


def test_every_record_of_the_run_matches_its_channel(live: LiveRun) -> None:
    s = live.settings
    by_payment = payment_topics(s)
    checker = contract.Contract()
    checked: dict[str, int] = defaultdict(int)
    problems = []
    for topic, records in live.records.items():
        for record in records:
            if topic in by_payment and not live.mine(record):
                continue  # another test's record
            if topic == s.cdc_payments_topic and record.key == live.dead_letter_key:
                continue  # the malformed record this test wrote: its DLQ copy is checked
            checked[topic] += 1
            for problem in checker.problems(topic, record.key, record.headers, record.value):
                problems.append(f"{topic}[{record.partition}]@{record.offset}: {problem}")
    assert problems == []
    # Each payment: insert, intent attached, status change(s) on the change topic.
    assert checked[s.cdc_payments_topic] >= 3 * 3
    assert checked[s.status_topic] == 5  # A 1, B 2 (+1 delivered again), C 1
    assert checked[s.dlq_topic] == 1
    assert checked[f"{s.worker_app_id}-open-payments-changelog"] >= 3
    assert checked[f"{s.worker_app_id}-last-emitted-changelog"] >= 3
    # Debezium's heartbeats and Kafka Connect's storage always hold records on a running stack.
    for topic in (
        f"{s.cdc_topic_prefix}.public.dbz_heartbeat",
        f"__debezium-heartbeat.{s.cdc_topic_prefix}",
        "connect-configs",
        "connect-offsets",
        "connect-status",
    ):
        assert checked[topic] >= 1, topic
    assert checked[f"{s.worker_app_id}-__assignor-__leader"] == 0


def test_status_events_carry_cloudevents_headers_that_agree_with_the_body(live: LiveRun) -> None:
    # What each payment went through, from Stripe's and the API's side of the story.
    expected = {
        "A": [("pending", "succeeded", "webhook")],
        "B": [("pending", "failed", "webhook"), ("failed", "canceled", "api")],
        "C": [("pending", "canceled", "api")],
    }
    amounts = {"A": 2100, "B": 2200, "C": 2300}
    for name, payment in live.payments.items():
        seen: dict[str, bytes] = {}
        story = []
        for record in live.status_records(name):
            headers = {k: v.decode() for k, v in record.headers}
            body = json.loads(record.value)
            assert headers["ce_specversion"] == "1.0"
            assert headers["ce_id"] == body["event_id"]
            assert headers["ce_source"] == "/payments-pipeline/payments"
            assert headers["ce_type"] == f"payments.payment.{body['status']}"
            assert headers["ce_subject"] == payment["id"] == body["payment_id"]
            assert record.key == payment["id"].encode()
            assert headers["content-type"] == "application/json"
            ce_time = datetime.fromisoformat(headers["ce_time"])
            assert ce_time.tzinfo is not None
            assert ce_time == datetime.fromisoformat(body["occurred_at"])
            assert (body["amount_minor"], body["currency"]) == (amounts[name], "usd")
            assert body["provider_payment_id"] == payment["provider_payment_id"]

            event = from_binary_event(
                KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
            )
            assert event.get_data() == body
            assert event.get_id() == body["event_id"]
            assert event.get_type() == headers["ce_type"]
            assert event.get_source() == "/payments-pipeline/payments"
            assert event.get_subject() == payment["id"]
            assert event.get_time() == ce_time
            assert event.get_datacontenttype() == "application/json"
            assert event.get_extension("partitionkey") == payment["id"]

            if body["event_id"] in seen:  # only the copy this test delivered again
                assert live.redelivered is not None
                assert body["event_id"] == dict(live.redelivered.headers)["ce_id"].decode()
                assert record.value == seen[body["event_id"]]
                continue
            seen[body["event_id"]] = record.value
            story.append((body["previous_status"], body["status"], body["source"]))
        assert story == expected[name], name


def test_the_dead_letter_keeps_the_record_and_says_why(live: LiveRun) -> None:
    s = live.settings
    (dead,) = [r for r in live.records[s.dlq_topic] if r.key == live.dead_letter_key]
    assert dead.value == live.dead_letter_value
    headers = {k: v.decode() for k, v in dead.headers}
    partition, offset = live.dead_letter_at
    assert headers["error.kind"] == "decode"
    assert headers["source.topic"] == s.cdc_payments_topic
    assert (headers["source.partition"], headers["source.offset"]) == (str(partition), str(offset))
    assert "JSON" in headers["error"], headers["error"]


# Kafka's own topics (offsets, transactions, share groups): not the pipeline's to describe.
KAFKAS_OWN = {"__consumer_offsets", "__transaction_state", "__share_group_state"}


def test_every_topic_on_the_broker_is_a_channel_with_its_partitions_and_policy(
    live: LiveRun,
) -> None:
    """The live broker, after the run has made every topic the pipeline produces or consumes
    (the DLQ included): each of its topics but Kafka's own has a channel, each channel a topic,
    with the partition count and cleanup policy the channel says."""
    admin = KafkaAdminClient(bootstrap_servers=live.settings.kafka_bootstrap_servers)
    try:
        on_broker = {
            t["name"]: len(t["partitions"])
            for t in admin.describe_topics()
            if t["name"] not in KAFKAS_OWN
        }
        doc = contract.document()
        channels = {ch["address"]: ch["bindings"]["kafka"] for ch in doc["channels"].values()}
        assert on_broker == {topic: b["partitions"] for topic, b in channels.items()}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in on_broker]
        )["topic"]
        for topic, binding in channels.items():
            set_policy = configs.get(topic, {}).get("cleanup.policy", {}).get("value")
            policy = sorted((set_policy or "delete").split(","))
            assert policy == sorted(binding["topicConfiguration"]["cleanup.policy"]), topic
    finally:
        admin.close()


def test_the_running_api_serves_the_contract_without_a_key() -> None:
    r = requests.get(f"{API}/asyncapi.yaml", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/yaml")
    assert r.content == contract.DOCUMENT.read_bytes()


def readme_consumer() -> str:
    """The first ```python block of the README's "Watching the topics" section."""
    found = re.search(r"```python\n(.*?)```", readme_section("Watching the topics"), re.S)
    assert found, "no ```python block in the README's 'Watching the topics'"
    return found.group(1)


def test_the_readme_consumer_prints_each_event_once(live: LiveRun) -> None:
    wanted = {dict(r.headers)["ce_id"].decode(): r.key.decode() for r in live.status_records()}
    assert len(wanted) == 4  # five records on the topic: one of them delivered twice
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": live.settings.kafka_bootstrap_servers}
    # B's canceled event comes after the copy of its failed one on the same partition: once
    # it is printed, the consumer has read past the duplicate.
    last = dict(live.status_records("B")[-1].headers)["ce_id"].decode()
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", readme_consumer()],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )

        def collect() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip("\n"))

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        deadline = time.monotonic() + TIMEOUT
        try:
            # Every partition's events, not only the last one's: the topic has several.
            while process.poll() is None and not all(
                any(ce_id in line for line in lines) for ce_id in wanted
            ):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(timeout=30)
            reader.join(timeout=10)
        stderr.seek(0)
        errors = stderr.read()[-2000:]
    assert any(last in line for line in lines), (
        f"the README consumer did not print {last} within {TIMEOUT:.0f}s: {lines[-5:]} {errors}"
    )
    printed = [line.split() for line in lines]
    for ce_id, payment_id in wanted.items():
        mine = [words for words in printed if ce_id in words]
        assert len(mine) == 1, (ce_id, mine, errors)
        assert payment_id in mine[0]
