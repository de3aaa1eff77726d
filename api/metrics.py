"""Prometheus metrics: requests, latencies, Stripe call outcomes, payments by status.

Under gunicorn with several workers set ``PROMETHEUS_MULTIPROC_DIR`` (``gunicorn.conf.py`` does)
so a scrape sums every worker; otherwise each app has its own registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from payments.status import Status


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


class Metrics:
    def __init__(self, count_by_status: Callable[[], dict[Status, int]]) -> None:
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
        self._by_status = PaymentsByStatus(count_by_status)

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
        scrape_time.register(self._by_status)
        return body + generate_latest(scrape_time)
