"""Prometheus metrics of the API: what it did (requests and latencies, payments created, status
transitions it applied, webhook outcomes, Stripe call outcomes) and the /ops numbers (consumer
lag, connector state, replication lag) from a snapshot kept fresh in the background.

A scrape reads only what the process keeps: no database query, no Kafka, Connect or PostgreSQL
call. Open payments by status are the worker's to export (it tracks them).

Under gunicorn with several workers set ``PROMETHEUS_MULTIPROC_DIR`` (``gunicorn.conf.py`` does):
the counters and histograms are then summed over every worker; the /ops gauges are not (the
multiprocess mode does not carry custom collectors across processes), each process answers
with its own snapshot.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, cast
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ops.snapshot import BackgroundSnapshot
from payments.ports import (
    InsertResult,
    NewPayment,
    PaymentRepository,
    ProviderEvent,
    StatusChange,
    TransitionResult,
    WebhookResult,
)

# How often the /ops gauges are refreshed, at most (in each API process that is scraped).
OPS_REFRESH_SECONDS = 15.0


class OpsGauges(Collector):
    """The /ops numbers as gauges, from the latest background snapshot: consumer-group lag,
    connector and task state, replication slot and replica lag, whether each section could
    be read (``ops_section_up``) and how old the snapshot is (``ops_snapshot_age_seconds``).
    Nothing before the first snapshot is in."""

    SECTIONS = ("consumer_groups", "connector", "slots", "replicas")

    def __init__(self, snapshots: BackgroundSnapshot) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        snapshot, age = self._snapshots.latest()
        if snapshot is None or age is None:
            return
        age_gauge = GaugeMetricFamily(
            "ops_snapshot_age_seconds", "seconds since the /ops gauges were read"
        )
        age_gauge.add_metric([], age)
        yield age_gauge
        yield from _ops_gauges(snapshot["sections"])


def _ops_gauges(sections: Mapping[str, Any]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "ops_section_up", "1 when the /ops section could be read", labels=["section"]
    )
    for name, section in sections.items():
        up.add_metric([name], 1 if section["ok"] else 0)
    yield up
    lag = GaugeMetricFamily(
        "kafka_consumergroup_lag",
        "end offset minus committed offset",
        labels=["group", "topic", "partition"],
    )
    lag_sum = GaugeMetricFamily(
        "kafka_consumergroup_lag_sum", "total lag of a consumer group", labels=["group"]
    )
    for g in sections.get("consumer_groups", {}).get("data") or []:
        if g["lag"] is not None:
            lag_sum.add_metric([g["group"]], g["lag"])
        for r in g["partitions"]:
            if r["lag"] is not None:
                lag.add_metric([g["group"], r["topic"], str(r["partition"])], r["lag"])
    yield lag
    yield lag_sum
    connector = sections.get("connector", {}).get("data")
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
    for r in sections.get("slots", {}).get("data") or []:
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
    for r in sections.get("replicas", {}).get("data") or []:
        if r["replay_lag_bytes"] is not None:
            replay.add_metric([r["application_name"]], r["replay_lag_bytes"])
        if r["replay_lag_seconds"] is not None:
            replay_s.add_metric([r["application_name"]], r["replay_lag_seconds"])
    yield replay
    yield replay_s


class Metrics:
    def __init__(self, ops_snapshots: BackgroundSnapshot | None = None) -> None:
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
        self.busy = Counter(
            "payments_api_busy_total",
            "Requests answered 503 busy: every Stripe slot of the process was taken",
            ["endpoint"],
            registry=self.registry,
        )
        self.payments_created = Counter(
            "payments_created_total",
            "Payments this API stored (a replayed idempotency key counts once)",
            registry=self.registry,
        )
        self.transitions = Counter(
            "payments_transitions_total",
            "Status transitions this API applied, by target status and source",
            ["to", "source"],
            registry=self.registry,
        )
        self.ops_snapshots = ops_snapshots
        self._ops = OpsGauges(ops_snapshots) if ops_snapshots is not None else None

    def observe_stripe(self, operation: str, outcome: str) -> None:
        self.stripe_calls.labels(operation, outcome).inc()

    def counting(self, repository: PaymentRepository) -> PaymentRepository:
        """``repository``, counting the payments it stores and the transitions it applies."""
        return cast(PaymentRepository, CountingRepository(repository, self))

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        body = generate_latest(registry)
        if self._ops is None:
            return body
        this_process = CollectorRegistry()
        this_process.register(self._ops)
        return body + generate_latest(this_process)


class CountingRepository:
    """A repository that counts, in ``metrics``, what the API did through it: each payment
    stored (``insert_pending`` that created a row) and each applied transition (directly or
    by a webhook), by target status and source. Everything else passes through."""

    def __init__(self, inner: PaymentRepository, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def insert_pending(self, new: NewPayment) -> InsertResult:
        result = self._inner.insert_pending(new)
        if result.created:
            self._metrics.payments_created.inc()
        return result

    def transition(self, payment_id: UUID, change: StatusChange) -> TransitionResult:
        result = self._inner.transition(payment_id, change)
        if result.applied:
            self._metrics.transitions.labels(change.to.value, change.source.value).inc()
        return result

    def apply_webhook(
        self,
        event: ProviderEvent,
        payload: Mapping[str, Any],
        change: StatusChange | None,
        *,
        handled: bool = True,
    ) -> WebhookResult:
        result = self._inner.apply_webhook(event, payload, change, handled=handled)
        if change is not None and result.transition is not None and result.transition.applied:
            self._metrics.transitions.labels(change.to.value, change.source.value).inc()
        return result
