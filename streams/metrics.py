"""Prometheus metrics of the worker (its own registry, served at /metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.changes = Counter(
            "payments_cdc_changes_total", "CDC records processed", ["op"], registry=r
        )
        self.dead_letters = Counter(
            "payments_cdc_dead_letters_total", "CDC records sent to the DLQ", registry=r
        )
        self.emitted = Counter(
            "payments_status_updates_emitted_total",
            "payment-status-update events sent",
            ["status"],
            registry=r,
        )
        self.duplicates = Counter(
            "payments_status_updates_suppressed_total",
            "status changes seen again (replays) and not re-emitted",
            registry=r,
        )
        self.cdc_delay = Histogram(
            "payments_cdc_delay_seconds",
            "commit on the primary -> processed by the worker",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.pending = Gauge(
            "payments_pending_owned", "pending payments in active partitions", registry=r
        )
        self.cycles = Counter(
            "payments_reconcile_cycles_total", "reconciliation cycles", registry=r
        )
        self.cycle_figures = Counter(
            "payments_reconcile_results_total", "reconciliation results", ["result"], registry=r
        )
        self.stripe_calls = Counter(
            "payments_reconcile_stripe_calls_total",
            "Stripe calls made by reconciliation",
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "payments_reconcile_cycle_seconds", "duration of a reconciliation cycle", registry=r
        )
