"""The operations snapshot over fakes: shaping, failure handling, Faust's group metadata, the
workers' views in both shapes, the terminal text and the background snapshot."""

from __future__ import annotations

import json
import random
import re
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import requests
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment

from ops.common import ObserveError, PartlyObserved
from ops.kafka import (
    GroupMember,
    KafkaSource,
    _member,
    decode_event,
    group_lag,
    newest,
    raw_bytes,
)
from ops.snapshot import BackgroundSnapshot, Observer, collect
from ops.text import format_text
from ops.workers import WorkerSource, faust_member, worker_figures

TOPIC = "dbserver1.public.payments"


def test_group_lag_is_end_minus_committed_per_partition_and_summed() -> None:
    total, rows = group_lag(
        {("t", 1): 7, ("t", 0): 10, ("u", 0): 5},
        {("t", 0): 15, ("t", 1): 7, ("u", 0): 4},
    )
    assert [(r["topic"], r["partition"], r["lag"]) for r in rows] == [
        ("t", 0, 5),
        ("t", 1, 0),
        # the end was read from another request than the commit: never a negative lag
        ("u", 0, 0),
    ]
    assert total == 5


def test_group_lag_unknown_without_committed_offsets_or_end() -> None:
    assert group_lag({}, {("t", 0): 3}) == (None, [])
    total, rows = group_lag({("t", 0): 2}, {})
    assert total is None and rows[0]["lag"] is None


A = "6f1c2d3e-0000-4000-8000-00000000000a"
B = "6f1c2d3e-0000-4000-8000-00000000000b"


def _event(payment_id: str, version: int, previous: str, status: str) -> bytes:
    return json.dumps(
        {
            "event_id": f"{payment_id}:{version}",
            "payment_id": payment_id,
            "tenant_id": "acme",
            "status": status,
            "previous_status": previous,
            "amount_minor": 1999,
            "currency": "eur",
            "provider_payment_id": "pi_123",
            "source": "webhook",
            "version": version,
            "occurred_at": "2026-11-23T08:00:00+00:00",
        }
    ).encode()


def test_newest_events_across_partitions_and_undecodable_values() -> None:
    events = [
        decode_event(0, 4, 1_000, A.encode(), _event(A, 2, "pending", "succeeded")),
        decode_event(1, 9, 3_000, B.encode(), _event(B, 3, "pending", "failed")),
        decode_event(2, 1, 2_000, b"c", b"not json"),
        decode_event(3, 7, 1_500, b"d", b'{"event_id": "d:1", "status": "succeeded"}'),
    ]
    latest = newest(events, 3)
    assert [e.get("event_id") for e in latest] == [f"{B}:3", None, None]
    assert latest[0]["timestamp"].startswith("1970-01-01T00:00:03")
    assert latest[0] == {
        "partition": 1,
        "offset": 9,
        "timestamp": "1970-01-01T00:00:03+00:00",
        "key": B,
        "event_id": f"{B}:3",
        "payment_id": B,
        "tenant_id": "acme",
        "status": "failed",
        "previous_status": "pending",
        "amount_minor": 1999,
        "currency": "eur",
        "provider_payment_id": "pi_123",
        "source": "webhook",
        "version": 3,
        "occurred_at": "2026-11-23T08:00:00+00:00",
    }
    # Not JSON, or JSON that is not a whole status event: shown as it came.
    assert latest[1]["raw"] == "not json"
    assert latest[2]["raw"] == '{"event_id": "d:1", "status": "succeeded"}'


def test_a_failing_or_hanging_section_reports_why_and_the_others_still_answer() -> None:
    release = threading.Event()

    def down() -> Any:
        raise ObserveError("Kafka Connect at http://127.0.0.1:1 unreachable: refused")

    def broken() -> Any:
        raise KeyError("state")

    def hangs() -> Any:
        release.wait(5)
        return []

    def half() -> Any:
        raise PartlyObserved("worker at http://w2 unreachable: refused", {"workers": [1, 2]})

    try:
        snap = collect(
            {
                "topics": lambda: [{"topic": "t"}],
                "connector": down,
                "slots": broken,
                "w": hangs,
                "worker": half,
            },
            timeout=0.3,
        )
    finally:
        release.set()
    s = snap["sections"]
    assert snap["ok"] is False
    assert s["topics"] == {
        "title": "Kafka topics",
        "source": "",
        "ok": True,
        "error": None,
        "data": [{"topic": "t"}],
    }
    assert s["connector"]["error"] == "Kafka Connect at http://127.0.0.1:1 unreachable: refused"
    assert s["connector"]["data"] is None
    assert s["slots"]["error"] == "KeyError: 'state'"
    assert s["w"]["ok"] is False and "no answer within 0.3 s" in s["w"]["error"]
    # red, with the reason, and still what could be read
    assert s["worker"]["ok"] is False
    assert s["worker"]["error"] == "worker at http://w2 unreachable: refused"
    assert s["worker"]["data"] == {"workers": [1, 2]}


class FlakyAdmin:
    def __init__(self, log: list[str], fail: bool) -> None:
        self.log, self.fail = log, fail

    def list_groups(self) -> list[dict[str, str]]:
        if self.fail:
            raise ConnectionError("broker went away")
        return []

    def close(self) -> None:
        self.log.append("closed")


def test_kafka_source_rebuilds_its_client_after_an_error_and_closes_it() -> None:
    log: list[str] = []
    admins = iter([FlakyAdmin(log, fail=True), FlakyAdmin(log, fail=False)])
    source = KafkaSource("k:9092", admin_factory=lambda: next(admins))
    with pytest.raises(ConnectionError):
        source.consumer_groups()
    assert log == ["closed"]  # the broken client is dropped ...
    assert source.consumer_groups() == []  # ... and a new one made on the next call
    source.close()
    assert log == ["closed", "closed"]


def test_kafka_down_is_reported_once_per_snapshot_not_waited_for_by_every_section() -> None:
    from kafka.errors import KafkaTimeoutError

    attempts: list[int] = []

    def unreachable() -> Any:
        attempts.append(1)
        raise KafkaTimeoutError("Unable to bootstrap from k:9092")

    source = KafkaSource("k:9092", admin_factory=unreachable)
    for ask in (source.topics, source.consumer_groups, lambda: source.group_members("g")):
        with pytest.raises(ObserveError, match=r"Kafka at k:9092 unreachable: .*bootstrap"):
            ask()
    assert len(attempts) == 1


# ----------------------------------------------------------------------------- Faust's group


def faust_described_member(
    member_id: str,
    url: str,
    actives: dict[str, list[int]],
    standbys: dict[str, list[int]],
    *,
    consumed: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """One member of a Faust group as kafka-python 3's ``describe_groups`` returns it: the
    subscription and assignment encoded by aiokafka as Faust's assignor does (version 4,
    ``ClientMetadata`` JSON in the subscription, zlib of it in the assignment), the
    subscription left undecoded by kafka-python and the assignment decoded, bytes turned into
    text with ``backslashreplace`` (kafka-python's ``Bytes.to_json``)."""
    record = ClientMetadata(
        assignment=ClientAssignment(actives=actives, standbys=standbys),
        url=url,
        changelog_distribution={},
    )
    subscription = ConsumerProtocolMemberMetadata(4, sorted(actives), record.dumps()).encode()
    assignment = ConsumerProtocolMemberAssignment(
        4, sorted((consumed or actives).items()), zlib.compress(record.dumps())
    ).encode()
    return {
        "member_id": member_id,
        "group_instance_id": None,
        "client_id": "faust-0.15.3",
        "client_host": "/127.0.0.1",
        "member_metadata": subscription.decode(errors="backslashreplace"),
        "member_assignment": ConsumerProtocolAssignment.decode(assignment).to_dict(),
    }


def test_raw_bytes_undoes_kafka_pythons_backslashreplace() -> None:
    rng = random.Random(7)
    ambiguous = re.compile(rb"\\x[0-9a-fA-F]{2}")
    checked = 0
    for _ in range(2_000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        if ambiguous.search(data):
            continue  # documented: such text comes back as one byte (zlib's check catches it)
        assert raw_bytes(data.decode(errors="backslashreplace")) == data
        checked += 1
    assert checked > 1_900
    assert raw_bytes(b"\x00\xff") == b"\x00\xff"
    assert raw_bytes(None) is None


def test_a_faust_member_is_decoded_to_its_url_and_its_partitions_of_the_change_topic() -> None:
    doc = faust_described_member(
        "m-1",
        "http://127.0.0.1:6067",
        actives={TOPIC: [4, 0, 2], "app-pending-changelog": [0, 2, 4]},
        standbys={TOPIC: [1, 3], "app-pending-changelog": [1, 3]},
        consumed={TOPIC: [0, 2, 4], "app-pending-changelog": [0, 1, 2, 3, 4]},
    )
    member = _member(doc)
    assert member.client_host == "127.0.0.1"
    assert member.assigned[TOPIC] == [0, 2, 4]
    decoded = faust_member(member, TOPIC)
    assert decoded.url == "http://127.0.0.1:6067"
    assert decoded.active == [0, 2, 4]
    assert decoded.standby == [1, 3]
    assert decoded.problem is None


def test_without_fausts_assignment_record_the_kafka_assignment_gives_the_actives() -> None:
    doc = faust_described_member("m-1", "http://w1", actives={TOPIC: [1, 5]}, standbys={})
    doc["member_assignment"]["user_data"] = "not zlib"
    decoded = faust_member(_member(doc), TOPIC)
    assert (decoded.url, decoded.active, decoded.standby) == ("http://w1", [1, 5], None)
    assert decoded.problem is not None and "standbys unknown" in decoded.problem


def test_a_member_that_is_not_a_faust_worker_has_no_url_and_says_so() -> None:
    member = GroupMember("m-9", "console-consumer", "10.0.0.9", {TOPIC: [0]}, b"", None)
    decoded = faust_member(member, TOPIC)
    assert decoded.url is None and decoded.active == [0]
    assert decoded.problem is not None and "m-9" in decoded.problem


# ----------------------------------------------------------------------------- workers' views

NEW_STATS = {
    "worker": "payments-worker",
    "url": "http://w1",
    "partitions": {"active": [0, 2, 4], "standby": [1, 3, 5]},
    "open": {"count": 7, "by_status": {"pending": 5, "failed": 2}},
    "last_cycle": {"resolved": 3, "expired": 0, "errors": 0, "stripe_calls": 4},
    "blocked": {"since": 1_700_000_000, "partition": 2, "reason": "producing timed out"},
    "waiting_retry": {
        "count": 41,
        "payments": [
            {
                "payment_id": "p-7",
                "attempts": 3,
                "next_at": 1_700_000_240.0,
                "next_in_seconds": 240.0,
                "reason": "Stripe has no PaymentIntent pi_gone",
            }
        ],
    },
}
OLD_STATS = {"worker": "payments-worker", "last_cycle": None, "pending": 3}
OLD_PENDING = {
    "worker": "payments-worker",
    "partitions": [1, 3, 5],
    "count": 3,
    "oldest": [{"payment_id": "p-1", "age_seconds": 12.5}],
}


def test_worker_figures_read_both_shapes_of_stats() -> None:
    new = worker_figures(NEW_STATS, None)
    assert new["open"] == 7
    assert new["by_status"] == {"pending": 5, "failed": 2}
    assert new["reported"] == {"active": [0, 2, 4], "standby": [1, 3, 5]}
    assert new["blocked"]["partition"] == 2
    assert new["waiting_retry"]["count"] == 41
    assert [(r["payment_id"], r["attempts"]) for r in new["waiting_retry"]["payments"]] == [
        ("p-7", 3)
    ]
    old = worker_figures(OLD_STATS, OLD_PENDING)
    assert (old["open"], old["by_status"], old["blocked"]) == (3, None, None)
    assert old["waiting_retry"] is None
    assert old["reported"] == {"active": [1, 3, 5], "standby": None}
    assert old["oldest"][0]["payment_id"] == "p-1"


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code, self._body = status, body

    def json(self) -> Any:
        return self._body


class FakeSession:
    """Answers GETs by URL; records the URL and credential of each."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def get(self, url: str, *, timeout: float, auth: Any = None) -> FakeResponse:
        with self.lock:
            self.asked.append((url, auth))
        found = self.answers.get(url)
        if found is None:
            raise requests.ConnectionError(
                f"HTTPConnectionPool: [Errno 111] Connection refused {url}"
            )
        if isinstance(found, int):
            return FakeResponse(found, None)
        return FakeResponse(200, found)

    def close(self) -> None:
        pass


def _group(*docs: dict[str, Any]) -> Callable[[str], list[GroupMember]]:
    def members(group: str) -> list[GroupMember]:
        assert group == "payments-worker"
        return [_member(d) for d in docs]

    return members


TWO_WORKERS = (
    faust_described_member("m-2", "http://w2", {TOPIC: [1, 3, 5]}, {TOPIC: [0, 2, 4]}),
    faust_described_member("m-1", "http://w1", {TOPIC: [0, 2, 4]}, {TOPIC: [1, 3, 5]}),
)


def test_every_worker_of_the_group_is_found_in_kafka_and_asked_with_the_credential() -> None:
    session = FakeSession(
        {
            "http://w1/stats/": NEW_STATS,
            "http://w1/pending/?limit=1": 404,
            "http://w2/stats/": OLD_STATS,
            "http://w2/pending/?limit=1": OLD_PENDING,
        }
    )
    source = WorkerSource(
        "payments-worker",
        TOPIC,
        members=_group(*TWO_WORKERS),
        fallback_urls=["http://configured:6066"],
        auth=("ops", "pw"),
        session=session,  # type: ignore[arg-type]
    )
    data = source.workers()
    assert data["found_in"] == "group" and data["note"] is None
    rows = {w["url"]: w for w in data["workers"]}
    assert list(rows) == ["http://w1", "http://w2"]
    w1, w2 = rows["http://w1"], rows["http://w2"]
    assert (w1["member_id"], w1["client_id"], w1["client_host"]) == (
        "m-1",
        "faust-0.15.3",
        "127.0.0.1",
    )
    assert (w1["active"], w1["standby"]) == ([0, 2, 4], [1, 3, 5])
    assert (w2["active"], w2["standby"]) == ([1, 3, 5], [0, 2, 4])
    assert w1["ok"] and w1["open"] == 7 and w1["by_status"] == {"pending": 5, "failed": 2}
    assert w1["blocked"]["reason"] == "producing timed out"
    assert w2["ok"] and w2["open"] == 3 and w2["oldest"][0]["age_seconds"] == 12.5
    # the configured URL is not asked when the group answers; every request carries the login
    assert {url.split("/")[2] for url, _ in session.asked} == {"w1", "w2"}
    assert {auth for _, auth in session.asked} == {("ops", "pw")}


def test_a_worker_that_does_not_answer_turns_the_section_red_and_the_others_still_show() -> None:
    session = FakeSession({"http://w1/stats/": NEW_STATS, "http://w1/pending/?limit=1": 404})
    source = WorkerSource(
        "payments-worker",
        TOPIC,
        members=_group(*TWO_WORKERS),
        fallback_urls=[],
        session=session,  # type: ignore[arg-type]
    )
    with pytest.raises(PartlyObserved) as caught:
        source.workers()
    assert str(caught.value) == (
        "1 of 2 workers unreadable: worker at http://w2/stats/ unreachable: [Errno 111] "
        "Connection refused http://w2/stats/"
    )
    rows = {w["url"]: w for w in caught.value.data["workers"]}
    assert rows["http://w1"]["ok"] and rows["http://w1"]["open"] == 7
    assert not rows["http://w2"]["ok"]
    assert rows["http://w2"]["active"] == [1, 3, 5]  # what it should be doing, from Kafka


def test_a_worker_refusing_the_credential_says_what_to_configure() -> None:
    session = FakeSession({"http://w1/stats/": 401})
    source = WorkerSource(
        "payments-worker",
        TOPIC,
        members=_group(TWO_WORKERS[1]),
        fallback_urls=[],
        session=session,  # type: ignore[arg-type]
    )
    with pytest.raises(
        PartlyObserved, match=r"refused the operator credential.*none is configured"
    ):
        source.workers()


@pytest.mark.parametrize(
    ("members", "note"),
    [
        (
            _group(),
            "consumer group payments-worker has no members; asking WORKER_URL instead",
        ),
        (
            None,
            "Kafka at k:9092 unreachable: NoBrokersAvailable; asking WORKER_URL instead",
        ),
    ],
)
def test_without_the_group_the_configured_worker_urls_are_asked(
    members: Callable[[str], list[GroupMember]] | None, note: str
) -> None:
    def unreachable(group: str) -> list[GroupMember]:
        raise ObserveError("Kafka at k:9092 unreachable: NoBrokersAvailable")

    session = FakeSession(
        {"http://w1/stats/": OLD_STATS, "http://w1/pending/?limit=1": OLD_PENDING}
    )
    source = WorkerSource(
        "payments-worker",
        TOPIC,
        members=members or unreachable,
        fallback_urls=["http://w1/"],
        session=session,  # type: ignore[arg-type]
    )
    data = source.workers()
    assert data["found_in"] == "WORKER_URL"
    assert data["note"] == note
    [row] = data["workers"]
    assert row["url"] == "http://w1" and row["ok"]
    # not in the group: the partitions are the ones the worker says it owns
    assert (row["active"], row["standby"], row["open"]) == ([1, 3, 5], None, 3)


def test_no_worker_anywhere_is_named() -> None:
    source = WorkerSource(
        "payments-worker",
        TOPIC,
        members=_group(),
        fallback_urls=[],
        session=FakeSession({}),  # type: ignore[arg-type]
    )
    with pytest.raises(ObserveError, match="consumer group payments-worker has no members"):
        source.workers()


# ----------------------------------------------------------------------------- text, wiring


def _workers_section(ok: bool = True) -> dict[str, Any]:
    rows = [
        {
            "url": "http://w1",
            "member_id": "m-1",
            "client_id": "faust-0.15.3",
            "client_host": "127.0.0.1",
            "active": [0, 2, 4],
            "standby": [1, 3, 5],
            "note": None,
            "ok": True,
            "error": None,
            **worker_figures(NEW_STATS, None),
        },
        {
            "url": "http://w2",
            "member_id": "m-2",
            "client_id": "faust-0.15.3",
            "client_host": "127.0.0.1",
            "active": [1, 3, 5],
            "standby": [0, 2, 4],
            "note": None,
            "ok": ok,
            "error": None if ok else "worker at http://w2 unreachable: refused",
            **(worker_figures(OLD_STATS, OLD_PENDING) if ok else {}),
        },
    ]
    return {
        "title": "Workers",
        "source": "consumer group payments-worker",
        "ok": ok,
        "error": None if ok else "1 of 2 workers unreadable: worker at http://w2 unreachable",
        "data": {
            "group": "payments-worker",
            "topic": TOPIC,
            "found_in": "group",
            "note": None,
            "workers": rows,
        },
    }


def test_status_text_shows_every_worker_and_names_the_part_that_is_down() -> None:
    snap = {
        "sections": {
            "connector": {
                "title": "Debezium connector",
                "ok": False,
                "error": "Kafka Connect at http://127.0.0.1:1 unreachable: refused",
                "data": None,
            },
            "worker": _workers_section(ok=False),
        }
    }
    lines = format_text(snap)
    assert lines[0] == (
        "  Debezium connector: UNAVAILABLE - Kafka Connect at http://127.0.0.1:1 unreachable: "
        "refused"
    )
    assert lines[1].startswith("  Workers: UNAVAILABLE - 1 of 2 workers unreadable")
    assert lines[2] == f"  workers (2) from consumer group payments-worker; partitions of {TOPIC}:"
    assert lines[3] == (
        "  worker http://w1 [faust-0.15.3 on 127.0.0.1] active 0,2,4 standby 1,3,5; open 7 "
        "(failed 2, pending 5); last cycle: 3 resolved, 0 expired, 0 errors, 4 Stripe calls"
    )
    assert lines[4] == ("    BLOCKED on partition 2 since 1700000000: producing timed out")
    assert lines[5] == "    waiting for a retry: 41 payments (the 1 due soonest):"
    assert lines[6] == ("      p-7 attempt 3, next in 240.0 s: Stripe has no PaymentIntent pi_gone")
    assert lines[7] == (
        "  worker http://w2 [faust-0.15.3 on 127.0.0.1] active 1,3,5 standby 0,2,4: "
        "UNAVAILABLE - worker at http://w2 unreachable: refused"
    )


def test_observer_wires_each_section_to_its_source() -> None:
    class Src:
        where = "here"

        def topics(self) -> list[str]:
            return ["topics"]

        def latest(self, topic: str, n: int) -> list[str]:
            return [f"{topic}:{n}"]

        def consumer_groups(self) -> list[str]:
            return ["groups"]

        def status(self) -> str:
            return "connector"

        def slots(self) -> list[str]:
            return ["slots"]

        def replicas(self) -> list[str]:
            return ["replicas"]

        def workers(self) -> list[str]:
            return ["workers"]

    src: Any = Src()
    observer = Observer(src, src, src, src, status_topic="psu", latest_events=3)
    data = {k: v["data"] for k, v in observer.snapshot()["sections"].items()}
    assert data == {
        "topics": ["topics"],
        "events": ["psu:3"],
        "consumer_groups": ["groups"],
        "connector": "connector",
        "slots": ["slots"],
        "replicas": ["replicas"],
        "worker": ["workers"],
    }


# ----------------------------------------------------------------------------- background


def wait_for(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_background_snapshot_starts_on_first_read_and_refreshes_at_most_every_interval() -> None:
    taken: list[int] = []
    now = [100.0]
    go = threading.Event()

    def take() -> dict[str, Any]:
        go.wait(10)
        taken.append(1)
        return {"n": len(taken)}

    snapshots = BackgroundSnapshot(take, interval=3600, clock=lambda: now[0])
    try:
        assert taken == []  # nothing runs before the first read
        assert snapshots.latest() == (None, None)  # ... which does not wait for it
        go.set()
        wait_for(lambda: snapshots.latest()[0] is not None, "the first snapshot")
        now[0] += 42.0
        for _ in range(100):
            assert snapshots.latest() == ({"n": 1}, 42.0)
        assert len(taken) == 1
    finally:
        snapshots.close()


def test_a_failed_refresh_keeps_the_last_snapshot_and_its_age_grows() -> None:
    results: list[Any] = [{"n": 1}, RuntimeError("Kafka went away")]
    rounds = threading.Semaphore(0)

    def take() -> dict[str, Any]:
        rounds.release()
        result = results.pop(0) if results else RuntimeError("still down")
        if isinstance(result, Exception):
            raise result
        return dict(result)

    now = [0.0]
    snapshots = BackgroundSnapshot(take, interval=0.01, clock=lambda: now[0])
    try:
        snapshots.latest()
        for _ in range(3):  # the good one, the failure, one more failure
            assert rounds.acquire(timeout=10)
        now[0] = 30.0
        assert snapshots.latest() == ({"n": 1}, 30.0)
    finally:
        snapshots.close()
