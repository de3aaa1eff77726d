"""The worker at scale (quick: 100,000 pending; --full: 1,000,000): a real ``payments-worker``
process on scratch topics, its reconciliation against a Stripe stand-in over HTTP
(``bench.stripe_standin``: 30 ms a call, every synthetic intent known), measured for:

* fill: changes applied per second while the table grows, with ``/metrics`` and ``/stats/``
  timed every half second (operator login) and RSS sampled;
* a reconciliation cycle (``POST /reconcile/``) over the full table, ages spread over the TTL and
  one interval's worth past it (the steady state: expiries due, intents turning an hour old):
  its wall time, the process's CPU meanwhile, RSS, and ``/metrics`` and ``/stats/`` during it
  (the timer runs cycles too, every ``RECONCILE_INTERVAL_SECONDS``, during the fill);
* the change-apply rate during a cycle against the rate without one (status changes: pending ->
  succeeded, each emitting its event), from committed offsets, same run;
* restart to the first new record processed (its status event seen), with the RocksDB state kept
  and after deleting it (the table rebuilt from its changelog), with ``/metrics`` timed during
  the rebuild.

The scratch worker reconciles against the stand-in with ``STRIPE_MAX_RPS=100`` (Stripe's live
mode limit) so a cycle over a million entries ends in minutes; the calls still take their
tokens from the deployment's budget row, one round trip each.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests

from bench.envelopes import pending_insert, succeeded_update
from bench.report import (
    Buckets,
    Figure,
    bucket_delta,
    format_rate,
    format_seconds,
    parse_histogram,
    percentile,
    say,
)
from bench.stack import Context, Kafka, ScratchWorker, rss_kib, wait_applied
from bench.stripe_standin import StripeStandIn, intent_id

MEMORY_TARGET_MIB = 500
LATENCY_TARGET_SECONDS = 0.05
LOOP_LAG = "payments_worker_loop_lag_seconds"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (``/proc/<pid>/stat``), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime, stime in clock ticks (USER_HZ)


def cycles_done(worker: ScratchWorker, auth: tuple[str, str] | None) -> int:
    """The worker's ``payments_reconcile_cycles_total``: cycles finished, by the timer or asked."""
    text = requests.get(worker.url + "/metrics", auth=auth, timeout=30).text
    for line in text.splitlines():
        if line.startswith("payments_reconcile_cycles_total "):
            return int(float(line.split()[1]))
    return 0


class Probe:
    """``/metrics`` and ``/stats/`` answer times and the RSS, sampled every ``interval``; and
    the worker's own event-loop lag over the same time (its histogram, from the first and the
    last ``/metrics`` read), which tells a slow answer of the worker's from one of the client's
    or the machine's."""

    def __init__(self, worker: ScratchWorker, auth: tuple[str, str] | None) -> None:
        self.worker = worker
        self.auth = auth
        self.times: dict[str, list[float]] = {"/metrics": [], "/stats/": []}
        self.rss_mib: list[float] = []
        self.failures = 0
        # The loop-lag histogram at the first and at the last /metrics read.
        self.lag_first: Buckets | None = None
        self.lag_last: Buckets | None = None

    @contextmanager
    def sampling(self, interval: float = 0.5) -> Iterator[Probe]:
        stop = threading.Event()

        def loop() -> None:
            session = requests.Session()
            while not stop.wait(interval):
                if not self.worker.alive():
                    return
                with suppress(OSError, ValueError):
                    self.rss_mib.append(rss_kib(self.worker.pid) / 1024)
                for path, found in self.times.items():
                    started = time.perf_counter()
                    try:
                        resp = session.get(self.worker.url + path, auth=self.auth, timeout=30)
                        if resp.status_code == 200:
                            found.append(time.perf_counter() - started)
                            if path == "/metrics":
                                self.lag_last = parse_histogram(resp.text, LOOP_LAG)
                                self.lag_first = self.lag_first or self.lag_last
                        else:
                            self.failures += 1
                    except requests.RequestException:
                        self.failures += 1  # not listening yet (starting)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=40)

    def worst(self) -> float:
        return max((max(v) for v in self.times.values() if v), default=float("nan"))

    def p99(self) -> float:
        both = [x for v in self.times.values() for x in v]
        return percentile(both, 0.99) if both else float("nan")

    def count(self) -> int:
        return sum(len(v) for v in self.times.values())

    def loop_lag(self) -> str:
        """How often the worker's loop woke late meanwhile, and the worst bucket it reached."""
        if self.lag_first is None or self.lag_last is None:
            return "loop lag not read"
        delta = bucket_delta(self.lag_first, self.lag_last)
        total = delta[-1][1] if delta else 0.0
        if total <= 0:
            return "loop lag not read"
        late = {le: total - count for le, count in delta}
        worst = next(le for le, count in delta if count >= total)
        bound = "beyond the last bucket" if math.isinf(worst) else f"<= {format_seconds(worst)}"
        return (
            f"worker loop late > 50 ms {late.get(0.05, 0):.0f}, > 250 ms {late.get(0.25, 0):.0f} "
            f"of {total:.0f} wakeups (worst {bound})"
        )

    def text(self) -> str:
        parts = []
        for path, found in self.times.items():
            if found:
                parts.append(
                    f"{path} p50 {format_seconds(percentile(found, 0.5))}, "
                    f"max {format_seconds(max(found))} ({len(found)})"
                )
        return "; ".join([*parts, self.loop_lag()]) if parts else "no answer"


def _probe_restart(
    worker: ScratchWorker,
    kafka: Kafka,
    pid: str,
    created_at: float,
    intent: str,
    seq: int,
    label: str,
) -> float:
    """Start the worker, send one new change; seconds from spawn to its status event."""
    consumer = kafka.consumer(worker.status_topic, from_end=True)
    try:
        started = time.monotonic()
        worker.start()
        kafka.produce(
            worker.topic,
            [succeeded_update(pid, created_at=created_at, seq=seq, intent=intent)],
            label=label,
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


def _apply_rate(
    worker: ScratchWorker,
    kafka: Kafka,
    records: list[tuple[bytes, bytes]],
    label: str,
    during: Callable[[], bool] | None = None,
) -> tuple[float, int]:
    """Produce ``records`` and measure the rate the worker applies them (committed offsets);
    with ``during``, only while it answers True. (changes/s, changes in the measured span)."""
    before = worker.applied(kafka)
    kafka.produce(worker.topic, records, label=label)
    target = before + len(records)
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + 600 + len(records) / 50
    while time.monotonic() < deadline:
        worker.check_alive()
        applied = worker.applied(kafka)
        if during is None or during():
            samples.append((time.monotonic(), applied))
        if applied >= target or (during is not None and samples and not during()):
            break
        time.sleep(0.25)
    moving = [(t, n) for t, n in samples if n > before]
    if len(moving) < 2:
        return float("nan"), 0
    (t0, n0), (t1, n1) = moving[0], moving[-1]
    return (n1 - n0) / max(1e-9, t1 - t0), n1 - n0


def run(ctx: Context) -> list[Figure]:
    total = 1_000_000 if ctx.full else (3_000 if ctx.smoke else 100_000)
    changes = 5_000 if ctx.full else (300 if ctx.smoke else 10_000)
    settings = ctx.settings
    kafka = ctx.kafka
    ttl = settings.pending_ttl_seconds
    interval = settings.reconcile_interval_seconds
    worker = ScratchWorker(settings, f"{ctx.run}-rec")
    standin = StripeStandIn().start()
    worker.extra_env = {
        "STRIPE_API_BASE": standin.url,
        "STRIPE_MAX_RPS": "100",
        # Cycles are started by the benchmark; the interval still sizes windows and budgets.
        "RECONCILE_INTERVAL_SECONDS": str(interval),
    }
    auth = ctx.operator_auth
    now = time.time()
    rng = random.Random(5)
    population: list[tuple[str, float, str]] = []  # (payment id, created, intent id)

    # The steady state of a cycle: ages spread evenly over the TTL, and one interval's worth
    # past it (the expiries a cycle has to make). The scratch worker's expiries change no row
    # (the payments are synthetic): the same ones are due again at every cycle.
    past_ttl = max(1, int(total * interval / ttl))

    def records() -> Iterator[tuple[bytes, bytes]]:
        for i in range(total):
            if i % (total // past_ttl) == 0:
                created = now - rng.uniform(ttl + 60, ttl + interval)
            else:
                created = now - rng.uniform(60, ttl - 2 * interval)

            def name(pid: str, at: float) -> str:
                return standin.register(pid, int(at))

            key, value, pid = pending_insert(i, created_at=created, intent=name)
            if len(population) < 2 * changes + 2 and created > now - ttl + 3 * interval:
                population.append((pid, created, intent_id(pid, int(created))))
            yield key, value

    def updates(chosen: list[tuple[str, float, str]], seq: int) -> list[tuple[bytes, bytes]]:
        return [
            succeeded_update(pid, created_at=created, seq=seq + n, intent=intent)
            for n, (pid, created, intent) in enumerate(chosen)
        ]

    try:
        kafka.create_topic(worker.topic)
        say(
            f"worker: producing {total:,} pending inserts (ages over the TTL, {past_ttl:,} past it)"
        )
        kafka.produce(worker.topic, records(), label="fill")
        say(f"worker: filling scratch worker {worker.app_id} on :{worker.port}")
        fill_probe = Probe(worker, auth)
        fill_started = time.monotonic()
        worker.start()
        with fill_probe.sampling():
            samples = wait_applied(worker, kafka, total, timeout=total / 100 + 600, label="fill")
        fill_seconds = time.monotonic() - fill_started
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        fill_rate = (n1 - n0) / max(1e-9, t1 - t0)
        time.sleep(3)
        rss_full = rss_kib(worker.pid) / 1024
        say(
            f"worker: {total:,} applied in {fill_seconds:.0f}s ({fill_rate:,.0f}/s); RSS "
            f"{rss_full:.0f} MiB; {fill_probe.text()}"
        )

        say(f"worker: apply rate without a cycle ({changes:,} status changes)")
        cpu0, t_cpu0 = cpu_seconds(worker.pid), time.monotonic()
        quiet_rate, quiet_n = _apply_rate(
            worker, kafka, updates(population[:changes], total + 10), "quiet changes"
        )
        cpu_per_change = (cpu_seconds(worker.pid) - cpu0) / max(1, quiet_n)
        say(
            f"worker: {quiet_rate:,.0f} changes/s ({cpu_per_change * 1000:.2f} ms CPU each, "
            f"{time.monotonic() - t_cpu0:.0f}s)"
        )

        say("worker: a reconciliation cycle over the whole table, with status changes meanwhile")
        cycle_probe = Probe(worker, auth)
        result: dict[str, object] = {}
        running = threading.Event()

        def cycle() -> None:
            running.set()
            started = time.monotonic()
            try:
                resp = requests.post(f"{worker.url}/reconcile/", auth=auth, timeout=3600)
                result["report"] = resp.json()
            except (requests.RequestException, ValueError) as exc:
                result["error"] = f"{type(exc).__name__}: {exc}"
            result["seconds"] = time.monotonic() - started
            running.clear()

        calls0 = standin.calls
        cycles0 = cycles_done(worker, auth)
        cpu_before = cpu_seconds(worker.pid)
        with cycle_probe.sampling():
            thread = threading.Thread(target=cycle, daemon=True)
            thread.start()
            running.wait(5)
            time.sleep(1)
            busy_rate, busy_n = _apply_rate(
                worker,
                kafka,
                updates(population[changes : 2 * changes], total + changes + 10),
                "changes during the cycle",
                during=running.is_set,
            )
            thread.join(timeout=3600)
        cycle_cpu = cpu_seconds(worker.pid) - cpu_before
        report = result.get("report") or {}
        assert isinstance(report, dict)
        # The timer runs cycles too: one that had started before the POST holds the cycle lock,
        # and the POST's own cycle runs after it, inside the window. The expiries of this table
        # stay due (no database rows: nothing removes the entries), so each cycle in the window
        # does the same work: the window's CPU and calls are shared between them.
        in_window = max(1, cycles_done(worker, auth) - cycles0)
        wall = report.get("duration_seconds", result.get("seconds"))  # the POST's, if no report
        cycle_seconds = float("nan") if wall is None else float(wall)  # type: ignore[arg-type]
        applied_meanwhile = max(0, worker.applied(kafka) - (total + changes))
        own_cpu = max(0.0, cycle_cpu - cpu_per_change * applied_meanwhile) / in_window
        rss_cycle = max(cycle_probe.rss_mib, default=float("nan"))
        stripe_calls = (standin.calls - calls0) // in_window
        overlap = (
            f"; {in_window} cycles ran in the window (the timer's first): CPU and calls per cycle"
            if in_window > 1
            else ""
        )
        say(
            f"worker: cycle {cycle_seconds:.1f}s, process CPU {cycle_cpu:.1f}s (cycle's own "
            f"~{own_cpu:.1f}s), RSS max {rss_cycle:.0f} MiB, {stripe_calls} Stripe calls; "
            f"changes {busy_rate:,.0f}/s meanwhile; {cycle_probe.text()}; "
            f"{result.get('error') or ''}"
        )
        say(f"worker: cycle report {json.dumps(report)[:600]}")

        wait_applied(
            worker, kafka, total + 2 * changes, timeout=600 + changes / 20, label="the rest"
        )
        say("worker: restart with the RocksDB state kept")
        worker.stop()
        pid0, created0, intent0 = population[-1]
        restart = _probe_restart(
            worker, kafka, pid0, created0, intent0, total + 3 * changes, "restart probe"
        )
        rss_restart = rss_kib(worker.pid) / 1024
        say(f"worker: restart processed a new record after {restart:.1f}s")

        say("worker: full rebuild (data dir deleted, table restored from its changelog)")
        worker.stop()
        shutil.rmtree(worker.datadir, ignore_errors=True)
        pid1, created1, intent1 = population[-2]
        rebuild_probe = Probe(worker, auth)
        with rebuild_probe.sampling():
            rebuild = _probe_restart(
                worker, kafka, pid1, created1, intent1, total + 3 * changes + 1, "rebuild probe"
            )
        time.sleep(1)
        rss_rebuild = rss_kib(worker.pid) / 1024
        say(f"worker: rebuild processed a new record after {rebuild:.1f}s; {rebuild_probe.text()}")
    finally:
        worker.cleanup(kafka)
        standin.stop()

    size = f"{total:,} pending"
    fill_worst = fill_probe.worst()
    cycle_worst = cycle_probe.worst()
    busy_ratio = busy_rate / quiet_rate if quiet_rate == quiet_rate and quiet_rate > 0 else None
    scratch = f"scratch app id {worker.app_id} (topics, group and data dir deleted at the end)"
    return [
        Figure(
            f"worker fill ({size})",
            format_rate(fill_rate, " changes/s"),
            "—",
            None,
            "report",
            None,
            f"{total:,} synthetic inserts, ages over the TTL ({past_ttl:,} past it); "
            f"{format_seconds(fill_seconds)} from spawn; RSS {rss_full:.0f} MiB when full",
            {"entries": total, "fill_seconds": fill_seconds, "rate": fill_rate},
        ),
        Figure(
            f"worker /metrics and /stats/ ({size})",
            f"max {format_seconds(max(fill_worst, cycle_worst))}",
            "—",
            None,
            "< 50 ms",
            max(fill_worst, cycle_worst) < LATENCY_TARGET_SECONDS,
            f"every 0.5 s with the operator login; during the fill: {fill_probe.text()}; "
            f"during the cycle: {cycle_probe.text()}; p99 over both "
            f"{format_seconds(max(fill_probe.p99(), cycle_probe.p99()))}",
            {
                "fill": fill_probe.times,
                "cycle": cycle_probe.times,
                "fill_worst": fill_worst,
                "cycle_worst": cycle_worst,
            },
        ),
        Figure(
            f"reconciliation cycle ({size})",
            f"CPU {own_cpu:.1f} s, {format_seconds(cycle_seconds)} wall",
            "—",
            None,
            "CPU < 30 s, RSS < 500 MB",
            own_cpu < 30 and rss_cycle * 1.048576 < MEMORY_TARGET_MIB,
            f"POST /reconcile/ on the full table: {stripe_calls:,} calls to the stand-in "
            f"(30 ms each, STRIPE_MAX_RPS=100), {report.get('checked', '?')} checks (expiries: "
            f"canceled at Stripe, no row in the database), deferred "
            f"{report.get('deferred', '?')}, stale intents listed "
            f"{(report.get('sweep') or {}).get('intents_listed', '?')}; process CPU "
            f"{cycle_cpu:.1f}s minus {applied_meanwhile:,} changes applied meanwhile at "
            f"{cpu_per_change * 1000:.2f} ms each; RSS max {rss_cycle:.0f} MiB{overlap}",
            {
                "cycle_seconds": cycle_seconds,
                "process_cpu": cycle_cpu,
                "own_cpu": own_cpu,
                "rss_mib_max": rss_cycle,
                "stripe_calls": stripe_calls,
                "cycles_in_window": in_window,
                "report": report,
            },
        ),
        Figure(
            f"change apply rate during a cycle ({size})",
            format_rate(busy_rate, " changes/s"),
            format_rate(quiet_rate, " changes/s") + " (no cycle)",
            busy_ratio,
            "≥ 0.5",
            busy_ratio is not None and busy_ratio >= 0.5,
            f"pending -> succeeded changes (table delete + status event acknowledged), "
            f"{busy_n:,} measured while the cycle ran, {quiet_n:,} without",
            {"busy_rate": busy_rate, "quiet_rate": quiet_rate, "busy_n": busy_n},
        ),
        Figure(
            f"recovery ({size})",
            f"restart {format_seconds(restart)}, rebuild {format_seconds(rebuild)}",
            "—",
            None,
            "< 60 s each",
            restart < 60 and rebuild < 60,
            "spawn → first new record processed (its status event seen), Python start-up "
            f"included; SIGTERM before each start; during the rebuild {rebuild_probe.text()}; "
            f"{scratch}",
            {"entries": total, "restart_seconds": restart, "rebuild_seconds": rebuild},
        ),
        Figure(
            f"memory ({size})",
            f"{max(rss_full, rss_cycle):.0f} MiB RSS (max)",
            "—",
            None,
            f"< {MEMORY_TARGET_MIB} MB",
            max(rss_full, rss_cycle) * 1.048576 < MEMORY_TARGET_MIB,
            f"VmRSS when full {rss_full:.0f} MiB, max during the cycle {rss_cycle:.0f} MiB, "
            f"after restart {rss_restart:.0f} MiB, after rebuild {rss_rebuild:.0f} MiB",
            {
                "rss_mib_full": rss_full,
                "rss_mib_cycle": rss_cycle,
                "rss_mib_restart": rss_restart,
                "rss_mib_rebuild": rss_rebuild,
            },
        ),
    ]
