"""Stream throughput: CDC records per second that one Faust worker (the project's app, as a
separate ``payments-worker worker`` process on scratch topics) decodes and applies to its table,
vs a bare kafka-python consumer that reads the same records and ``json.loads`` each one."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from bench.envelopes import pending_insert, succeeded_update
from bench.report import Figure, format_rate, format_seconds, say
from bench.stack import PARTITION_COUNT, Context, Kafka, ScratchWorker, wait_applied


def steady_rate(samples: list[tuple[float, int]], total: int, started: float) -> float:
    """Records/s from the first progress sample to the last (start-up excluded); from
    ``started`` when everything landed in one sample."""
    (t_first, n_first), (t_last, _) = samples[0], samples[-1]
    if t_last - t_first <= 0 or total - n_first <= 0:
        return total / max(1e-9, t_last - started)
    return (total - n_first) / (t_last - t_first)


def count_events(kafka: Kafka, topic: str, expected: int) -> tuple[int, int]:
    """Status events on ``topic`` (all, distinct ``ce_id``s), read until ``expected`` distinct
    ones or 30 s without news: a lost event or a duplicate shows here."""
    consumer = kafka.consumer(topic, from_end=False)
    seen: list[bytes] = []
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < 30 and len(set(seen)) < expected:
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                quiet_since = time.monotonic()
                for record in records:
                    ids = [v for k, v in (record.headers or []) if k == "ce_id"]
                    seen.append(ids[0] if ids else record.value)
    finally:
        consumer.close()
    return len(seen), len(set(seen))


def run(ctx: Context) -> list[Figure]:
    total = 200_000 if ctx.full else (2_000 if ctx.smoke else 30_000)
    changes = 20_000 if ctx.full else (200 if ctx.smoke else 3_000)
    kafka = ctx.kafka
    worker = ScratchWorker(ctx.settings, f"{ctx.run}-tp")
    created = time.time()
    pids: list[str] = []

    def inserts() -> Iterator[tuple[bytes, bytes]]:
        for i in range(total):
            key, value, pid = pending_insert(i, created_at=created)
            if i < changes:
                pids.append(pid)
            yield key, value

    try:
        kafka.create_topic(worker.topic)
        say(f"throughput: producing {total:,} synthetic pending inserts to {worker.topic}")
        kafka.produce(worker.topic, inserts(), label="throughput")

        say("throughput: baseline, a bare kafka-python consumer with json.loads")
        consumer = kafka.consumer(worker.topic, from_end=False)
        seen = 0
        bare_started = time.monotonic()
        bare_samples: list[tuple[float, int]] = []
        try:
            while seen < total:
                for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                    for record in records:
                        json.loads(record.value)
                        seen += 1
                if seen:
                    bare_samples.append((time.monotonic(), seen))
                if time.monotonic() - bare_started > 300:
                    raise TimeoutError(f"bare consumer read only {seen:,}/{total:,} in 300s")
        finally:
            consumer.close()
        bare_rate = steady_rate(bare_samples, total, bare_started)
        say(f"throughput: bare consumer {bare_rate:,.0f} records/s")

        say(f"throughput: scratch worker {worker.app_id} on :{worker.port}")
        started = time.monotonic()
        worker.start()
        samples = wait_applied(
            worker, kafka, total, timeout=total / 200 + 180, label="throughput worker"
        )
        worker_rate = steady_rate(samples, total, started)
        startup = samples[0][0] - started
        say(f"throughput: worker {worker_rate:,.0f} records/s (first commit after {startup:.1f}s)")

        say(f"throughput: {changes:,} status changes (pending -> succeeded, each emits an event)")
        change_started = time.monotonic()
        kafka.produce(
            worker.topic,
            (
                succeeded_update(pid, created_at=created, seq=total + n)
                for n, pid in enumerate(pids)
            ),
            label="status changes",
        )
        change_samples = wait_applied(
            worker, kafka, total + changes, timeout=changes / 20 + 120, label="status changes"
        )
        moving = [(t, n - total) for t, n in change_samples if n > total]
        change_rate = steady_rate(moving, changes, change_started) if moving else float("nan")
        emitted, distinct = count_events(kafka, worker.status_topic, changes)
        say(
            f"throughput: worker {change_rate:,.0f} status changes/s; {emitted:,} events on "
            f"{worker.status_topic} ({distinct:,} distinct event ids) for {changes:,} changes"
        )
    finally:
        worker.cleanup(kafka)

    ratio = worker_rate / bare_rate
    change_ratio = change_rate / bare_rate
    return [
        Figure(
            "stream throughput",
            format_rate(worker_rate),
            format_rate(bare_rate),
            ratio,
            "≥ 0.3",
            ratio >= 0.3,
            f"{total:,} synthetic Debezium inserts on a {PARTITION_COUNT}-partition scratch "
            "topic; worker = payments-worker process (RocksDB table + changelog), rate from "
            "committed offsets "
            f"after its first commit ({format_seconds(startup)} start-up excluded); baseline "
            f"from its first batch",
            {
                "records": total,
                "worker_rate": worker_rate,
                "bare_rate": bare_rate,
                "worker_startup_seconds": startup,
            },
        ),
        Figure(
            "stream throughput (status changes)",
            format_rate(change_rate),
            format_rate(bare_rate),
            change_ratio,
            "(context)",
            None,
            f"{changes:,} pending -> succeeded updates of entries in the table: each deletes its "
            f"entry and emits a payment-status-update that the broker acknowledges (acks=all) "
            f"before the next change is taken; baseline: the bare consumer above; events on "
            f"the status topic: {emitted:,} ({distinct:,} distinct ids) for {changes:,} changes",
            {
                "changes": changes,
                "rate": change_rate,
                "bare_rate": bare_rate,
                "events": emitted,
                "distinct_events": distinct,
            },
        ),
    ]
