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
        """Wait for (payment id, op) pairs; return their envelopes (what arrived, at timeout)."""
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
                    seen.setdefault(key, envelope)
                    missing.discard(key)
        return seen

    def close(self) -> None:
        self.consumer.close()
