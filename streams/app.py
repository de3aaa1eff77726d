"""The Faust worker: ``PaymentsWorker(settings)`` builds the app and wires its collaborators.

The change agent keeps the open-payments table and emits one ``payment-status-update`` per
status change; the reconciliation timer sweeps Stripe's events (the worker holding partition 0
leads it) and checks its own partitions; the web views show what it holds. Nothing happens at
import time; the core (pools, Stripe gateway, use cases) is built on first use inside the
running worker.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import faust
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from cdc.envelope import DecodeError, PaymentChange, decode
from payments.bootstrap import Core, bootstrap
from payments.logs import configure_logging, get_logger, stdlib_logging_config
from payments.operator_auth import operator_login
from payments.reconcile import CycleReport
from payments.settings import Settings
from streams import handlers
from streams.blocking import CHANGE_APPLIED, PartitionBlocks
from streams.emitter import StatusEmitter
from streams.metrics import WorkerMetrics
from streams.open_table import OpenTable, partition_items, partitions_of
from streams.recovery import TableManager
from streams.retry import until_done
from streams.sequence import ChangeSequence, KafkaRangeReader, RangeReader, Record
from streams.topics import Tables, Topics, declare
from streams.transport import App

log = get_logger("streams")
# How often, and how much at a time, each partition is combed for `emitted` entries older than
# handlers.EMITTED_RETENTION_SECONDS.
PURGE_EVERY_SECONDS = 3_600
PURGE_CHUNK = 2_000
# While changes keep coming the agent hands the event loop over at least this often: Faust's
# stream does not suspend while its buffer holds records, so a run of changes would otherwise
# hold up the web views (/metrics, /stats/), the heartbeats and the producer's callbacks.
YIELD_EVERY_SECONDS = 0.005
# How often the event loop's lag is sampled (``payments_worker_loop_lag_seconds``), and how
# long it may go without waking the sampler before ``LoopWatch`` logs what holds it.
LOOP_LAG_PROBE_SECONDS = 0.1
LOOP_HELD_SECONDS = 1.0
# Failed reconciliation checks listed by /stats/ (and /ops), soonest next attempt first.
WAITING_RETRY_SHOWN = 20


async def sample_loop_lag(
    observe: Callable[[float], None], period: float, beat: Callable[[], None] = lambda: None
) -> None:
    """Sleep ``period`` again and again and ``observe`` how much later than that the loop woke:
    a callback or a write that holds the loop shows here, whatever it was. ``beat`` is called
    at each wakeup (``LoopWatch``)."""
    while True:
        asked = time.monotonic()
        await asyncio.sleep(period)
        beat()
        observe(max(0.0, time.monotonic() - asked - period))


class LoopWatch:
    """A thread that logs where the event loop's thread is, once, when the loop has not woken
    the lag sampler for ``held_seconds``: the lag histogram says that the loop was held, this
    says by what (the stack of the thread running it at that moment)."""

    def __init__(self, held_seconds: float = LOOP_HELD_SECONDS) -> None:
        self.held_seconds = held_seconds
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stopped = threading.Event()

    def beat(self) -> None:
        self._beat = time.monotonic()

    def start(self) -> None:
        self._loop_thread = threading.get_ident()  # called from the loop's thread
        self.beat()
        threading.Thread(target=self._watch, name="loop-watch", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        reported_beat = None
        while not self._stopped.wait(self.held_seconds / 4):
            beat = self._beat
            held = time.monotonic() - beat
            if held < self.held_seconds or reported_beat == beat:
                continue
            reported_beat = beat
            frame = sys._current_frames().get(self._loop_thread)
            stack = "".join(traceback.format_stack(frame)[-12:]) if frame else "(no frame)"
            log.warning("event loop held", held_seconds=round(held, 3), stack=stack)


@dataclass
class _Purge:
    resume: bytes = b""
    last_pass_ended: float = 0.0


class PaymentsWorker:
    """The Faust app and what it works with, without attributes hung on the app."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: str = "rocksdb-bulk://",
        core: Core | None = None,
        reader: RangeReader | None = None,
    ) -> None:
        configure_logging(settings.log_level)
        self.settings = settings
        # Faust's app, its consumer fetching in batches (streams.transport).
        self.app = App(
            settings.worker_app_id,
            broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap_servers.split(",")],
            store=store,
            datadir=settings.worker_state_dir,
            autodiscover=False,
            topic_partitions=settings.kafka_topic_partitions,
            topic_replication_factor=settings.kafka_replication_factor,
            table_standby_replicas=1,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=1.0,
            web_port=settings.worker_web_port,
            web_bind=settings.worker_web_bind,
            web_host=settings.worker_web_host,
            producer_acks=-1,
            # A worker that dies is noticed by its group within 10 s (Kafka's default, 45-60 s,
            # would leave its partitions unprocessed that long); heartbeats every 3 s.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=3.0,
            processing_guarantee=settings.worker_processing_guarantee,
            # Batch the changelog and event sends for 5 ms (the Java producer's default since
            # Kafka 4.0): about 8% more changes per second, 5 ms on an event's way out.
            producer_linger=0.005,
            # Faust's own, aiokafka's and stripe-python's records as JSON lines, like ours.
            logging_config=stdlib_logging_config(settings.log_level),
            # Recovery that starts over, instead of crashing, when a rebalance comes mid-way.
            TableManager=TableManager,
        )
        self.topics: Topics
        self.tables: Tables
        self.topics, self.tables = declare(self.app, settings)
        self.metrics = WorkerMetrics()
        self.open = OpenTable(self.app, self.tables.open)
        # Partitions waiting on a step that failed (a status event, a change's table writes).
        self.blocks = PartitionBlocks(self.metrics)
        self.emitter = StatusEmitter(self.topics.status_updates, self.metrics, self.blocks)
        self.sequence = ChangeSequence(
            reader
            or KafkaRangeReader(
                settings.kafka_bootstrap_servers,
                settings.cdc_payments_topic,
                settings.worker_app_id,
            )
        )
        self.last_cycle: CycleReport | None = None
        self._cycle_lock = asyncio.Lock()
        self._core = core
        self._core_lock = threading.Lock()
        self._purges: dict[int, _Purge] = {}
        self._register_agent()
        self._register_rebalance_hooks()
        self._register_reconciler()
        self._register_views()

    @property
    def core(self) -> Core:
        with self._core_lock:
            if self._core is None:
                self._core = bootstrap(self.settings, role="worker")
            return self._core

    def owned_partitions(self) -> list[int]:
        """Partitions of the change topic this worker actively owns (standbys excluded)."""
        topic = self.settings.cdc_payments_topic
        return sorted(partitions_of(self.app.assignor.assigned_actives(), topic))

    def standby_partitions(self) -> list[int]:
        topic = self.settings.cdc_payments_topic
        return sorted(partitions_of(self.app.assignor.assigned_standbys(), topic))

    # -- the change agent ---------------------------------------------------------------------

    def _register_agent(self) -> None:
        @self.app.agent(self.topics.changes, name="payment-changes")
        async def process_changes(stream: faust.StreamT[bytes]) -> None:
            # Acknowledged by hand, once handled: Faust's own acknowledgement sits in a
            # `finally`, so an agent stopped (SIGTERM, rebalance) while its status event waits
            # for the broker would have the change committed and the event never sent.
            assert isinstance(stream, faust.Stream)  # noack() is not on the StreamT protocol
            manual = stream.noack()
            yielded_at = time.monotonic()
            async for event in manual.events():
                await self._handle_in_order(event.message)
                await manual.ack(event)
                if time.monotonic() - yielded_at > YIELD_EVERY_SECONDS:
                    await asyncio.sleep(0)
                    yielded_at = time.monotonic()

        @self.app.task  # type: ignore[untyped-decorator]
        async def watch_loop_lag() -> None:
            watch = LoopWatch()
            watch.start()
            try:
                await sample_loop_lag(
                    self.metrics.loop_lag.observe, LOOP_LAG_PROBE_SECONDS, watch.beat
                )
            finally:
                watch.stop()

        @self.app.task  # type: ignore[untyped-decorator]
        async def declare_outputs() -> None:
            # Create the output topics at start, so consumers (and the DLQ alert) can subscribe
            # before the first status change or bad record.
            for topic in (self.topics.status_updates, self.topics.dead_letters):
                await topic.maybe_declare()

    async def _handle_in_order(self, message: Record) -> None:
        """The change, after any of its partition's records the consumer skipped; nothing for
        a record already applied (see ``streams.sequence``)."""
        refetched = await self.sequence.apply_in_order(message, self._handle)
        if refetched is None:
            self.metrics.redelivered.inc()
        else:
            self.metrics.refetched.inc(refetched)

    async def _handle(self, message: Record) -> None:
        """One record of the change topic (a Faust message, or a record read back by
        ``streams.sequence``: both have topic, partition, offset, key and value).

        Only a record that cannot be decoded goes to the DLQ: decoding checks everything the
        worker needs of it, so applying a decoded change can only fail transiently (the state
        store, the broker); the partition then waits and retries until it passes."""
        try:
            change = decode(message.value)
        except DecodeError as exc:
            await self._dead_letter(message, exc)
            return
        if change is None:
            return
        self.metrics.changes.labels(change.op.value).inc()
        await self.blocks.until_done(
            message.partition,
            lambda: self.apply_change(change, message.partition),
            waiting_for=CHANGE_APPLIED,
            payment_id=str(change.payment_id),
            retries=self.metrics.apply_retries,
            offset=message.offset,
        )
        self._maybe_purge_emitted(message.partition)

    async def apply_change(self, change: PaymentChange, partition: int) -> None:
        """The table update and, once the broker acknowledged it, the status event."""
        if change.committed_at_ms:
            self.metrics.cdc_delay.observe(max(0.0, time.time() - change.committed_at_ms / 1000))
        pid = str(change.payment_id).encode()
        raw = self.tables.emitted.get(pid)
        last = handlers.Emitted.from_json(handlers.decode(raw)) if raw is not None else None
        decision = handlers.decide(change, last, now=time.time())
        self.open.apply(partition, decision)
        update = decision.emit
        if update is not None:
            await self.emitter.emit(partition, update)
            emitted = handlers.emitted_after(update, time.time())
            self.tables.emitted[pid] = handlers.encode(emitted.to_json())
            log.info(
                "status update emitted",
                payment_id=str(update.payment_id),
                event_id=update.event_id,
                status=update.status.value,
            )
        elif change.status_changed:
            self.metrics.duplicates.inc()
            log.info(
                "replayed status change not re-emitted",
                payment_id=str(change.payment_id),
                version=change.after.version if change.after else None,
            )

    async def _dead_letter(self, message: Record, exc: DecodeError) -> None:
        """The record, as it came, on the DLQ with the error in its headers; retried until the
        broker has it (a record is never dropped)."""
        self.metrics.dead_letters.inc()
        log.error(
            "change record dead-lettered",
            error=str(exc),
            error_type=type(exc).__name__,
            partition=message.partition,
            offset=message.offset,
        )
        headers = [
            ("error", f"{type(exc).__name__}: {exc}".encode()[:2000]),
            ("error.kind", b"decode"),
            ("source.topic", message.topic.encode()),
            ("source.partition", str(message.partition).encode()),
            ("source.offset", str(message.offset).encode()),
        ]

        async def send() -> None:
            delivery = await self.topics.dead_letters.send(
                key=message.key, value=message.value, headers=headers
            )
            await delivery

        def failed(attempt: int, exc: Exception) -> None:
            log.warning("DLQ send failed; retrying", attempt=attempt, error=str(exc))

        await until_done(send, failed)

    def _maybe_purge_emitted(self, partition: int) -> None:
        """Drop `emitted` entries of payments final for longer than the retention, a chunk at
        a time, while handling a record of that partition (Faust writes the changelog of the
        current record's partition, which is the entries' own)."""
        purge = self._purges.setdefault(partition, _Purge())
        now = time.time()
        if not purge.resume and now - purge.last_pass_ended < PURGE_EVERY_SECONDS:
            return
        cutoff = now - handlers.EMITTED_RETENTION_SECONDS
        stale: list[bytes] = []
        items = partition_items(self.tables.emitted, partition, purge.resume, None)
        for seen, (key, value) in enumerate(items, start=1):
            final_at = value.get("f")
            if final_at is not None and final_at < cutoff:
                stale.append(key)
            if seen >= PURGE_CHUNK:
                purge.resume = key + b"\x00"
                break
        else:
            purge.resume, purge.last_pass_ended = b"", now
        for key in stale:
            del self.tables.emitted[key]

    # -- rebalance ----------------------------------------------------------------------------

    def _register_rebalance_hooks(self) -> None:
        async def recount(sender: Any, **kwargs: Any) -> None:
            owned = set(self.owned_partitions())
            self.open.forget(set(self.open.counts) - owned)
            missing = owned - set(self.open.counts)
            if missing:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.open.recount, sorted(missing))
                log.info(
                    "open payments counted", partitions=sorted(missing), **self.open.by_status()
                )

        async def revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
            partitions = partitions_of(revoked, self.settings.cdc_payments_topic)
            self.open.forget(partitions)
            self.sequence.forget(partitions)

        async def shutdown(sender: Any, **kwargs: Any) -> None:
            await self.sequence.reader.close()

        self.app.on_rebalance_complete.connect(recount)  # type: ignore[arg-type]
        self.app.on_before_shutdown.connect(shutdown)  # type: ignore[arg-type]
        self.app.on_partitions_revoked.connect(revoked)  # type: ignore[arg-type]

    # -- reconciliation -----------------------------------------------------------------------

    def _register_reconciler(self) -> None:
        @self.app.timer(  # type: ignore[untyped-decorator]
            interval=self.settings.reconcile_interval_seconds, name="reconcile"
        )
        async def reconcile_periodically() -> None:
            if not self.app.rebalancing:
                await self.run_cycle()

    async def run_cycle(self) -> CycleReport | None:
        """One cycle: the sweep when this worker leads it (owns partition 0), then the checks
        of its own partitions. Never raises: a failure is counted and logged, and the next
        interval tries again."""
        async with self._cycle_lock:
            started = time.time()
            try:
                report = await self._cycle()
            except Exception:
                self.metrics.cycle_failures.inc()
                log.exception("reconciliation cycle failed; the next interval tries again")
                return None
            self.last_cycle = report
            self.metrics.cycles.inc()
            self.metrics.cycle_seconds.observe(time.time() - started)
            self.metrics.stripe_calls.labels("checks").inc(
                report.stripe_calls - (report.sweep.stripe_calls if report.sweep else 0)
            )
            if report.sweep is not None:
                self.metrics.stripe_calls.labels("sweep").inc(report.sweep.stripe_calls)
            self.metrics.foreign_intents.inc(report.foreign)
            for result in (
                "resolved",
                "created",
                "expired",
                "expired_unknown_intent",
                "errors",
                "deferred",
            ):
                self.metrics.cycle_figures.labels(result).inc(getattr(report, result))
            return report

    async def _cycle(self) -> CycleReport:
        """The whole cycle in the executor's thread: the sweep, the plan's range reads of the
        table and the checks never hold the event loop (the agent keeps applying changes, the
        views keep answering). The table is read for the partitions owned when it starts."""
        loop = asyncio.get_running_loop()
        core = await loop.run_in_executor(None, lambda: self.core)
        partitions = self.owned_partitions()
        total = self.settings.kafka_topic_partitions
        # This worker's share of the one Stripe budget, for its per-cycle allowance; the event
        # sweep is the deployment's, led by whoever owns partition 0.
        share = self.settings.stripe_max_rps * len(partitions) / max(1, total)
        view = self.open.pinned(partitions)
        return await loop.run_in_executor(
            None,
            functools.partial(
                core.reconciler.run, view, partitions, rps=share, lead_sweep=0 in partitions
            ),
        )

    # -- web views ----------------------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        """HTTP Basic with an operator credential (OPERATOR_CREDENTIALS)."""
        logins = self.settings.operator_logins
        return operator_login(logins, request.headers.get("Authorization")) is not None

    def waiting_retry(self) -> dict[str, Any]:
        """The reconciliation checks that failed and wait for their next attempt (the
        deployment's, as the database had them at the last cycle): how many, and the
        ``WAITING_RETRY_SHOWN`` due soonest, each with its attempts, next time and last error."""
        core = self._core
        retries = list(core.reconciler.retries.items()) if core is not None else []
        now = time.time()
        soonest = sorted(retries, key=lambda item: item[1].next_at)[:WAITING_RETRY_SHOWN]
        return {
            "count": len(retries),
            "payments": [
                {
                    "payment_id": str(pid),
                    "attempts": r.attempts,
                    "next_at": r.next_at,
                    "next_in_seconds": round(r.next_at - now, 1),
                    "reason": r.reason,
                }
                for pid, r in soonest
            ],
        }

    def stats(self) -> dict[str, Any]:
        by_status = self.open.by_status()
        for status, count in by_status.items():
            self.metrics.open.labels(status).set(count)
        cycle = self.last_cycle
        return {
            "worker": self.app.conf.id,
            "url": str(self.app.conf.canonical_url),
            "partitions": {"active": self.owned_partitions(), "standby": self.standby_partitions()},
            "open": {"count": sum(by_status.values()), "by_status": by_status},
            "last_cycle": None if cycle is None else cycle.summary(),
            "blocked": self.blocks.state(),
            "waiting_retry": self.waiting_retry(),
        }

    def _register_views(self) -> None:
        worker = self

        def refused(view: View) -> Response:
            return view.json(
                {"title": "Unauthorized", "detail": "send an operator credential (HTTP Basic)"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="payments-worker"'},
            )

        @self.app.page("/healthz")
        class HealthView(View):
            async def get(self, request: Request) -> Response:
                blocked = worker.blocks.state()
                if blocked is None:
                    return self.json({"status": "ok"})
                return self.json(
                    {
                        "status": "blocked",
                        "since": blocked["since"],
                        "partition": blocked["partition"],
                        "waiting_for": blocked["waiting_for"],
                    },
                    status=503,
                )

        @self.app.page("/pending/")
        class PendingView(View):
            async def get(self, request: Request) -> Response:
                if not worker.authorized(request):
                    return refused(self)
                raw = request.query.get("limit", "10")
                limit = min(int(raw), 1000) if raw.isdigit() else 10
                now = time.time()
                return self.json(
                    {
                        "worker": worker.app.conf.id,
                        "partitions": worker.owned_partitions(),
                        "count": worker.open.count(),
                        "by_status": worker.open.by_status(),
                        "oldest": [
                            {
                                "payment_id": str(e.payment_id),
                                "status": e.status.value,
                                "created_at": e.created_at,
                                "age_seconds": round(now - e.created_at, 1),
                                "provider_payment_id": e.provider_payment_id,
                            }
                            for e in worker.open.oldest(limit)
                        ],
                    }
                )

        @self.app.page("/open/{payment_id}/")
        class OpenView(View):
            """Whether this worker holds a payment open: ``?created_at=<ISO 8601>`` (the
            payment's, as the API shows it) locates it in the age-keyed table."""

            async def get(self, request: Request, payment_id: str) -> Response:
                if not worker.authorized(request):
                    return refused(self)
                try:
                    pid = UUID(payment_id)
                    created = datetime.fromisoformat(request.query["created_at"]).timestamp()
                except (KeyError, ValueError):
                    return self.json(
                        {"title": "Bad request", "detail": "a payment id and ?created_at= (ISO)"},
                        status=400,
                    )
                entry = worker.open.find(pid, created)
                if entry is None:
                    return self.json({"payment_id": payment_id, "open": False}, status=404)
                return self.json({"open": True, **entry.to_json()})

        @self.app.page("/reconcile/")
        class ReconcileView(View):
            async def post(self, request: Request) -> Response:
                if not worker.authorized(request):
                    return refused(self)
                report = await worker.run_cycle()
                if report is None:
                    return self.json(
                        {"error": "the cycle failed; see the worker's log"}, status=500
                    )
                return self.json(report.summary())

        @self.app.page("/stats/")
        class StatsView(View):
            async def get(self, request: Request) -> Response:
                if not worker.authorized(request):
                    return refused(self)
                return self.json(worker.stats())

        @self.app.page("/metrics")
        class MetricsView(View):
            async def get(self, request: Request) -> Response:
                if not worker.authorized(request):
                    return refused(self)
                worker.stats()
                return self.bytes(
                    generate_latest(worker.metrics.registry),
                    content_type="text/plain; version=0.0.4",
                )
