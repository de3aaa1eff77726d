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
            "payments_cdc_dead_letters_total",
            "CDC records that cannot be decoded (DLQ)",
            registry=r,
        )
        self.emitted = Counter(
            "payments_status_updates_emitted_total",
            "payment-status-update events acknowledged by the broker",
            ["status"],
            registry=r,
        )
        self.duplicates = Counter(
            "payments_status_updates_suppressed_total",
            "status changes seen again (replays) and not re-emitted",
            registry=r,
        )
        self.refetched = Counter(
            "payments_change_records_refetched_total",
            "change records the consumer skipped, read back from the broker and applied",
            registry=r,
        )
        self.redelivered = Counter(
            "payments_change_records_redelivered_total",
            "change records delivered again within an assignment and not applied twice",
            registry=r,
        )
        self.emit_retries = Counter(
            "payments_status_emit_retries_total",
            "status event sends that failed and were retried (the partition waited)",
            registry=r,
        )
        self.apply_retries = Counter(
            "payments_change_apply_retries_total",
            "change records whose table writes failed and were retried (the partition waited)",
            registry=r,
        )
        self.blocked = Gauge(
            "payments_status_emit_blocked_partitions",
            "partitions waiting for a status event to be acknowledged or a change to be applied",
            registry=r,
        )
        self.blocked_since = Gauge(
            "payments_status_emit_blocked_since_seconds",
            "epoch seconds since when the oldest blocked partition waits (0: none)",
            registry=r,
        )
        self.cdc_delay = Histogram(
            "payments_cdc_delay_seconds",
            "commit on the primary -> processed by the worker",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.open = Gauge(
            "payments_open",
            "open (not final) payments in this worker's active partitions",
            ["status"],
            registry=r,
        )
        self.cycles = Counter(
            "payments_reconcile_cycles_total", "reconciliation cycles", registry=r
        )
        self.cycle_figures = Counter(
            "payments_reconcile_results_total", "reconciliation results", ["result"], registry=r
        )
        self.cycle_failures = Counter(
            "payments_reconcile_cycle_failures_total",
            "reconciliation cycles that raised (logged; the worker stays up)",
            registry=r,
        )
        self.stripe_calls = Counter(
            "payments_reconcile_stripe_calls_total",
            "Stripe calls made by reconciliation",
            ["part"],
            registry=r,
        )
        self.foreign_intents = Counter(
            "payments_foreign_intents_refused_total",
            "Stripe intents that are not the payment's own, refused by reconciliation "
            "(swept events, listed and retrieved intents, expiries)",
            registry=r,
        )
        self.loop_lag = Histogram(
            "payments_worker_loop_lag_seconds",
            "how much later than asked the event loop woke a task sleeping 0.1 s: while it is "
            "late, changes, web answers and heartbeats wait",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "payments_reconcile_cycle_seconds", "duration of a reconciliation cycle", registry=r
        )
