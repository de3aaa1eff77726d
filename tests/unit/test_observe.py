"""The ops collector's shaping and failure handling, and the /ops page rendering, over fakes."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest

from api import create_app
from api.bootstrap import build_api_services
from api.metrics import Metrics
from cdc.observe import (
    ObserveError,
    Observer,
    collect,
    decode_event,
    format_text,
    group_lag,
    newest,
)
from payments.settings import Settings
from tests.fakes import fake_core


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


def test_newest_events_across_partitions_and_undecodable_values() -> None:
    events = [
        decode_event(0, 4, 1_000, b"a", b'{"event_id": "a:2", "status": "succeeded"}'),
        decode_event(1, 9, 3_000, b"b", b'{"event_id": "b:3", "status": "failed"}'),
        decode_event(2, 1, 2_000, b"c", b"not json"),
    ]
    latest = newest(events, 2)
    assert [e.get("event_id") for e in latest] == ["b:3", None]
    assert latest[1]["raw"] == "not json"
    assert latest[0]["timestamp"].startswith("1970-01-01T00:00:03")


def test_a_failing_or_hanging_section_reports_why_and_the_others_still_answer() -> None:
    release = threading.Event()

    def down() -> Any:
        raise ObserveError("Kafka Connect at http://127.0.0.1:1 unreachable: refused")

    def broken() -> Any:
        raise KeyError("state")

    def hangs() -> Any:
        release.wait(5)
        return []

    try:
        snap = collect(
            {"topics": lambda: [{"topic": "t"}], "connector": down, "slots": broken, "w": hangs},
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
    assert s["slots"]["error"] == "KeyError: 'state'"
    assert s["w"]["ok"] is False and "no answer within 0.3 s" in s["w"]["error"]


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
    from cdc.observe import KafkaSource

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

    from cdc.observe import KafkaSource

    attempts: list[int] = []

    def unreachable() -> Any:
        attempts.append(1)
        raise KafkaTimeoutError("Unable to bootstrap from k:9092")

    source = KafkaSource("k:9092", admin_factory=unreachable)
    for ask in (source.topics, source.consumer_groups):
        with pytest.raises(ObserveError, match=r"Kafka at k:9092 unreachable: .*bootstrap"):
            ask()
    assert len(attempts) == 1


def _snapshot(**overrides: Any) -> dict[str, Any]:
    ok = {"ok": True, "error": None, "source": "src"}
    sections = {
        "topics": {
            **ok,
            "title": "Kafka topics",
            "data": [
                {
                    "topic": "payment-status-update",
                    "partitions": 2,
                    "messages": 7,
                    "end_offsets": [
                        {"partition": 0, "end_offset": 3},
                        {"partition": 1, "end_offset": 4},
                    ],
                }
            ],
        },
        "events": {**ok, "title": "Latest events", "data": []},
        "consumer_groups": {
            **ok,
            "title": "Consumer groups",
            "data": [
                {
                    "group": "payments-worker",
                    "protocol_type": "consumer",
                    "state": "Stable",
                    "members": 1,
                    "lag": 4,
                    "partitions": [
                        {
                            "topic": "t",
                            "partition": 0,
                            "committed": 1,
                            "end_offset": 5,
                            "lag": 4,
                        }
                    ],
                }
            ],
        },
        "connector": {
            "ok": False,
            "source": "Kafka Connect at http://127.0.0.1:1",
            "title": "Debezium connector",
            "data": None,
            "error": "Kafka Connect at http://127.0.0.1:1 unreachable: <b>refused</b>",
        },
        "slots": {
            **ok,
            "title": "Replication slots",
            "data": [
                {
                    "slot_name": "debezium_payments",
                    "slot_type": "logical",
                    "plugin": "pgoutput",
                    "active": True,
                    "wal_status": "reserved",
                    "lag_bytes": 192,
                    "retained_bytes": 384,
                }
            ],
        },
        "replicas": {**ok, "title": "Replicas", "data": []},
        "worker": {
            **ok,
            "title": "Worker",
            "data": [
                {
                    "url": "http://w",
                    "ok": True,
                    "error": None,
                    "worker": "payments-worker",
                    "partitions": [0, 1],
                    "pending": 12,
                    "oldest": [],
                    "last_cycle": None,
                }
            ],
        },
    }
    sections.update(overrides)
    return {"collected_at": "now", "ok": False, "sections": sections}


class FakeObserver:
    def __init__(self, snap: dict[str, Any]) -> None:
        self.snap = snap
        self.asked: list[tuple[str, ...]] = []

    def snapshot(self, sections: tuple[str, ...] = ()) -> dict[str, Any]:
        self.asked.append(tuple(sections))
        if not sections:
            return self.snap
        return {**self.snap, "sections": {k: self.snap["sections"][k] for k in sections}}


def _client(observer: Any, **settings: Any) -> Any:
    s = Settings(**settings)
    services = replace(build_api_services(s, core=fake_core(s)), observer=observer)
    return create_app(s, services=services).test_client()


def test_ops_page_shows_the_numbers_escapes_errors_and_refreshes() -> None:
    client = _client(FakeObserver(_snapshot()))
    r = client.get("/ops")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="5">' in html
    assert 'data-topic="payment-status-update" data-partition="1">4<' in html
    assert 'class="num group-lag" data-group="payments-worker">4<' in html
    assert 'data-slot="debezium_payments">192<' in html
    assert 'data-worker-url="http://w">12<' in html
    # the down part says so, and its error is text, not markup
    assert 'id="section-connector" class="down"' in html
    assert "unreachable: &lt;b&gt;refused&lt;/b&gt;" in html
    assert "<b>refused</b>" not in html


def test_ops_json_is_the_same_snapshot_and_ops_sits_behind_api_keys() -> None:
    snap = _snapshot()
    client = _client(FakeObserver(snap), api_keys="k1")
    assert client.get("/ops").status_code == 401
    assert client.get("/ops.json").status_code == 401
    r = client.get("/ops.json", headers={"Authorization": "Bearer k1"})
    assert r.status_code == 200 and r.get_json() == snap
    assert client.get("/metrics").status_code == 200  # Prometheus still scrapes without a key


def test_metrics_export_the_ops_numbers_at_scrape_time() -> None:
    observer = FakeObserver(_snapshot())
    body = Metrics(lambda: {}, observer.snapshot).render().decode()
    assert observer.asked == [("consumer_groups", "connector", "slots", "replicas")]
    assert 'kafka_consumergroup_lag{group="payments-worker",partition="0",topic="t"} 4.0' in body
    assert 'kafka_consumergroup_lag_sum{group="payments-worker"} 4.0' in body
    assert 'postgres_replication_slot_lag_bytes{slot="debezium_payments",type="logical"} 192.0' in (
        body
    )
    assert 'ops_section_up{section="connector"} 0.0' in body
    assert 'ops_section_up{section="slots"} 1.0' in body


def test_status_text_names_the_part_that_is_down() -> None:
    lines = format_text(_snapshot())
    assert (
        "  Debezium connector: UNAVAILABLE - Kafka Connect at http://127.0.0.1:1 unreachable"
        in ("\n".join(lines))
    )
    assert any("payments-worker" in line and "lag 4" in line for line in lines)
    assert any("pending 12; no reconciliation cycle yet" in line for line in lines)


def test_observer_wires_each_section_to_its_source() -> None:
    class Src:
        where = "here"
        base_url = "http://c"
        urls = ("http://w",)

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
