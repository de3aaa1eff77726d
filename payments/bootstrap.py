"""The one composition root: the adapters and use cases of a process, built from settings.

The API, the worker, the CLI and the benchmarks all call :func:`bootstrap`; tests hand fakes to
the same function. Nothing here runs at import time: pools are opened when it is called (after
gunicorn's fork, inside the running worker).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from payments.adapters.postgres.pools import make_primary_pool, make_read_pool
from payments.adapters.postgres.rate_budget import PostgresRateBudget
from payments.adapters.postgres.repository import PostgresRepository
from payments.adapters.rate_limit import RateLimiter
from payments.adapters.stripe_gateway import RateBudget, StripeGateway
from payments.ports import PaymentGateway, PaymentRepository
from payments.reconcile import ReconcilePolicy, Reconciler
from payments.service import PaymentService
from payments.settings import Settings

# An HTTP request must end before gunicorn's 30 s worker timeout: at most 2 attempts of 8 s plus
# backoff and a rate-limit wait (the worker keeps the full settings).
API_STRIPE_TIMEOUT_SECONDS = 8.0

Role = Literal["api", "worker", "cli"]


@dataclass
class Core:
    """What one process works with: repository, Stripe gateway, the use cases."""

    settings: Settings
    repository: PaymentRepository
    gateway: PaymentGateway
    service: PaymentService
    reconciler: Reconciler
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()


def reconcile_policy(settings: Settings) -> ReconcilePolicy:
    return ReconcilePolicy(
        interval_seconds=settings.reconcile_interval_seconds,
        stale_after_seconds=settings.reconcile_stale_after_seconds,
        ttl_seconds=settings.pending_ttl_seconds,
        retry_after_seconds=min(60.0, settings.reconcile_interval_seconds),
        concurrency=settings.reconcile_concurrency,
    )


def bootstrap(
    settings: Settings,
    *,
    role: Role,
    repository: PaymentRepository | None = None,
    gateway: PaymentGateway | None = None,
    stripe_observer: Callable[[str, str], None] | None = None,
    wrap_repository: Callable[[PaymentRepository], PaymentRepository] | None = None,
) -> Core:
    """Real adapters from ``settings``, unless a repository or gateway is handed in.

    ``role`` sets what differs between processes: the API reads from the replicas and gives
    Stripe a shorter timeout and one retry (a request must end within gunicorn's timeout).
    Stripe calls take their tokens from one budget shared by every process (in PostgreSQL);
    with a repository handed in, from an in-process bucket. ``wrap_repository`` decorates the
    repository the use cases see (the API counts what it does through it).
    """
    closers: list[Callable[[], None]] = []
    budget: RateBudget = RateLimiter(settings.stripe_max_rps)
    if repository is None:
        primary = make_primary_pool(settings)
        closers.append(primary.close)
        replicas = make_read_pool(settings) if role == "api" else None
        if replicas is not None:
            closers.append(replicas.close)
        repository = PostgresRepository(primary, replicas)
        # One budget for the deployment; the worker's calls leave a reserve for customers'.
        budget = PostgresRateBudget(primary, settings.stripe_max_rps, background=role != "api")
    if gateway is None:
        api = role == "api"
        gateway = StripeGateway(
            settings,
            budget,
            observer=stripe_observer,
            timeout_seconds=min(settings.stripe_timeout_seconds, API_STRIPE_TIMEOUT_SECONDS)
            if api
            else None,
            max_retries=min(settings.stripe_max_retries, 1) if api else None,
        )
    if wrap_repository is not None:
        repository = wrap_repository(repository)
    service = PaymentService(repository, gateway)
    reconciler = Reconciler(
        repository,
        gateway,
        service,
        reconcile_policy(settings),
        calls=lambda: getattr(gateway, "calls", 0),
    )
    return Core(settings, repository, gateway, service, reconciler, closers)
