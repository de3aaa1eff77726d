"""The snapshot: every section collected on its own thread, each bounded by a timeout, into a
plain dict in which each section carries ``ok``/``error``/``data``, so one part being down never
hides the others. ``BackgroundSnapshot`` keeps the latest one, refreshed by a daemon thread, for
callers that must answer at once (``/metrics``)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ops.common import DEFAULT_TIMEOUT_SECONDS, ObserveError, PartlyObserved
from ops.connect import ConnectSource
from ops.kafka import KafkaSource
from ops.postgres import PostgresSource
from ops.workers import WorkerSource
from payments.logs import get_logger
from payments.settings import Settings

log = get_logger(__name__)

SECTIONS = ("topics", "events", "consumer_groups", "connector", "slots", "replicas", "worker")
TITLES = {
    "topics": "Kafka topics",
    "events": "Latest payment-status-update events",
    "consumer_groups": "Consumer groups",
    "connector": "Debezium connector",
    "slots": "Replication slots",
    "replicas": "Replicas",
    "worker": "Workers",
}
LATEST_EVENTS = 5

Section = dict[str, Any]
Snapshot = dict[str, Any]


def collect(
    collectors: Mapping[str, Callable[[], Any]],
    *,
    sources: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS * 3,
) -> Snapshot:
    """Run each collector on its own thread; a section that raises or does not answer within
    ``timeout`` seconds reports why, and the others are unaffected. A collector that raises
    ``PartlyObserved`` reports why and still shows what it could read."""
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=max(1, len(collectors)), thread_name_prefix="ops")
    futures = {name: pool.submit(fn) for name, fn in collectors.items()}
    sections: dict[str, Section] = {}
    try:
        for name, future in futures.items():
            remaining = max(0.0, timeout - (time.monotonic() - started))
            section: Section = {
                "title": TITLES.get(name, name),
                "source": (sources or {}).get(name, ""),
                "ok": False,
                "error": None,
                "data": None,
            }
            try:
                section["data"] = future.result(timeout=remaining)
                section["ok"] = True
            except FutureTimeout:
                section["error"] = f"no answer within {timeout:g} s"
            except PartlyObserved as exc:
                section["error"] = str(exc)
                section["data"] = exc.data
            except ObserveError as exc:
                section["error"] = str(exc)
            except Exception as exc:
                section["error"] = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
            sections[name] = section
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return {
        "collected_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ok": all(s["ok"] for s in sections.values()),
        "sections": sections,
    }


@dataclass
class Observer:
    """Every source, and how to collect each section. Build once per process, ``close()`` on
    exit; ``snapshot()`` is safe to call from several threads."""

    kafka: KafkaSource
    connect: ConnectSource
    postgres: PostgresSource
    worker: WorkerSource
    status_topic: str = "payment-status-update"
    latest_events: int = LATEST_EVENTS
    section_timeout: float = DEFAULT_TIMEOUT_SECONDS * 3
    collectors: dict[str, Callable[[], Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.collectors = {
            "topics": self.kafka.topics,
            "events": lambda: self.kafka.latest(self.status_topic, self.latest_events),
            "consumer_groups": self.kafka.consumer_groups,
            "connector": self.connect.status,
            "slots": self.postgres.slots,
            "replicas": self.postgres.replicas,
            "worker": self.worker.workers,
        }

    def sources(self) -> dict[str, str]:
        return {
            "topics": self.kafka.where,
            "events": self.kafka.where,
            "consumer_groups": self.kafka.where,
            "connector": self.connect.where,
            "slots": self.postgres.where,
            "replicas": self.postgres.where,
            "worker": self.worker.where,
        }

    def snapshot(self, sections: Sequence[str] = SECTIONS) -> Snapshot:
        return collect(
            {name: self.collectors[name] for name in sections},
            sources=self.sources(),
            timeout=self.section_timeout,
        )

    def close(self) -> None:
        self.kafka.close()
        self.connect.close()
        self.worker.close()


def operator_auth(settings: Settings) -> tuple[str, str] | None:
    """The operator credential the collector sends to the workers: the first configured."""
    return next(iter(settings.operator_logins.items()), None)


def build_observer(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Observer:
    """Sources from settings; nothing connects until a section is collected."""
    kafka = KafkaSource(settings.kafka_bootstrap_servers, timeout=timeout)
    return Observer(
        kafka=kafka,
        connect=ConnectSource(
            settings.kafka_connect_url, settings.cdc_connector_name, timeout=timeout
        ),
        postgres=PostgresSource(settings.database_url, timeout=timeout),
        worker=WorkerSource(
            settings.worker_app_id,
            settings.cdc_payments_topic,
            members=kafka.group_members,
            fallback_urls=settings.worker_urls,
            timeout=timeout,
            auth=operator_auth(settings),
        ),
        status_topic=settings.status_topic,
        section_timeout=timeout * 3,
    )


class BackgroundSnapshot:
    """The latest result of ``take``, refreshed by one daemon thread at most every
    ``interval`` seconds. The thread starts on the first ``latest()`` (never at import or
    construction, so a forking server starts it in the process that serves), and again in a
    forked child, where the parent's thread does not exist."""

    def __init__(
        self,
        take: Callable[[], Snapshot],
        *,
        interval: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._latest: tuple[Snapshot, float] | None = None

    def latest(self) -> tuple[Snapshot | None, float | None]:
        """The latest snapshot and its age in seconds (None, None before the first one)."""
        self._start()
        found = self._latest
        if found is None:
            return None, None
        snapshot, taken_at = found
        return snapshot, max(0.0, self._clock() - taken_at)

    def _start(self) -> None:
        if self._pid == os.getpid() or self._stop.is_set():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._latest = None  # a parent's snapshot, in a forked child: take our own
            self._thread = threading.Thread(target=self._run, name="ops-snapshot", daemon=True)
            self._pid = os.getpid()
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                self._latest = (self._take(), started)
            except Exception:  # the next round tries again; the age says how old ours is
                log.exception("ops snapshot refresh failed")
            self._stop.wait(max(0.0, self.interval - (self._clock() - started)))

    def close(self) -> None:
        self._stop.set()
