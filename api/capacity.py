"""Threads kept for the requests that must not queue behind Stripe.

A request that calls Stripe (create, cancel, confirm, the demo shop's order) holds its thread for
the whole call: hundreds of milliseconds, seconds when Stripe is slow. Were every thread of an
API process at Stripe, a webhook, a scrape of ``/metrics`` or a read would wait in gunicorn's
queue until one came back. So each process lets at most ``API_STRIPE_SLOTS`` such requests run
at once (``gunicorn.conf.py``: its threads less a reserve), and answers one more at once with
503 ``busy`` and ``Retry-After``, before anything is read or stored: the same request with the
same ``Idempotency-Key`` is safe to send again (Stripe's own API refuses too many concurrent
requests too, with a 429; here it is the server's capacity, not the caller's rate: a 503).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import current_app, request

from api.problems import ApiProblem

P = ParamSpec("P")
R = TypeVar("R")
# A slot frees within one Stripe call: a second is a fair wait before the same request again.
BUSY_RETRY_AFTER_SECONDS = 1


class StripeSlots:
    """At most ``slots`` holders at once; one more is refused, never queued."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"API_STRIPE_SLOTS must be at least 1, got {slots}")
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)

    def try_take(self) -> bool:
        return self._free.acquire(blocking=False)

    def give_back(self) -> None:
        self._free.release()


def stripe_bound(view: Callable[P, R]) -> Callable[P, R]:
    """Run ``view`` in one of the process's Stripe slots, or answer 503 ``busy`` if none is
    free (counted in ``payments_api_busy_total`` by endpoint)."""

    @functools.wraps(view)
    def in_slot(*args: P.args, **kwargs: P.kwargs) -> R:
        wired = current_app.extensions["payments"]
        slots: StripeSlots = wired.stripe_slots
        if not slots.try_take():
            endpoint = request.url_rule.rule if request.url_rule else "unmatched"
            wired.metrics.busy.labels(endpoint).inc()
            raise ApiProblem(
                503,
                "Busy",
                f"this API process already has {slots.slots} requests waiting on the payment "
                "provider; send the same request (same Idempotency-Key) again after Retry-After "
                "seconds",
                kind="busy",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
            )
        try:
            return view(*args, **kwargs)
        finally:
            slots.give_back()

    return in_slot
