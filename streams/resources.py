"""The worker's core (``payments.bootstrap``), built on first use inside the running worker —
never at import time."""

from __future__ import annotations

from functools import cached_property

from payments.adapters.stripe_gateway import StripeGateway
from payments.bootstrap import Core, bootstrap
from payments.settings import Settings


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def core(self) -> Core:
        return bootstrap(self.settings, role="worker")

    def share_of_rate(self, owned: int, total: int) -> float:
        """This worker's share of the account-wide Stripe budget: proportional to the
        partitions it owns, so all workers together stay under STRIPE_MAX_RPS."""
        rps = self.settings.stripe_max_rps * owned / max(1, total)
        gateway = self.core.gateway
        if isinstance(gateway, StripeGateway):
            gateway.limiter.rate = max(rps, 0.01)
            gateway.limiter.burst = max(1.0, rps)
        return rps
