"""The API's wiring: the core from ``payments.bootstrap`` plus what only the API needs (metrics,
the operations collector, the status-event reader)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from api.capacity import StripeSlots
from api.emitted import KafkaStatusEvents, StatusEventSource
from api.metrics import OPS_REFRESH_SECONDS, Metrics, OpsGauges
from ops.snapshot import BackgroundSnapshot, Observer, build_observer
from payments.bootstrap import ReadinessCheck, bootstrap
from payments.ports import PaymentGateway, PaymentRepository, WebhookVerifier
from payments.service import PaymentService
from payments.settings import Settings


@dataclass
class ApiServices:
    """What the views use."""

    settings: Settings
    service: PaymentService
    metrics: Metrics
    # name -> callable returning "ok" or an error string, for /readyz
    readiness: dict[str, ReadinessCheck]
    # A payment's payment-status-update events, for GET /payments/<id>/timeline.
    status_events: StatusEventSource
    verify_webhook: WebhookVerifier
    # How many requests of this process may wait on Stripe at once (api/capacity.py).
    stripe_slots: StripeSlots
    closers: list[Callable[[], None]] = field(default_factory=list)
    # What /ops shows (None with fakes: nothing to observe).
    observer: Observer | None = None


def _metrics(observer: Observer | None) -> tuple[Metrics, list[Callable[[], None]]]:
    """The API's metrics; the /ops gauges from a snapshot refreshed in the background (its
    thread starts on the first scrape)."""
    if observer is None:
        return Metrics(), []
    snapshots = BackgroundSnapshot(
        lambda: observer.snapshot(OpsGauges.SECTIONS), interval=OPS_REFRESH_SECONDS
    )
    return Metrics(snapshots), [snapshots.close]


def build_api_services(
    settings: Settings,
    *,
    repository: PaymentRepository | None = None,
    gateway: PaymentGateway | None = None,
    observer: Observer | None = None,
    status_events: StatusEventSource | None = None,
) -> ApiServices:
    """The real wiring, or the same views over the parts handed in. Tests hand in fakes (a
    repository, a gateway, the status events of a timeline, an observer): then nothing
    connects but what was not handed in and is used (the status events are read from Kafka on
    a timeline's first request); the intake benchmark hands in a fake Stripe only. With a
    repository handed in, /readyz asks it (``ping``), and /ops has nothing to observe unless
    an ``observer`` is handed in."""
    own_database = repository is None
    if own_database and observer is None:
        # Kafka, Connect, the workers and the primary's replication views; connects lazily.
        observer = build_observer(settings)
    metrics, stop = _metrics(observer)
    # Count what the API does (payments stored, transitions applied) where it does it.
    core = bootstrap(
        settings,
        role="api",
        repository=repository,
        gateway=gateway,
        stripe_observer=metrics.observe_stripe,
        wrap_repository=metrics.counting,
    )
    closers: list[Callable[[], None]] = [*stop, core.close]
    if own_database and observer is not None:
        closers.append(observer.close)
    if status_events is None:
        reader = KafkaStatusEvents(settings)  # connects on first use
        closers.append(reader.close)
        status_events = reader
    return ApiServices(
        settings,
        core.service,
        metrics,
        core.readiness,
        status_events,
        core.verify_webhook,
        StripeSlots(settings.api_stripe_slots),
        closers,
        observer,
    )
