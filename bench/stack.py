"""What the benchmarks need from the running stack: Kafka admin and producing, free ports,
HTTP polling, and a scratch Faust worker (own app id, data dir, web port and topics, so it never
joins the real worker's consumer group)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import requests
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from bench.report import parse_vmrss_kib, say
from payments.settings import Settings

PARTITION_COUNT = Settings().kafka_topic_partitions  # the one place that defines it: the settings

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / ".stack" / "bench"
HTTP_TIMEOUT = 10.0


def run_id() -> str:
    """Unique per run: scratch topics, app ids, idempotency keys and data dirs carry it."""
    return f"bench-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    what: str, check: Callable[[], bool], *, timeout: float, interval: float = 0.2
) -> float:
    """Poll ``check`` until it is true; the seconds it took. TimeoutError names ``what``."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except (requests.RequestException, OSError):
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def get_text(url: str, auth: tuple[str, str] | None = None) -> str:
    resp = requests.get(url, timeout=HTTP_TIMEOUT, auth=auth)
    resp.raise_for_status()
    return resp.text


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (psutil is not a dependency)."""
    total = parse_vmrss_kib(Path(f"/proc/{pid}/status").read_text())
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            with contextlib.suppress(OSError, ValueError):
                total += rss_kib(int(child))
    return total


# ------------------------------------------------------------------------------ Kafka


class Kafka:
    def __init__(self, settings: Settings) -> None:
        self.servers = settings.kafka_bootstrap_servers.split(",")
        self.admin = KafkaAdminClient(bootstrap_servers=self.servers, request_timeout_ms=30_000)

    def close(self) -> None:
        self.admin.close()

    def create_topic(self, name: str, partitions: int = PARTITION_COUNT) -> None:
        self.admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1}},
            wait_for_metadata=True,
        )

    def delete_topics_with_prefix(self, prefix: str) -> list[str]:
        topics = [t for t in self.admin.list_topics() if t.startswith(prefix)]
        if topics:
            self.admin.delete_topics(topics, raise_errors=False)
        return topics

    def delete_group(self, group: str) -> None:
        try:
            self.admin.delete_groups([group])
        except Exception as exc:  # an empty or unknown group: nothing to clean
            say(f"  (consumer group {group} not deleted: {type(exc).__name__})")

    def committed(self, group: str, topic: str) -> dict[int, int]:
        found = self.admin.list_group_offsets({group: None}).get(group, {})
        return {tp.partition: om.offset for tp, om in found.items() if tp.topic == topic}

    def producer(self) -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=self.servers,
            acks="all",
            linger_ms=20,
            batch_size=512 * 1024,
            max_request_size=8 * 1024**2,
            request_timeout_ms=30_000,
            retries=5,
        )

    def produce(self, topic: str, records: Iterable[tuple[bytes, bytes]], *, label: str) -> int:
        producer = self.producer()
        count = 0
        started = time.monotonic()
        for key, value in records:
            producer.send(topic, key=key, value=value)
            count += 1
            if count % 100_000 == 0:
                say(f"  {label}: {count:,} produced")
        producer.flush(timeout=120)
        producer.close(timeout=30)
        say(f"  {label}: {count:,} records produced in {time.monotonic() - started:.1f}s")
        return count

    def consumer(self, topic: str, *, from_end: bool) -> KafkaConsumer:
        """A group-less consumer on every partition of ``topic``."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.servers,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_bytes=16 * 1024**2,
            max_partition_fetch_bytes=4 * 1024**2,
            request_timeout_ms=30_000,
        )
        parts = [TopicPartition(topic, p) for p in range(PARTITION_COUNT)]
        consumer.assign(parts)
        if from_end:
            consumer.seek_to_end(*parts)
            for tp in parts:
                consumer.position(tp)  # resolve now, before anything is written
        else:
            consumer.seek_to_beginning(*parts)
        return consumer


# ------------------------------------------------------------------------------ scratch worker


class ScratchWorker:
    """A ``payments-worker worker`` process on scratch topics: ``<run>.public.payments`` in,
    ``<run>-status`` / ``<run>-dlq`` out, app id ``<run>``, state under ``.stack/bench/<run>``.
    Reconciliation is pushed out of the run (interval of a day): it would touch the real
    database for synthetic payments."""

    def __init__(self, settings: Settings, run: str) -> None:
        self.run = run
        self.app_id = run
        self.topic = f"{run}.public.payments"
        self.status_topic = f"{run}-status"
        self.port = free_port()
        self.datadir = BENCH_DIR / run / "worker"
        self.log_path = BENCH_DIR / run / "worker.log"
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Settings a benchmark changes for this worker (e.g. its Stripe).
        self.extra_env: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "WORKER_APP_ID": self.app_id,
                "WORKER_DATA_DIR": str(self.datadir),
                "WORKER_WEB_PORT": str(self.port),
                "CDC_TOPIC_PREFIX": self.run,
                "STATUS_TOPIC": self.status_topic,
                "DLQ_TOPIC": f"{self.run}-dlq",
                "RECONCILE_INTERVAL_SECONDS": "86400",
                **self.extra_env,
            }
        )
        return env

    def start(self) -> None:
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/payments-worker"),
                "worker",
                "--web-port",
                str(self.port),
                "--loglevel",
                "info",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "scratch worker not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> bool:
        if not self.alive():
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError("scratch worker exited; its log ends:\n" + "\n".join(tail))
        return True

    def stop(self, *, timeout: float = 60.0) -> None:
        """Graceful stop (SIGTERM, as an operator would), SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            say("  scratch worker ignored SIGTERM; killing it")
            self.proc.kill()
            self.proc.wait(timeout=10)

    def applied(self, kafka: Kafka) -> int:
        """Change records the worker has processed and committed (all its partitions)."""
        return sum(kafka.committed(self.app_id, self.topic).values())

    def cleanup(self, kafka: Kafka) -> None:
        self.stop()
        kafka.delete_group(self.app_id)
        deleted = kafka.delete_topics_with_prefix(self.run)
        shutil.rmtree(BENCH_DIR / self.run, ignore_errors=True)
        say(f"  scratch worker {self.app_id}: removed {len(deleted)} topics, group and state")


def wait_applied(
    worker: ScratchWorker, kafka: Kafka, total: int, *, timeout: float, label: str
) -> list[tuple[float, int]]:
    """Poll the committed offsets until ``total`` records are applied; the (time, applied)
    samples from the first progress on (``time.monotonic()``)."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    last_said = 0.0
    while True:
        worker.check_alive()
        applied = worker.applied(kafka)
        now = time.monotonic()
        if applied > 0:
            samples.append((now, applied))
        if applied >= total:
            return samples
        if now - last_said > 5:
            say(f"  {label}: {applied:,}/{total:,} applied")
            last_said = now
        if now > deadline:
            raise TimeoutError(f"{label}: only {applied:,}/{total:,} applied after {timeout:.0f}s")
        time.sleep(0.2)


# ------------------------------------------------------------------------------ run context


class Context:
    """What every benchmark gets: the settings, the size flags and the run id. ``smoke``: tiny
    sizes that only prove the benchmarks still run (``make test``); no figure means anything."""

    def __init__(
        self,
        settings: Settings,
        *,
        full: bool,
        run: str,
        smoke: bool = False,
        stripe_latency_ms: float = 250.0,
    ) -> None:
        self.settings = settings
        self.full = full
        self.smoke = smoke
        self.run = run
        self.stripe_latency_ms = stripe_latency_ms
        self._kafka: Kafka | None = None

    @property
    def operator_auth(self) -> tuple[str, str] | None:
        """The first operator login (the worker's views and the API's /metrics want one)."""
        return next(iter(self.settings.operator_logins.items()), None)

    @property
    def kafka(self) -> Kafka:
        if self._kafka is None:
            self._kafka = Kafka(self.settings)
        return self._kafka

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def close(self) -> None:
        if self._kafka is not None:
            self._kafka.close()
        shutil.rmtree(BENCH_DIR / self.run, ignore_errors=True)


def wait_worker_caught_up(ctx: Context, *, timeout: float = 180.0, slack: int = 10) -> None:
    """Wait until the change stream is quiet (no new records for 3 s: Debezium has streamed the
    earlier benchmarks' rows and deletes) and the real worker has processed it; a backlog would
    steal CPU from, or be measured by, the next figure."""
    topic = ctx.settings.cdc_payments_topic
    consumer = KafkaConsumer(bootstrap_servers=ctx.kafka.servers, request_timeout_ms=30_000)
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITION_COUNT)]
        quiet_since = [time.monotonic(), -1]

        def settled() -> bool:
            ends = consumer.end_offsets(parts)
            total = sum(ends.values())
            if total != quiet_since[1]:
                quiet_since[:] = [time.monotonic(), total]
            done = ctx.kafka.committed(ctx.settings.worker_app_id, topic)
            lag = sum(max(0, end - done.get(tp.partition, 0)) for tp, end in ends.items())
            return lag <= slack and time.monotonic() - quiet_since[0] >= 3.0

        took = wait_for("the change stream to settle", settled, timeout=timeout, interval=0.5)
        if took > 5:
            say(f"  waited {took:.0f}s for the change stream and the real worker to settle")
    finally:
        consumer.close()
