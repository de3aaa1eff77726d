"""The one wiring point: real adapters from settings, or fakes handed in by tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from api.emitted import InMemoryStatusEvents, KafkaStatusEvents, StatusEventSource
from api.metrics import Metrics
from cdc.observe import Observer, build_observer
from payments.db import check_each_host, make_primary_pool, make_read_pool
from payments.repository import PaymentRepository
from payments.service import Gateway, PaymentService
from payments.settings import Settings
from payments.status import Status
from payments.stripe_gateway import StripeGateway
from payments.testing import FakePaymentRepository, FakeStripeGateway

API_STRIPE_TIMEOUT_SECONDS = 8.0


@dataclass
class Deps:
    settings: Settings
    service: PaymentService
    metrics: Metrics
    # name -> callable returning "ok" or an error string, for /readyz
    readiness: dict[str, Callable[[], str]] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    # What /ops shows and /metrics exports (None with fakes: nothing to observe).
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


def bootstrap(settings: Settings, *, gateway: Gateway | None = None) -> Deps:
    """Pools (opened here, after gunicorn's fork), repository, Stripe gateway, service.

    ``gateway`` replaces the Stripe gateway (the intake benchmark passes an in-process fake so
    that it measures the API and PostgreSQL, not Stripe)."""
    primary = make_primary_pool(settings)
    replicas = make_read_pool(settings)
    repo = PaymentRepository(primary, replicas)
    # Kafka, Connect, the worker and the primary's replication views; connects lazily.
    observer = build_observer(settings)
    metrics = Metrics(repo.count_by_status, observer.snapshot)
    # One request must end before gunicorn's 30 s worker timeout: at most 2 attempts of 8 s
    # plus backoff and a rate-limit wait of at most 8 s (the worker keeps the full settings).
    gateway = gateway or StripeGateway(
        settings,
        observer=metrics.observe_stripe,
        timeout_seconds=min(settings.stripe_timeout_seconds, API_STRIPE_TIMEOUT_SECONDS),
        max_retries=min(settings.stripe_max_retries, 1),
    )
    service = PaymentService(repo, gateway)
    readiness: dict[str, Callable[[], str]] = {"primary": _check(repo.ping)}
    if settings.database_read_url:
        read_url = settings.database_read_url

        def each_replica() -> str:
            results = check_each_host(read_url, timeout_seconds=2)
            bad = {h: r for h, r in results.items() if r != "ok"}
            return "ok" if not bad else "; ".join(f"{h} {r}" for h, r in bad.items())

        readiness["replicas"] = each_replica
    closers: list[Callable[[], None]] = [primary.close, observer.close]
    if replicas is not None:
        closers.append(replicas.close)
    status_events = KafkaStatusEvents(settings)  # connects on first use
    closers.append(status_events.close)
    return Deps(
        settings, service, metrics, readiness, closers, observer, status_events=status_events
    )


def bootstrap_fake(
    settings: Settings | None = None,
    repo: FakePaymentRepository | None = None,
    gateway: FakeStripeGateway | None = None,
) -> Deps:
    """The same app over in-memory fakes (unit tests, intake benchmark)."""
    repo = repo or FakePaymentRepository()
    gateway = gateway or FakeStripeGateway()

    def counts() -> dict[Status, int]:
        return repo.count_by_status()

    metrics = Metrics(counts)
    service = PaymentService(repo, gateway)
    return Deps(settings or Settings(), service, metrics, {"primary": lambda: "ok"})
