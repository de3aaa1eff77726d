"""Prometheus metrics: requests, latencies, Stripe call and webhook outcomes, payments by status,
and at scrape time the /ops numbers (consumer lag, connector state, replication lag).

Under gunicorn with several workers set ``PROMETHEUS_MULTIPROC_DIR`` (``gunicorn.conf.py`` does)
so a scrape sums every worker; otherwise each app has its own registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from payments.domain.status import Status


class PaymentsByStatus(Collector):
    """Counted in the database at scrape time, so every worker reports the same truth."""

    def __init__(self, count: Callable[[], dict[Status, int]]) -> None:
        self._count = count

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "payments_by_status", "Payments in the database by status", labels=["status"]
        )
        try:
            counts = self._count()
        except Exception:
            return
        for status, n in counts.items():
            family.add_metric([status.value], n)
        yield family


class OpsGauges(Collector):
    """The /ops numbers as gauges, read at scrape time from the same collector as the page:
    consumer-group lag, connector and task state, replication slot and replica lag, and
    whether each section could be read (``ops_section_up``)."""

    SECTIONS = ("consumer_groups", "connector", "slots", "replicas")

    def __init__(self, snapshot: Callable[[tuple[str, ...]], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        try:
            sections = self._snapshot(self.SECTIONS)["sections"]
        except Exception:
            return
        up = GaugeMetricFamily(
            "ops_section_up", "1 when the /ops section could be read", labels=["section"]
        )
        for name, section in sections.items():
            up.add_metric([name], 1 if section["ok"] else 0)
        yield up
        groups = sections["consumer_groups"]["data"] or []
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "end offset minus committed offset",
            labels=["group", "topic", "partition"],
        )
        lag_sum = GaugeMetricFamily(
            "kafka_consumergroup_lag_sum", "total lag of a consumer group", labels=["group"]
        )
        for g in groups:
            if g["lag"] is not None:
                lag_sum.add_metric([g["group"]], g["lag"])
            for r in g["partitions"]:
                if r["lag"] is not None:
                    lag.add_metric([g["group"], r["topic"], str(r["partition"])], r["lag"])
        yield lag
        yield lag_sum
        connector = sections["connector"]["data"]
        if connector:
            running = GaugeMetricFamily(
                "kafka_connect_connector_running",
                "1 when the connector and all its tasks are RUNNING",
                labels=["connector"],
            )
            running.add_metric([connector["connector"]], 1 if connector["running"] else 0)
            yield running
            tasks = GaugeMetricFamily(
                "kafka_connect_task_running",
                "1 when the task is RUNNING",
                labels=["connector", "task", "state"],
            )
            for t in connector["tasks"]:
                tasks.add_metric(
                    [connector["connector"], str(t["id"]), t["state"]],
                    1 if t["state"] == "RUNNING" else 0,
                )
            yield tasks
        slot_lag = GaugeMetricFamily(
            "postgres_replication_slot_lag_bytes",
            "WAL not yet confirmed by the slot's consumer",
            labels=["slot", "type"],
        )
        retained = GaugeMetricFamily(
            "postgres_replication_slot_retained_bytes",
            "WAL kept on the primary for the slot",
            labels=["slot", "type"],
        )
        for r in sections["slots"]["data"] or []:
            if r["lag_bytes"] is not None:
                slot_lag.add_metric([r["slot_name"], r["slot_type"]], r["lag_bytes"])
            if r["retained_bytes"] is not None:
                retained.add_metric([r["slot_name"], r["slot_type"]], r["retained_bytes"])
        yield slot_lag
        yield retained
        replay = GaugeMetricFamily(
            "postgres_replica_replay_lag_bytes",
            "WAL written on the primary and not yet replayed by the replica",
            labels=["replica"],
        )
        replay_s = GaugeMetricFamily(
            "postgres_replica_replay_lag_seconds",
            "replay lag as the primary measures it",
            labels=["replica"],
        )
        for r in sections["replicas"]["data"] or []:
            if r["replay_lag_bytes"] is not None:
                replay.add_metric([r["application_name"]], r["replay_lag_bytes"])
            if r["replay_lag_seconds"] is not None:
                replay_s.add_metric([r["application_name"]], r["replay_lag_seconds"])
        yield replay
        yield replay_s


class Metrics:
    def __init__(
        self,
        count_by_status: Callable[[], dict[Status, int]] | None = None,
        ops_snapshot: Callable[[tuple[str, ...]], dict[str, Any]] | None = None,
    ) -> None:
        self.count_by_status = count_by_status
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["method", "endpoint"],
            registry=self.registry,
        )
        self.stripe_calls = Counter(
            "stripe_calls_total",
            "Stripe API calls by outcome",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "stripe_webhooks_total",
            "Stripe webhook events by outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        self._ops = OpsGauges(ops_snapshot) if ops_snapshot is not None else None

    def observe_stripe(self, operation: str, outcome: str) -> None:
        self.stripe_calls.labels(operation, outcome).inc()

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        body = generate_latest(registry)
        scrape_time = CollectorRegistry()
        if self.count_by_status is not None:
            scrape_time.register(PaymentsByStatus(self.count_by_status))
        if self._ops is not None:
            scrape_time.register(self._ops)
        return body + generate_latest(scrape_time)
