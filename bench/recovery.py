"""Recovery and memory with a large pending table (quick: 100,000 entries; --full: 1,000,000).

A scratch worker (own app id, topics, data dir and web port) is filled with synthetic pending
inserts; then:

* memory: its RSS (``/proc/<pid>/status`` VmRSS) with the table full;
* restart: SIGTERM, start again with the RocksDB state kept, until it processes a new record
  (a pending -> succeeded update, seen as its ``payment-status-update`` event on the scratch
  status topic);
* full rebuild: the same after deleting the data dir, so the table is rebuilt from its changelog.
"""

from __future__ import annotations

import json
import shutil
import time

from bench.envelopes import pending_insert, succeeded_update
from bench.report import Figure, format_seconds, say
from bench.stack import Context, Kafka, ScratchWorker, rss_kib, wait_applied

MEMORY_TARGET_MIB = 500


def _probe(
    worker: ScratchWorker, kafka: Kafka, pid: str, created_at: float, seq: int, label: str
) -> float:
    """Start the worker, send one new change; seconds from spawn to its status event."""
    consumer = kafka.consumer(worker.status_topic, from_end=True)
    try:
        started = time.monotonic()
        worker.start()
        kafka.produce(
            worker.topic, [succeeded_update(pid, created_at=created_at, seq=seq)], label=label
        )
        deadline = started + 1800
        while time.monotonic() < deadline:
            worker.check_alive()
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    if json.loads(record.value).get("payment_id") == pid:
                        return time.monotonic() - started
        raise TimeoutError(f"{label}: no status event for the probe after 1800s")
    finally:
        consumer.close()


def run(ctx: Context) -> list[Figure]:
    total = 1_000_000 if ctx.full else 100_000
    kafka = ctx.kafka
    worker = ScratchWorker(ctx.settings, f"{ctx.run}-rec")
    created_at = time.time()
    probes: list[str] = []

    def records() -> object:
        for i in range(total):
            key, value, pid = pending_insert(i, created_at=created_at)
            if i < 2:
                probes.append(pid)
            yield key, value

    try:
        kafka.create_topic(worker.topic)
        say(f"recovery: producing {total:,} pending inserts to {worker.topic}")
        kafka.produce(worker.topic, records(), label="recovery fill")  # type: ignore[arg-type]
        say(f"recovery: filling scratch worker {worker.app_id} on :{worker.port}")
        fill_started = time.monotonic()
        worker.start()
        wait_applied(worker, kafka, total, timeout=total / 200 + 300, label="recovery fill")
        fill_seconds = time.monotonic() - fill_started
        time.sleep(3)  # let the table's changelog and RocksDB writes settle
        rss_full = rss_kib(worker.pid) / 1024
        say(f"recovery: {total:,} entries applied in {fill_seconds:.0f}s; RSS {rss_full:.0f} MiB")

        say("recovery: restart with the RocksDB state kept")
        worker.stop()
        restart = _probe(worker, kafka, probes[0], created_at, total + 1, "restart probe")
        rss_restart = rss_kib(worker.pid) / 1024
        say(f"recovery: restart processed a new record after {restart:.1f}s")

        say("recovery: full rebuild (data dir deleted, table restored from its changelog)")
        worker.stop()
        shutil.rmtree(worker.datadir, ignore_errors=True)
        rebuild = _probe(worker, kafka, probes[1], created_at, total + 2, "rebuild probe")
        time.sleep(1)
        rss_rebuild = rss_kib(worker.pid) / 1024
        say(f"recovery: rebuild processed a new record after {rebuild:.1f}s")
    finally:
        worker.cleanup(kafka)

    scratch = f"scratch app id {worker.app_id} (topics, group and data dir deleted at the end)"
    return [
        Figure(
            f"recovery ({total:,} pending)",
            f"restart {format_seconds(restart)}",
            f"full rebuild {format_seconds(rebuild)}",
            restart / rebuild,
            "report both",
            None,
            "spawn → first new record processed (its status event seen), Python start-up "
            f"included; SIGTERM before each start; {scratch}",
            {"entries": total, "restart_seconds": restart, "rebuild_seconds": rebuild},
        ),
        Figure(
            f"memory ({total:,} pending)",
            f"{rss_full:.0f} MiB RSS",
            "—",
            None,
            f"< {MEMORY_TARGET_MIB} MB",
            rss_full * 1.048576 < MEMORY_TARGET_MIB,
            f"VmRSS after filling ({fill_seconds:.0f}s); after restart {rss_restart:.0f} MiB, "
            f"after rebuild {rss_rebuild:.0f} MiB",
            {
                "entries": total,
                "rss_mib_full": rss_full,
                "rss_mib_restart": rss_restart,
                "rss_mib_rebuild": rss_rebuild,
                "fill_seconds": fill_seconds,
            },
        ),
    ]
