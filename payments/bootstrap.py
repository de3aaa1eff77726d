"""The one composition root: the adapters and use cases of a process, built from settings.

The API and the worker call :func:`bootstrap`; so do the benchmarks and the API's unit tests,
handing it their fakes. Nothing outside this module (and the tests) imports an adapter: what the
API needs of them (webhook verification, readiness checks) is on :class:`Core`. Nothing here
runs at import time: pools are opened when it is called (after gunicorn's fork, inside the
running worker).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from payments.adapters.postgres.pools import check_each_host, make_primary_pool, make_read_pool
from payments.adapters.postgres.rate_budget import PostgresRateBudget
from payments.adapters.postgres.repository import PostgresRepository
from payments.adapters.rate_limit import RateLimiter
from payments.adapters.stripe_gateway import RateBudget, StripeGateway, verify_webhook
from payments.ports import PaymentGateway, PaymentRepository, WebhookVerifier
from payments.reconcile import ReconcilePolicy, Reconciler
from payments.service import PaymentService
from payments.settings import Settings

# An HTTP request must end before gunicorn's 30 s worker timeout: at most 2 attempts of 8 s plus
# backoff and a rate-limit wait (the worker keeps the full settings).
API_STRIPE_TIMEOUT_SECONDS = 8.0

Role = Literal["api", "worker"]
# A part's readiness check: "ok", or why not.
ReadinessCheck = Callable[[], str]


@dataclass
class Core:
    """What one process works with: repository, Stripe gateway, the use cases, and the checks
    and webhook verification of the adapters behind them."""

    settings: Settings
    repository: PaymentRepository
    gateway: PaymentGateway
    service: PaymentService
    reconciler: Reconciler
    # part name -> check, for /readyz: the primary, and each replica on its own.
    readiness: dict[str, ReadinessCheck]
    verify_webhook: WebhookVerifier
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()


def freeze_startup_heap() -> None:
    """Leave what the process holds now (its modules, the app, its pools) out of the garbage
    collector's later scans. A full collection scans every tracked object with the GIL held,
    so every thread of the process waits: 58-211 ms in an API worker under load here, 73 ms
    over the worker's imported modules alone, a stall for each request, scrape and change in
    flight when it comes. Called once the process has built what it keeps, before it serves:
    in each API worker after the fork (gunicorn's ``post_worker_init``), in the worker before
    its loop starts. Frozen objects are still freed when their last reference goes; only a
    cycle among them would stay.
    """
    gc.collect()
    gc.freeze()


def reconcile_policy(settings: Settings) -> ReconcilePolicy:
    return ReconcilePolicy(
        interval_seconds=settings.reconcile_interval_seconds,
        stale_after_seconds=settings.reconcile_stale_after_seconds,
        ttl_seconds=settings.pending_ttl_seconds,
        retry_after_seconds=min(60.0, settings.reconcile_interval_seconds),
        concurrency=settings.reconcile_concurrency,
    )


def _answers(call: Callable[[], object]) -> ReadinessCheck:
    def check() -> str:
        try:
            call()
        except Exception as exc:
            return f"unreachable: {str(exc).strip()[:200]}"
        return "ok"

    return check


def _each_replica(read_url: str) -> ReadinessCheck:
    """Every replica of a multi-host URL on its own: libpq would hide a dead one."""

    def check() -> str:
        results = check_each_host(read_url, timeout_seconds=2)
        bad = {h: r for h, r in results.items() if r != "ok"}
        return "ok" if not bad else "; ".join(f"{h} {r}" for h, r in bad.items())

    return check


def bootstrap(
    settings: Settings,
    *,
    role: Role,
    repository: PaymentRepository | None = None,
    gateway: PaymentGateway | None = None,
    stripe_observer: Callable[[str, str], None] | None = None,
    wrap_repository: Callable[[PaymentRepository], PaymentRepository] | None = None,
    clock: Callable[[], float] = time.time,
) -> Core:
    """Real adapters from ``settings``, unless a repository or gateway is handed in.

    ``role`` sets what differs between processes: the API reads from the replicas and gives
    Stripe a shorter timeout and one retry (a request must end within gunicorn's timeout).
    Stripe calls take their tokens from one budget shared by every process (in PostgreSQL);
    with a repository handed in, from an in-process bucket. ``wrap_repository`` decorates the
    repository the use cases see (the API counts what it does through it). ``clock`` is the
    reconciler's (a benchmark's simulated time).
    """
    closers: list[Callable[[], None]] = []
    budget: RateBudget = RateLimiter(settings.stripe_max_rps)
    readiness: dict[str, ReadinessCheck] = {}
    if repository is None:
        primary = make_primary_pool(settings)
        closers.append(primary.close)
        replicas = make_read_pool(settings) if role == "api" else None
        if replicas is not None:
            closers.append(replicas.close)
            readiness["replicas"] = _each_replica(settings.database_read_url)
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
    stripe = gateway
    service = PaymentService(repository, stripe)
    reconciler = Reconciler(
        repository,
        stripe,
        service,
        reconcile_policy(settings),
        calls=lambda: stripe.calls,
        clock=clock,
    )
    readiness = {"primary": _answers(repository.ping), **readiness}
    return Core(
        settings, repository, stripe, service, reconciler, readiness, verify_webhook, closers
    )
