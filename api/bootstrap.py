"""The API's wiring: the core from ``payments.bootstrap`` plus what only the API needs (metrics,
readiness checks, the operations collector, the status-event reader)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from api.emitted import InMemoryStatusEvents, KafkaStatusEvents, StatusEventSource
from api.metrics import OPS_REFRESH_SECONDS, Metrics, OpsGauges
from ops.snapshot import BackgroundSnapshot, Observer, build_observer
from payments.adapters.postgres.pools import check_each_host
from payments.bootstrap import bootstrap
from payments.ports import PaymentGateway, PaymentRepository
from payments.service import PaymentService
from payments.settings import Settings


@dataclass
class ApiServices:
    """What the views use."""

    settings: Settings
    service: PaymentService
    metrics: Metrics
    # name -> callable returning "ok" or an error string, for /readyz
    readiness: dict[str, Callable[[], str]] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    # What /ops shows (None with fakes: nothing to observe).
    observer: Observer | None = None
    # A payment's payment-status-update events, for GET /payments/<id>/timeline.
    status_events: StatusEventSource = field(default_factory=InMemoryStatusEvents)


def _check(fn: Callable[[], object]) -> Callable[[], str]:
    def run() -> str:
        try:
            fn()
        except Exception as exc:
            return f"unreachable: {str(exc).strip()[:200]}"
        return "ok"

    return run


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
) -> ApiServices:
    """The real wiring, or the same views over a repository and gateway handed in (tests hand
    in fakes: then nothing connects but the ``observer`` handed in, if any; the intake
    benchmark hands in a fake Stripe only)."""
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
    if not own_database:
        return ApiServices(
            settings, core.service, metrics, {"primary": lambda: "ok"}, closers, observer
        )
    repo = core.repository
    readiness: dict[str, Callable[[], str]] = {"primary": _check(repo.ping)}
    if settings.database_read_url:
        read_url = settings.database_read_url

        def each_replica() -> str:
            results = check_each_host(read_url, timeout_seconds=2)
            bad = {h: r for h, r in results.items() if r != "ok"}
            return "ok" if not bad else "; ".join(f"{h} {r}" for h, r in bad.items())

        readiness["replicas"] = each_replica
    if observer is not None:
        closers.append(observer.close)
    status_events = KafkaStatusEvents(settings)  # connects on first use
    closers.append(status_events.close)
    return ApiServices(
        settings, core.service, metrics, readiness, closers, observer, status_events=status_events
    )
