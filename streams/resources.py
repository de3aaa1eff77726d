"""The worker's adapters (pools, repository, Stripe gateway, service, reconciler), built on
first use inside the running worker — never at import time."""

from __future__ import annotations

from functools import cached_property

from payments.db import make_primary_pool
from payments.ratelimit import RateLimiter
from payments.reconcile import Reconciler
from payments.repository import PaymentRepository
from payments.service import PaymentService
from payments.settings import Settings
from payments.stripe_gateway import StripeGateway


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def repository(self) -> PaymentRepository:
        return PaymentRepository(make_primary_pool(self.settings))

    @cached_property
    def limiter(self) -> RateLimiter:
        return RateLimiter(self.settings.stripe_max_rps)

    @cached_property
    def gateway(self) -> StripeGateway:
        return StripeGateway(self.settings, self.limiter)

    @cached_property
    def reconciler(self) -> Reconciler:
        service = PaymentService(self.repository, self.gateway)
        return Reconciler(
            self.repository, self.gateway, service, self.settings, calls=lambda: self.gateway.calls
        )

    def share_of_rate(self, owned: int, total: int) -> float:
        """This worker's share of the account-wide Stripe budget: proportional to the
        partitions it owns, so all workers together stay under STRIPE_MAX_RPS."""
        rps = self.settings.stripe_max_rps * owned / max(1, total)
        self.limiter.rate = max(rps, 0.01)
        self.limiter.burst = max(1.0, rps)
        return rps
