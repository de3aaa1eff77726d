"""What an operator watches, collected from each part: Kafka topics, latest status events and
consumer-group lag, the Debezium connector, replication slots and replicas on the primary, and
the worker's pending table and last reconciliation cycle.

One small class per source, each call bounded by a short timeout; ``Observer.snapshot()`` runs
every section on its own thread and returns a plain dict in which each section carries
``ok``/``error``, so one part being down never hides the others. Served by the API at ``/ops``
and ``/ops.json``, printed by ``make status`` (``format_text``), exported as Prometheus gauges.
No framework here: nothing connects until a section is collected.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import psycopg
import requests

from cdc.connect import ConnectClient, ConnectError
from payments.settings import Settings

SECTIONS = ("topics", "events", "consumer_groups", "connector", "slots", "replicas", "worker")
TITLES = {
    "topics": "Kafka topics",
    "events": "Latest payment-status-update events",
    "consumer_groups": "Consumer groups",
    "connector": "Debezium connector",
    "slots": "Replication slots",
    "replicas": "Replicas",
    "worker": "Worker",
}
DEFAULT_TIMEOUT_SECONDS = 2.0
LATEST_EVENTS = 5

Section = dict[str, Any]
Snapshot = dict[str, Any]


class ObserveError(Exception):
    """A part could not be asked; the message says which part, where, and why."""


def _errno_reason(text: str) -> str:
    """The useful end of a long requests/urllib3 message (``[Errno 111] Connection refused``)."""
    found = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if found:
        return found.group(0).strip()
    if "timed out" in text.lower():
        return "timed out"
    return text.strip()[:500]


# ----------------------------------------------------------------------------- pure shaping


def group_lag(
    committed: Mapping[tuple[str, int], int], ends: Mapping[tuple[str, int], int]
) -> tuple[int | None, list[dict[str, Any]]]:
    """Total lag and per-partition rows of a group: end offset minus committed offset, never
    negative (the end is read after the commit, but from another request). The total is None
    when no partition has a known lag (e.g. Connect's group, which commits no offsets)."""
    rows: list[dict[str, Any]] = []
    for topic, partition in sorted(committed):
        offset = committed[(topic, partition)]
        end = ends.get((topic, partition))
        lag = None if end is None or offset < 0 else max(0, end - offset)
        rows.append(
            {
                "topic": topic,
                "partition": partition,
                "committed": offset,
                "end_offset": end,
                "lag": lag,
            }
        )
    known = [r["lag"] for r in rows if r["lag"] is not None]
    return (sum(known) if known else None), rows


def decode_event(
    partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None
) -> dict[str, Any]:
    """One status event as the page shows it; a value that is not JSON is shown raw."""
    try:
        body = json.loads(value) if value is not None else None
    except ValueError:
        body = None
    doc: dict[str, Any] = {
        "partition": partition,
        "offset": offset,
        "timestamp": datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(),
        "key": key.decode("utf-8", "replace") if key is not None else None,
    }
    if isinstance(body, dict):
        for name in (
            "event_id",
            "payment_id",
            "previous_status",
            "status",
            "source",
            "amount_minor",
            "currency",
            "version",
            "occurred_at",
        ):
            doc[name] = body.get(name)
    else:
        doc["raw"] = (value or b"").decode("utf-8", "replace")[:300]
    return doc


def newest(events: Iterable[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The ``n`` newest events across partitions (broker timestamp, then offset)."""
    ordered = sorted(events, key=lambda e: (e["timestamp"], e["offset"]), reverse=True)
    return ordered[:n]


# ----------------------------------------------------------------------------- sources


class KafkaSource:
    """Topics, end offsets, consumer groups and the latest records, over one admin client and
    one consumer, created on first use and rebuilt after an error. Not shared between threads:
    a lock serialises the callers (kafka-python's consumer is not thread-safe)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        admin_factory: Callable[[], Any] | None = None,
        consumer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout = timeout
        ms = int(timeout * 1000)
        self._admin_factory = admin_factory or (
            lambda: _kafka_admin(bootstrap_servers, ms)  # pragma: no cover - real client
        )
        self._consumer_factory = consumer_factory or (
            lambda: _kafka_consumer(bootstrap_servers, ms)  # pragma: no cover - real client
        )
        self._admin: Any = None
        self._consumer: Any = None
        self._lock = threading.Lock()
        # (when, why) of the last failed connection: the next sections of the same snapshot
        # answer at once with the same reason instead of each waiting out the timeout again.
        self._down: tuple[float, str] | None = None

    @property
    def where(self) -> str:
        return f"Kafka at {self.bootstrap_servers}"

    def _recently_down(self) -> str | None:
        down = self._down
        if down is not None and time.monotonic() - down[0] < self.timeout * 2:
            return down[1]
        return None

    def _call(self, fn: Callable[[], Any]) -> Any:
        if (why := self._recently_down()) is not None:
            raise ObserveError(why)
        if not self._lock.acquire(timeout=self.timeout * 2):
            raise ObserveError(f"{self.where}: a previous request is still waiting for Kafka")
        try:
            if (why := self._recently_down()) is not None:
                raise ObserveError(why)
            result = fn()
            self._down = None
            return result
        except ObserveError:
            raise
        except Exception as exc:
            self._reset()
            if type(exc).__name__ in {
                "KafkaTimeoutError",
                "NoBrokersAvailable",
                "KafkaConnectionError",
            }:
                text = str(exc)
                if not text.startswith(type(exc).__name__):
                    text = f"{type(exc).__name__}: {text}"
                why = f"{self.where} unreachable: {text}"
                self._down = (time.monotonic(), why)
                raise ObserveError(why) from exc
            raise
        finally:
            self._lock.release()

    def _admin_client(self) -> Any:
        if self._admin is None:
            self._admin = self._admin_factory()
        return self._admin

    def _reset(self) -> None:
        for client in (self._admin, self._consumer):
            if client is not None:
                with contextlib.suppress(Exception):  # best effort on a broken client
                    client.close()
        self._admin = self._consumer = None

    def close(self) -> None:
        # At exit: do not wait long for a call stuck on a dead broker.
        locked = self._lock.acquire(timeout=self.timeout)
        try:
            self._reset()
        finally:
            if locked:
                self._lock.release()

    def _end_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec

        specs = {TopicPartition(t, p): OffsetSpec.LATEST for t, p in partitions}
        if not specs:
            return {}
        found = self._admin_client().list_partition_offsets(
            specs, timeout_ms=int(self.timeout * 1000)
        )
        return {(tp.topic, tp.partition): int(o.offset) for tp, o in found.items()}

    def _partitions(self, topics: Sequence[str] | None = None) -> dict[str, list[int]]:
        described = self._admin_client().describe_topics(list(topics) if topics else None)
        return {
            str(t["name"]): sorted(int(p["partition_index"]) for p in t["partitions"])
            for t in described
            if not t.get("is_internal") and not t.get("error_code")
        }

    def topics(self) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            partitions = self._partitions()
            ends = self._end_offsets((t, p) for t, ps in partitions.items() for p in ps)
            out = []
            for topic in sorted(partitions):
                rows = [
                    {"partition": p, "end_offset": ends.get((topic, p))} for p in partitions[topic]
                ]
                out.append(
                    {
                        "topic": topic,
                        "partitions": len(rows),
                        "messages": sum(r["end_offset"] or 0 for r in rows),
                        "end_offsets": rows,
                    }
                )
            return out

        result: list[dict[str, Any]] = self._call(run)
        return result

    def consumer_groups(self) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            admin = self._admin_client()
            groups = sorted(admin.list_groups(), key=lambda g: str(g["group_id"]))
            ids = [str(g["group_id"]) for g in groups]
            if not ids:
                return []
            # Members' metadata decodes only for the consumer protocol (not Connect's).
            consumers = [str(g["group_id"]) for g in groups if g.get("protocol_type") == "consumer"]
            described = admin.describe_groups(consumers) if consumers else {}
            offsets = admin.list_group_offsets({gid: None for gid in ids})
            committed: dict[str, dict[tuple[str, int], int]] = {
                gid: {(tp.topic, tp.partition): int(o.offset) for tp, o in found.items()}
                for gid, found in offsets.items()
            }
            ends = self._end_offsets({tp for c in committed.values() for tp in c})
            out = []
            for group in groups:
                gid = str(group["group_id"])
                total, rows = group_lag(committed.get(gid, {}), ends)
                info = described.get(gid) or {}
                out.append(
                    {
                        "group": gid,
                        "protocol_type": group.get("protocol_type") or "",
                        "state": info.get("group_state") or group.get("group_state") or "",
                        "members": len(info["members"]) if "members" in info else None,
                        "lag": total,
                        "partitions": rows,
                    }
                )
            return out

        result: list[dict[str, Any]] = self._call(run)
        return result

    def latest(self, topic: str, n: int) -> list[dict[str, Any]]:
        """The ``n`` newest records of ``topic``: read the last ``n`` of every partition."""

        def run() -> list[dict[str, Any]]:
            from kafka import TopicPartition

            partitions = self._partitions([topic]).get(topic, [])
            if not partitions:
                raise ObserveError(f"{self.where}: topic {topic} does not exist yet")
            ends = self._end_offsets((topic, p) for p in partitions)
            if self._consumer is None:
                self._consumer = self._consumer_factory()
            consumer = self._consumer
            wanted = {p: end for (_, p), end in ends.items() if end > 0}
            if not wanted:
                return []
            tps = [TopicPartition(topic, p) for p in wanted]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, max(0, wanted[tp.partition] - n))
            seen: list[dict[str, Any]] = []
            done: set[int] = set()
            deadline = time.monotonic() + self.timeout
            while len(done) < len(wanted) and time.monotonic() < deadline:
                batches = consumer.poll(timeout_ms=200)
                for tp, records in batches.items():
                    for r in records:
                        seen.append(
                            decode_event(tp.partition, r.offset, r.timestamp, r.key, r.value)
                        )
                        if r.offset >= wanted[tp.partition] - 1:
                            done.add(tp.partition)
            return newest(seen, n)

        result: list[dict[str, Any]] = self._call(run)
        return result


def _kafka_admin(bootstrap_servers: str, timeout_ms: int) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="payments-ops",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
        reconnect_backoff_max_ms=1000,
    )


def _kafka_consumer(bootstrap_servers: str, timeout_ms: int) -> Any:
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id="payments-ops",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=max(timeout_ms, 1000),
        reconnect_backoff_max_ms=1000,
    )


class ConnectSource:
    """The Debezium connector's state and its tasks' traces, through ``cdc.connect``'s client
    with one short attempt (a page must not wait for Connect's rebalances)."""

    def __init__(
        self, base_url: str, connector: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connector = connector
        self.client = ConnectClient(base_url, timeout=timeout, attempts=1, sleep=lambda _: None)

    def status(self) -> dict[str, Any]:
        try:
            state = self.client.status(self.connector)
        except ConnectError as exc:
            raise ObserveError(
                f"Kafka Connect at {self.base_url} unreachable: {_errno_reason(str(exc))}"
            ) from exc
        except ValueError as exc:  # not JSON: something else answers on that port
            raise ObserveError(f"Kafka Connect at {self.base_url} answered non-JSON") from exc
        if state is None:
            raise ObserveError(
                f"connector {self.connector} is not registered in Kafka Connect at "
                f"{self.base_url}; run scripts/register-connectors"
            )
        return {
            "connector": self.connector,
            "state": state.connector,
            "running": state.running,
            "tasks": [{"id": i, "state": s, "trace": trace} for i, s, trace in state.tasks],
            "trace": state.failed_trace,
        }

    def close(self) -> None:
        self.client.session.close()


SLOTS_SQL = """
    SELECT slot_name, slot_type, coalesce(plugin, '') AS plugin, active,
           coalesce(wal_status, '') AS wal_status,
           pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, restart_lsn))::bigint
               AS lag_bytes,
           pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
      FROM pg_replication_slots
     ORDER BY slot_name"""

REPLICAS_SQL = """
    SELECT r.application_name, host(r.client_addr) AS client_addr, r.state, r.sync_state,
           s.slot_name,
           pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint AS replay_lag_bytes,
           extract(epoch FROM r.replay_lag)::float8 AS replay_lag_seconds
      FROM pg_stat_replication r
      LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
     WHERE s.slot_type IS DISTINCT FROM 'logical'
     ORDER BY r.application_name"""


class PostgresSource:
    """Replication slots and streaming replicas, as the primary sees them (needs pg_monitor)."""

    def __init__(self, database_url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.database_url = database_url
        self.timeout = timeout
        parts = urlsplit(database_url)
        self.where = f"PostgreSQL primary at {parts.hostname}:{parts.port or 5432}"

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        try:
            with psycopg.connect(
                self.database_url,
                connect_timeout=max(1, round(self.timeout)),
                options=f"-c statement_timeout={int(self.timeout * 1000)}",
                autocommit=True,
                application_name="payments-ops",
            ) as conn:
                cur = conn.execute(sql.encode())
                names = [d.name for d in cur.description or []]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())[:500]
            raise ObserveError(f"{self.where} unreachable: {reason}") from exc

    def slots(self) -> list[dict[str, Any]]:
        return self._rows(SLOTS_SQL)

    def replicas(self) -> list[dict[str, Any]]:
        return self._rows(REPLICAS_SQL)


class WorkerSource:
    """The worker's web views: ``/stats/`` (last cycle) and ``/pending/`` (count, oldest)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        session: requests.Session | None = None,
    ) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout
        self.session = session or requests.Session()

    def _get(self, url: str) -> Any:
        try:
            resp = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ObserveError(f"worker at {url} unreachable: {_errno_reason(str(exc))}") from exc
        if resp.status_code != 200:
            raise ObserveError(f"worker at {url} answered HTTP {resp.status_code}")
        try:
            return resp.json()
        except ValueError as exc:
            raise ObserveError(f"worker at {url} answered non-JSON") from exc

    def workers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for base in self.urls:
            try:
                stats = self._get(f"{base}/stats/")
                pending = self._get(f"{base}/pending/?limit=3")
            except ObserveError as exc:
                out.append({"url": base, "ok": False, "error": str(exc)})
                continue
            out.append(
                {
                    "url": base,
                    "ok": True,
                    "error": None,
                    "worker": stats.get("worker"),
                    "partitions": pending.get("partitions", []),
                    "pending": pending.get("count", stats.get("pending")),
                    "oldest": pending.get("oldest", []),
                    "last_cycle": stats.get("last_cycle"),
                }
            )
        failed = [str(w["error"]) for w in out if not w["ok"]]
        if failed and len(failed) == len(out):
            raise ObserveError("; ".join(failed))
        return out

    def close(self) -> None:
        self.session.close()


# ----------------------------------------------------------------------------- the snapshot


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
            "connector": f"Kafka Connect at {self.connect.base_url}",
            "slots": self.postgres.where,
            "replicas": self.postgres.where,
            "worker": ", ".join(self.worker.urls),
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


def collect(
    collectors: Mapping[str, Callable[[], Any]],
    *,
    sources: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS * 3,
) -> Snapshot:
    """Run each collector on its own thread; a section that raises or does not answer within
    ``timeout`` seconds reports why, and the others are unaffected."""
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


def build_observer(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Observer:
    """Sources from settings; nothing connects until a section is collected."""
    return Observer(
        kafka=KafkaSource(settings.kafka_bootstrap_servers, timeout=timeout),
        connect=ConnectSource(
            settings.kafka_connect_url, settings.cdc_connector_name, timeout=timeout
        ),
        postgres=PostgresSource(settings.database_url, timeout=timeout),
        worker=WorkerSource(settings.worker_urls, timeout=timeout),
        status_topic=settings.status_topic,
        section_timeout=timeout * 3,
    )


# ----------------------------------------------------------------------------- text


def format_text(snapshot: Snapshot) -> list[str]:
    """The snapshot as the terminal lines of ``make status``."""
    lines: list[str] = []
    for name, section in snapshot["sections"].items():
        if not section["ok"]:
            lines.append(f"  {section['title']}: UNAVAILABLE - {section['error']}")
            continue
        data = section["data"]
        if name == "topics":
            for t in data:
                ends = " ".join(f"p{r['partition']}={r['end_offset']}" for r in t["end_offsets"])
                lines.append(f"  topic {t['topic']:<44} {t['messages']:>8} messages  [{ends}]")
        elif name == "events":
            for e in data:
                lines.append(
                    f"  event {e['timestamp']} {e.get('payment_id') or e['key']} "
                    f"{e.get('previous_status')} -> {e.get('status')} ({e.get('source')})"
                )
            if not data:
                lines.append("  no payment-status-update events yet")
        elif name == "consumer_groups":
            for g in data:
                lines.append(
                    f"  group {g['group']:<30} {g['state']:<12} "
                    f"members {'-' if g['members'] is None else g['members']}  "
                    f"lag {'-' if g['lag'] is None else g['lag']}"
                )
        elif name == "connector":
            tasks = ", ".join(f"task {t['id']} {t['state']}" for t in data["tasks"])
            lines.append(f"  connector {data['connector']} {data['state']}; {tasks or 'no tasks'}")
            if data["trace"]:
                lines.append("    " + data["trace"].strip().splitlines()[0][:300])
        elif name == "slots":
            for s in data:
                lines.append(
                    f"  slot {s['slot_name']:<24} {s['slot_type']:<8} active={s['active']!s:<5} "
                    f"lag {s['lag_bytes']} bytes, retained WAL {s['retained_bytes']} bytes"
                )
        elif name == "replicas":
            for r in data:
                lines.append(
                    f"  replica {r['application_name']:<12} {r['state']:<10} "
                    f"replay lag {r['replay_lag_bytes']} bytes"
                    + (
                        f" ({r['replay_lag_seconds']:.3f} s)"
                        if r["replay_lag_seconds"] is not None
                        else ""
                    )
                )
        elif name == "worker":
            for w in data:
                if not w["ok"]:
                    lines.append(f"  worker {w['url']}: UNAVAILABLE - {w['error']}")
                    continue
                cycle = w["last_cycle"]
                last = (
                    "no reconciliation cycle yet"
                    if not cycle
                    else (
                        f"last cycle: {cycle['resolved']} resolved, {cycle['expired']} expired, "
                        f"{cycle['errors']} errors, {cycle['stripe_calls']} Stripe calls"
                    )
                )
                lines.append(f"  worker {w['url']} pending {w['pending']}; {last}")
    return lines
