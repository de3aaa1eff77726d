"""Change records as a re-snapshot (or a replay) writes them, on the real change topic, read
back from the real `payment-status-update`: what is announced, and what is never announced
again. And a record that is well-formed JSON but not a change the worker can apply goes to the
DLQ (decoding checks what the worker needs), while its partition keeps moving.

Each payment is a real row of the `payments` table; the snapshot records are Debezium's own
records of it (read from the change topic), turned into ``op: "r"`` as a re-snapshot writes
them, and produced on the same partition."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from payments.settings import Settings
from tests import support_api
from tests.stack_support import CdcTail, TopicSince, insert_payment

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(settings.database_url, autocommit=True) as c:
        yield c


def key_of(payment_id: str) -> bytes:
    return json.dumps({"id": payment_id}, separators=(",", ":")).encode()


def snapshot_of(envelope: dict[str, Any], **row: Any) -> dict[str, Any]:
    """Debezium's record of a payment as a re-snapshot writes it: ``op: "r"``, no before
    image, the row as it is now (``row``: the columns that changed since ``envelope``)."""
    record = {k: v for k, v in envelope.items() if not k.startswith("_")}
    source = {**record["source"], "snapshot": "true"}
    return {
        **record,
        "op": "r",
        "before": None,
        "after": {**record["after"], **row},
        "source": source,
    }


def produce(settings: Settings, records: list[tuple[str, dict[str, Any], int]]) -> dict[int, int]:
    """Each (payment id, value, partition) on the change topic, keyed as Debezium keys it; the
    last offset written per partition."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    written: dict[int, int] = {}
    try:
        for pid, value, partition in records:
            meta = producer.send(
                settings.cdc_payments_topic,
                key=key_of(pid),
                value=json.dumps(value).encode(),
                partition=partition,
            ).get(timeout=30)
            written[partition] = max(written.get(partition, -1), meta.offset)
    finally:
        producer.close(timeout=10)
    return written


def wait_until_handled(settings: Settings, written: dict[int, int]) -> None:
    """Until the worker's group committed past every offset in ``written`` (per partition): it
    acknowledges a change only once handled, its status event acknowledged by the broker."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    topic = settings.cdc_payments_topic

    def committed_past() -> bool:
        group = settings.worker_app_id
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return all(
            (meta := offsets.get(TopicPartition(topic, p))) is not None and meta.offset > last
            for p, last in written.items()
        )

    try:
        support_api.wait_for(committed_past, timeout=120, what=f"the worker past {written}")
    finally:
        admin.close()


def events_of(records: list[Any], payment_id: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if r.key == payment_id.encode()]


def test_a_resnapshot_announces_only_what_was_never_announced(
    settings: Settings, conn: psycopg.Connection[Any]
) -> None:
    cdc = CdcTail(settings)
    status = TopicSince(settings, settings.status_topic)
    # 1. Changed while the stream was broken: pending as the worker last saw it; succeeded now.
    broken = str(insert_payment(conn, amount_minor=4100))
    # 2. Final long ago (50 days): announced then, its `last emitted` entry dropped since.
    ancient = str(uuid.uuid4())
    long_ago = datetime.now(UTC) - timedelta(days=50)
    conn.execute(
        "INSERT INTO payments (id, idempotency_key, request_hash, amount_minor, currency, "
        "status, version, created_at, updated_at) "
        "VALUES (%s, %s, 'test', 4200, 'usd', 'succeeded', 3, %s, %s)",
        (ancient, f"snapshot-test-{ancient}", long_ago - timedelta(hours=1), long_ago),
    )
    # 3. Unchanged: its success was announced, and the snapshot shows the same row.
    unchanged = str(insert_payment(conn, amount_minor=4300))
    conn.execute(
        "UPDATE payments SET status = 'succeeded', version = version + 1 WHERE id = %s",
        (unchanged,),
    )
    wanted = [(broken, "c"), (ancient, "c"), (unchanged, "u")]
    seen = cdc.collect(wanted, timeout=60)
    assert set(wanted) <= set(seen), f"Debezium's records of the three payments: {sorted(seen)}"

    # The re-snapshot, on each payment's partition, after Debezium's own records of it.
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    first = seen[(broken, "c")]
    records = [
        (broken, snapshot_of(first, status="succeeded", version=2, updated_at=now)),
        (ancient, snapshot_of(seen[(ancient, "c")])),
        (unchanged, snapshot_of(seen[(unchanged, "u")])),
    ]
    wait_until_handled(
        settings, produce(settings, [(p, r, seen_partition(seen, p)) for p, r in records])
    )
    # The database shows what the snapshot showed (the change the stream missed): its record
    # is a change of the version already announced, and is not announced again.
    conn.execute(
        "UPDATE payments SET status = 'succeeded', version = 2 WHERE id = %s AND version = 1",
        (broken,),
    )
    update = cdc.collect([(broken, "u")], timeout=60)[(broken, "u")]
    cdc.close()
    wait_until_handled(settings, {update["_partition"]: update["_offset"]})
    found = status.read(timeout=10)

    announced = events_of(found, broken)
    assert [(e["event_id"], e["previous_status"], e["status"]) for e in announced] == [
        (f"{broken}:2", "pending", "succeeded")
    ]
    assert announced[0]["amount_minor"] == 4100 and announced[0]["currency"] == "usd"
    assert events_of(found, ancient) == [], "final 50 days ago: never announced again"
    assert [e["event_id"] for e in events_of(found, unchanged)] == [f"{unchanged}:2"]


def seen_partition(seen: dict[tuple[str, str], dict[str, Any]], payment_id: str) -> int:
    (partition,) = {e["_partition"] for (pid, _), e in seen.items() if pid == payment_id}
    return int(partition)


def test_a_record_the_worker_cannot_apply_goes_to_the_dlq_and_the_partition_moves_on(
    settings: Settings, conn: psycopg.Connection[Any]
) -> None:
    """Valid JSON in Debezium's shape, but an amount of zero minor units (no payment has one):
    a record that can never be applied (decoding says so), not a transient failure. Before,
    it decoded and was announced as a `succeeded` of 0 USD."""
    dlq = TopicSince(settings, settings.dlq_topic)
    status = TopicSince(settings, settings.status_topic)
    cdc = CdcTail(settings)
    pid = str(insert_payment(conn, amount_minor=4400))
    envelope = cdc.collect([(pid, "c")], timeout=60)[(pid, "c")]
    cdc.close()
    bad = {k: v for k, v in envelope.items() if not k.startswith("_")}
    bad.update(op="u", before=bad["after"])
    bad["after"] = {**bad["after"], "amount_minor": 0, "status": "succeeded", "version": 2}
    produce(settings, [(pid, bad, envelope["_partition"])])
    conn.execute(
        "UPDATE payments SET status = 'canceled', version = version + 1 WHERE id = %s", (pid,)
    )

    found = support_api.wait_for(
        lambda: events_of(status.read(timeout=5), pid), timeout=60, what="the cancel's event"
    )
    assert [(e["event_id"], e["status"]) for e in found] == [(f"{pid}:2", "canceled")]
    dead = [r for r in dlq.read(timeout=10) if r.key == key_of(pid)]
    assert len(dead) == 1
    assert json.loads(dead[0].value) == bad, "kept as it came"
    headers = dict(dead[0].headers)
    assert headers["error.kind"] == b"decode"
    assert b"amount_minor must be a positive integer" in headers["error"]
    assert headers["source.partition"] == str(envelope["_partition"]).encode()
