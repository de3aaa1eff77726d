"""Helpers for tests that drive the local stack: insert rows, read the CDC topic, kill parts."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from payments.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# The secrets `make up` generates into .env (scripts/localstack/envfile.py).
SECRET_NAMES = (
    "POSTGRES_PASSWORD",
    "PAYMENTS_DB_PASSWORD",
    "DEBEZIUM_DB_PASSWORD",
    "REPLICATOR_DB_PASSWORD",
    "API_KEYS",
    "OPERATOR_CREDENTIALS",
    "CHECKOUT_TOKEN_SECRET",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_SECRET_KEY",
)


def stack_dir() -> Path:
    return (ROOT / os.environ.get("STACK_DIR", ".stack")).resolve()


def generated_env() -> dict[str, str]:
    """The running stack's generated .env (what Settings() reads in the tests)."""
    from dotenv import dotenv_values

    path = ROOT / ".env"
    if not path.exists():
        raise AssertionError(f"{path} is missing: `make up` writes it (ports and secrets)")
    return {k: v or "" for k, v in dotenv_values(path).items()}


def secret_values(env: dict[str, str]) -> list[str]:
    """Every generated secret as it could leak: whole values and their parts (each API key,
    the operator's password)."""
    found: list[str] = []
    for name in SECRET_NAMES:
        value = env.get(name, "")
        found.append(value)
        for pair in value.split(","):
            found.append(pair.split(":", 1)[-1])
    return sorted({v for v in found if len(v) >= 12})


def readme_section(title: str) -> str:
    """The text of the README's ``## title`` section, up to the next ``## `` heading."""
    readme = (ROOT / "README.md").read_text()
    head = f"\n## {title}\n"
    assert head in readme, f"the README has no '## {title}' section"
    return readme.split(head, 1)[1].split("\n## ", 1)[0]


def stack(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/stack ARGS`` (what a user runs) and return its result."""
    result = subprocess.run(
        [str(ROOT / "scripts/stack"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"scripts/stack {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def insert_payment(conn: psycopg.Connection[Any], amount_minor: int = 1000) -> uuid.UUID:
    payment_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO payments (id, idempotency_key, request_hash, amount_minor, currency) "
        "VALUES (%s, %s, 'test', %s, 'usd')",
        (payment_id, f"cdc-test-{payment_id}", amount_minor),
    )
    return payment_id


class CdcTail:
    """Reads a topic (the CDC topic by default) from its current end: only what happens after
    it was made."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.topic = topic or settings.cdc_payments_topic
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            request_timeout_ms=20_000,
        )
        self.seen: list[Any] = []
        parts = self._partitions()
        self.consumer.assign(parts)
        self.consumer.seek_to_end(*parts)
        for tp in parts:  # resolve the lazy seek now, before anything is inserted
            self.consumer.position(tp)

    def _partitions(self) -> list[TopicPartition]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = self.consumer.partitions_for_topic(self.topic)
            if found:
                return [TopicPartition(self.topic, p) for p in sorted(found)]
            self.consumer.topics()  # refresh metadata
            time.sleep(0.5)
        raise AssertionError(f"topic {self.topic} does not exist after 30 s")

    def records(self, timeout: float, stop: Callable[[list[Any]], bool]) -> list[Any]:
        """Every record read so far (kept across calls), reading on until ``stop(records)`` or
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stop(self.seen):
            for records in self.consumer.poll(timeout_ms=500).values():
                self.seen.extend(records)
        return self.seen

    def events_for(self, payment_id: str, timeout: float, at_least: int = 1) -> list[Any]:
        """``payment-status-update`` values of one payment seen within ``timeout``."""

        def mine(records: list[Any]) -> list[Any]:
            return [r for r in records if r.key == payment_id.encode()]

        found = self.records(timeout, lambda got: len(mine(got)) >= at_least)
        return [json.loads(r.value) for r in mine(found)]

    def collect(
        self, wanted: Iterable[tuple[str, str]], timeout: float = 60
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Wait for (payment id, op) pairs; return their envelopes (what arrived, at timeout),
        each with the ``_partition`` and ``_offset`` it was read at."""
        missing = set(wanted)
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while missing and time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.value is None:
                        continue
                    envelope = json.loads(record.value)
                    row = envelope.get("after") or envelope.get("before") or {}
                    key = (str(row.get("id")), str(envelope.get("op")))
                    envelope["_partition"] = record.partition
                    envelope["_offset"] = record.offset
                    seen.setdefault(key, envelope)
                    missing.discard(key)
        return seen

    def close(self) -> None:
        self.consumer.close()


class TopicSince:
    """Everything written to a topic after this object was made, read back on demand: the
    start offsets are taken now; ``read`` assigns a fresh consumer there (so it does not care
    what happened to the broker in between) and reads at least to the end offsets of the time
    of the call."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.servers = settings.kafka_bootstrap_servers
        self.topic = topic
        consumer = self._consumer()
        try:
            self.start = {tp.partition: offset for tp, offset in self._ends(consumer).items()}
        finally:
            consumer.close()

    def _consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            bootstrap_servers=self.servers, enable_auto_commit=False, request_timeout_ms=20_000
        )

    def _ends(self, consumer: KafkaConsumer) -> dict[TopicPartition, int]:
        deadline = time.monotonic() + 60
        while True:
            found = consumer.partitions_for_topic(self.topic)
            if found:
                parts = [TopicPartition(self.topic, p) for p in sorted(found)]
                return dict(consumer.end_offsets(parts))
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {self.topic} does not exist after 60 s")
            consumer.topics()  # refresh metadata
            time.sleep(0.5)

    def read(
        self, timeout: float = 120, stop: Callable[[list[Any]], bool] = lambda _: True
    ) -> list[Any]:
        """The records since the start offsets, up to at least today's end offsets, then on
        until ``stop(records)`` or ``timeout`` seconds."""
        consumer = self._consumer()
        try:
            ends = self._ends(consumer)
            consumer.assign(list(ends))
            for tp in ends:
                consumer.seek(tp, self.start.get(tp.partition, 0))
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=500).values():
                    records.extend(batch)
                at_end = all(consumer.position(tp) >= end for tp, end in ends.items())
                if at_end and stop(records):
                    break
            return records
        finally:
            consumer.close()


def replica_ports(settings: Settings) -> list[int]:
    """The ports of the replicas in ``DATABASE_READ_URL`` (libpq multi-host)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(settings.database_read_url)
    return [int(p) for p in str(params.get("port") or "5432").split(",")]


class ReplayPaused:
    """Every replica stops applying WAL (it still receives it) until the block ends: what a
    replica shows meanwhile is older than the primary, so a read that sees the old value came
    from a replica. Needs the stack's superuser (``postgres``, loopback only)."""

    def __init__(self, settings: Settings) -> None:
        self.ports = replica_ports(settings)
        self.conns: list[psycopg.Connection[Any]] = []

    def __enter__(self) -> None:
        for port in self.ports:
            self.conns.append(
                psycopg.connect(
                    host="127.0.0.1",
                    port=port,
                    user="postgres",
                    # The stack's generated superuser password (`make up` writes it to .env).
                    password=os.environ.get("POSTGRES_PASSWORD")
                    or generated_env().get("POSTGRES_PASSWORD")
                    or "",
                    dbname="postgres",
                    autocommit=True,
                    connect_timeout=5,
                )
            )
        try:
            for conn in self.conns:
                conn.execute("SELECT pg_wal_replay_pause()")
            for conn in self.conns:
                deadline = time.monotonic() + 10
                while conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() != (
                    "paused",
                ):
                    if time.monotonic() > deadline:
                        raise AssertionError("a replica did not pause its replay within 10 s")
                    time.sleep(0.05)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        for conn in self.conns:
            conn.execute("SELECT pg_wal_replay_resume()")
            conn.close()
        self.conns.clear()


def audit_sources(settings: Settings, payment_id: str) -> list[tuple[str, str, str]]:
    """A payment's audit trail as (from, to, source), oldest first, from the primary."""
    with psycopg.connect(settings.database_url) as conn:
        return [
            (str(a), str(b), str(c))
            for a, b, c in conn.execute(
                "SELECT coalesce(from_status::text, ''), to_status::text, source::text "
                "FROM payment_events WHERE payment_id = %s ORDER BY id",
                (payment_id,),
            )
        ]
