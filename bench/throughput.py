"""Stream throughput: CDC records per second that one Faust worker (the project's app, as a
separate ``payments-worker worker`` process on scratch topics) decodes and applies to its table,
vs a bare kafka-python consumer that reads the same records and ``json.loads`` each one."""

from __future__ import annotations

import json
import time

from bench.envelopes import pending_insert
from bench.report import Figure, format_rate, format_seconds, say
from bench.stack import Context, ScratchWorker, wait_applied


def steady_rate(samples: list[tuple[float, int]], total: int, started: float) -> float:
    """Records/s from the first progress sample to the last (start-up excluded); from
    ``started`` when everything landed in one sample."""
    (t_first, n_first), (t_last, _) = samples[0], samples[-1]
    if t_last - t_first <= 0 or total - n_first <= 0:
        return total / max(1e-9, t_last - started)
    return (total - n_first) / (t_last - t_first)


def run(ctx: Context) -> list[Figure]:
    total = 200_000 if ctx.full else 30_000
    kafka = ctx.kafka
    worker = ScratchWorker(ctx.settings, f"{ctx.run}-tp")
    try:
        kafka.create_topic(worker.topic)
        say(f"throughput: producing {total:,} synthetic pending inserts to {worker.topic}")
        kafka.produce(
            worker.topic,
            (pending_insert(i)[:2] for i in range(total)),
            label="throughput",
        )

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
    finally:
        worker.cleanup(kafka)

    ratio = worker_rate / bare_rate
    return [
        Figure(
            "stream throughput",
            format_rate(worker_rate),
            format_rate(bare_rate),
            ratio,
            "≥ 0.3",
            ratio >= 0.3,
            f"{total:,} synthetic Debezium inserts on a 6-partition scratch topic; worker = "
            f"payments-worker process (RocksDB table + changelog), rate from committed offsets "
            f"after its first commit ({format_seconds(startup)} start-up excluded); baseline "
            f"from its first batch",
            {
                "records": total,
                "worker_rate": worker_rate,
                "bare_rate": bare_rate,
                "worker_startup_seconds": startup,
            },
        )
    ]
