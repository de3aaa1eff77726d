"""Kafka: topics and end offsets, the latest records of a topic, consumer groups with their lag,
and the members of one group (for ``ops.workers``).

One admin client and one consumer per ``KafkaSource``, created on first use and rebuilt after an
error; kafka-python's clients are not thread-safe, so a lock serialises the sections that ask.
"""

from __future__ import annotations

import contextlib
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ops.common import DEFAULT_TIMEOUT_SECONDS, ObserveError
from payments.domain.events import EventFormatError, StatusUpdate

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
    """One status event as the page shows it: where Kafka holds it and the event's fields; a
    value that is not a status event is shown raw."""
    doc: dict[str, Any] = {
        "partition": partition,
        "offset": offset,
        "timestamp": datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(),
        "key": key.decode("utf-8", "replace") if key is not None else None,
    }
    try:
        doc.update(StatusUpdate.from_json(value or b"").to_dict())
    except EventFormatError:
        doc["raw"] = (value or b"").decode("utf-8", "replace")[:300]
    return doc


def newest(events: Iterable[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The ``n`` newest events across partitions (broker timestamp, then offset)."""
    ordered = sorted(events, key=lambda e: (e["timestamp"], e["offset"]), reverse=True)
    return ordered[:n]


# ----------------------------------------------------------------------------- group members


@dataclass(frozen=True)
class GroupMember:
    """One member of a consumer group as the group coordinator describes it. The user data of
    its subscription and assignment are the bytes the group's assignor put there (opaque to
    Kafka; ``ops.workers`` decodes Faust's)."""

    member_id: str
    client_id: str
    client_host: str
    # topic -> partitions, the consumer protocol's assignment (what the member consumes).
    assigned: dict[str, list[int]] = field(default_factory=dict)
    subscription_user_data: bytes | None = None
    assignment_user_data: bytes | None = None


_ESCAPED = re.compile(r"\\x([0-9a-fA-F]{2})|[^\\]+|\\", re.S)


def raw_bytes(value: Any) -> bytes | None:
    """The bytes of a protocol field as kafka-python's ``describe_groups`` hands them back.

    kafka-python 3 turns ``bytes`` fields into text with ``decode(errors="backslashreplace")``:
    valid UTF-8 stays text and each invalid byte becomes the four characters ``\\xNN``. This
    undoes that. Text that itself contained ``\\x`` and two hex digits would come back as one
    byte, so binary content must carry its own check (Faust's assignment is zlib, which has
    one); plain JSON never contains ``\\x``.
    """
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, str):
        raise ValueError(f"expected bytes or text, got {type(value).__name__}")
    out = bytearray()
    for m in _ESCAPED.finditer(value):
        out += bytes([int(m.group(1), 16)]) if m.group(1) else m.group(0).encode("utf-8")
    return bytes(out)


def subscription_user_data(raw: bytes) -> bytes | None:
    """The user data of a consumer-protocol subscription: ``version`` (int16), the topics
    (int32 count, then int16-length strings), then ``user_data`` (int32 length, -1 = null).
    Later versions only append fields, so this reads every version."""
    try:
        pos = 2
        (count,) = struct.unpack_from(">i", raw, pos)
        pos += 4
        for _ in range(max(0, count)):
            (length,) = struct.unpack_from(">h", raw, pos)
            pos += 2 + max(0, length)
        (length,) = struct.unpack_from(">i", raw, pos)
        pos += 4
    except struct.error as exc:
        raise ValueError(f"truncated consumer subscription ({len(raw)} bytes)") from exc
    if length < 0:
        return None
    if pos + length > len(raw):
        raise ValueError(f"truncated consumer subscription ({len(raw)} bytes)")
    return raw[pos : pos + length]


def _member(doc: Mapping[str, Any]) -> GroupMember:
    """A ``GroupMember`` from one member of kafka-python's ``describe_groups``: the
    subscription comes back raw when kafka-python could not decode it (Faust announces
    version 4 of the consumer protocol, which kafka-python reads as version 3 and fails), the
    assignment decoded (its layout is the same in every version)."""
    subscription: bytes | None = None
    metadata = doc.get("member_metadata")
    if isinstance(metadata, Mapping):
        subscription = raw_bytes(metadata.get("user_data"))
    elif metadata:
        try:
            raw = raw_bytes(metadata)
            subscription = subscription_user_data(raw) if raw else None
        except ValueError:
            subscription = None  # the member then shows as one without a readable URL
    assigned: dict[str, list[int]] = {}
    assignment_data: bytes | None = None
    assignment = doc.get("member_assignment")
    if isinstance(assignment, Mapping):
        for row in assignment.get("assigned_partitions") or []:
            assigned[str(row["topic"])] = sorted(int(p) for p in row["partitions"])
        assignment_data = raw_bytes(assignment.get("user_data"))
    return GroupMember(
        member_id=str(doc.get("member_id") or ""),
        client_id=str(doc.get("client_id") or ""),
        client_host=str(doc.get("client_host") or "").lstrip("/"),
        assigned=assigned,
        subscription_user_data=subscription,
        assignment_user_data=assignment_data,
    )


# ----------------------------------------------------------------------------- the source


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

    def group_members(self, group: str) -> list[GroupMember]:
        """The current members of consumer group ``group`` (none when it is empty or unknown),
        with their subscription and assignment user data."""

        def run() -> list[GroupMember]:
            described = self._admin_client().describe_groups([group]).get(group) or {}
            if described.get("error"):
                raise ObserveError(
                    f"{self.where}: consumer group {group} could not be described: "
                    f"{described['error']}"
                )
            return [_member(m) for m in described.get("members") or []]

        result: list[GroupMember] = self._call(run)
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
