"""The sweep's event listing against a Stripe that lists as the real one does (newest first,
``types[]``, ``starting_after`` / ``ending_before``, ``created[gt]``), answering 429 to the
third page of the first read: the two pages already read are applied and their cursor stored,
and the next sweep reads the rest, each event once. The fake Stripe is the HTTP layer only:
the gateway, the reconciler and the use case are the product's.

The fake answers the Stripe client's requests (``raw_request``: method, path, parameters) with
Stripe's JSON; only the HTTP below it is left out."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import stripe

from payments.adapters.rate_limit import RateLimiter
from payments.adapters.stripe_gateway import StripeGateway
from payments.domain.money import Money
from payments.domain.status import Status
from payments.ports import Intent, NewPayment
from payments.reconcile import SWEEP_CURSOR, ReconcilePolicy, Reconciler
from payments.service import PaymentService
from payments.settings import Settings
from tests.fakes import FakePaymentRepository


@dataclass
class Answer:
    """What ``StripeClient.raw_request`` returns: the answer's JSON as ``data``."""

    data: dict[str, Any]


def page(events: list[dict[str, Any]], has_more: bool) -> Answer:
    return Answer({"object": "list", "data": events, "has_more": has_more})


class RealStripeEvents:
    """``events.list`` as Stripe answers it. ``fail_on_page``: the Nth page request of 100
    (not the one-event probe) answers 429, once."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events  # oldest first, as they happened
        self.page_requests: list[dict[str, Any]] = []
        self.fail_on_page: int | None = None

    def list(self, params: dict[str, Any]) -> Answer:
        if params.get("limit") == 100:
            self.page_requests.append(params)
            if len(self.page_requests) == self.fail_on_page:
                self.fail_on_page = None
                raise stripe.RateLimitError("Too many requests", http_status=429)
        types = params.get("types") or [params["type"]]
        after = (params.get("created") or {}).get("gt", 0)
        newest_first = [
            e for e in reversed(self.events) if e["type"] in types and e["created"] > after
        ]
        ids = [e["id"] for e in newest_first]
        limit = int(params["limit"])
        if "starting_after" in params:
            window = newest_first[ids.index(params["starting_after"]) + 1 :]
            return page(window[:limit], len(window) > limit)
        if "ending_before" in params:
            window = newest_first[: ids.index(params["ending_before"])]
            return page(window[-limit:], len(window) > limit)
        return page(newest_first[:limit], len(newest_first) > limit)


class RealStripe:
    """The client: events listed as Stripe lists them; the intents list refuses ``created``
    (as the local stand-in does), so the sweep runs on events alone."""

    def __init__(self, events: RealStripeEvents) -> None:
        self.events = events

    def raw_request(self, method: str, path: str, **params: Any) -> Answer:
        if (method, path) == ("get", "/v1/events"):
            return self.events.list(params)
        if (method, path) == ("get", "/v1/payment_intents"):
            raise stripe.InvalidRequestError("Received unknown parameter: created", "created")
        raise AssertionError(f"the sweep made an unexpected request: {method} {path} {params}")


def succeeded_event(n: int, payment_id: uuid.UUID, created: int) -> dict[str, Any]:
    intent = {
        "id": f"pi_{n:04d}",
        "object": "payment_intent",
        "status": "succeeded",
        "amount": 1500,
        "currency": "usd",
        "metadata": {"payment_id": str(payment_id)},
    }
    return {
        "id": f"evt_{n:04d}",
        "type": "payment_intent.succeeded",
        "created": created,
        "data": {"object": intent},
    }


class World:
    """Payments waiting at Stripe, the real gateway over the fake listing, the reconciler."""

    def __init__(self) -> None:
        self.repo = FakePaymentRepository()
        self.now = int(time.time())
        self.listing = RealStripeEvents([])
        self.payments: list[uuid.UUID] = []
        gateway = StripeGateway(
            Settings(stripe_secret_key="sk_test_unit", stripe_api_base="http://stripe.invalid"),
            RateLimiter(1000, burst=1000),
        )
        gateway.client = RealStripe(self.listing)  # type: ignore[assignment]
        self.reconciler = Reconciler(
            self.repo,
            gateway,
            PaymentService(self.repo, gateway),
            ReconcilePolicy(),
            clock=lambda: float(self.now),
        )

    def paid_at_stripe(self, created: int) -> None:
        n = len(self.payments)
        new = NewPayment(uuid.uuid4(), f"k-{n}", "h", Money(1500, "usd"))
        payment = self.repo.insert_pending(new).payment
        intent = Intent(f"pi_{n:04d}", "requires_payment_method", 1500, "usd", None,
                        str(payment.id), None, None, created)  # fmt: skip
        self.repo.attach_intent(payment.id, intent)
        self.payments.append(payment.id)
        self.listing.events.append(succeeded_event(n, payment.id, created))

    def paid(self) -> list[int]:
        """The numbers of the payments that are `succeeded` in the database."""
        return [
            n for n, pid in enumerate(self.payments) if self.repo.payments[pid].status is SUCCEEDED
        ]


SUCCEEDED = Status.SUCCEEDED


def test_a_429_on_the_third_page_of_the_first_read_keeps_the_two_pages_before_it() -> None:
    world = World()
    for n in range(250):  # paid in the last ten minutes, one event each, a second apart
        world.paid_at_stripe(world.now - 600 + n)
    world.listing.fail_on_page = 3

    first = world.reconciler.sweep()
    assert (first.complete, first.pages) == (False, 2)
    # Stripe lists newest first: the two pages read are the 200 newest payments, applied.
    assert world.paid() == list(range(50, 250))
    assert world.repo.get_cursor(SWEEP_CURSOR) is not None

    requests_before = len(world.listing.page_requests)
    second = world.reconciler.sweep()
    assert second.complete
    assert world.paid() == list(range(250))
    window = {"gt": world.now - 3600}  # the first read's window (the overlap has its own)
    resumed = [
        r for r in world.listing.page_requests[requests_before:] if r.get("created") == window
    ]
    assert [r.get("starting_after") for r in resumed] == ["evt_0050"], "where it stopped"
    # The overlap re-read (the two minutes before the newest event: 120 events), then the 50
    # the first read did not reach, then nothing newer.
    assert second.events == 120 + 50

    world.now += 600
    world.paid_at_stripe(world.now - 5)
    requests_before = len(world.listing.page_requests)
    third = world.reconciler.sweep()
    assert third.complete and world.paid() == list(range(251))
    walked = [r for r in world.listing.page_requests[requests_before:] if "ending_before" in r]
    assert walked and walked[0]["ending_before"] == "evt_0249", "on from the newest event read"
