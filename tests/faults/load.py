"""The load of the fault suite: customers paying through the API and Stripe as real clients do
(retrying with the same idempotency key, double clicks, declines, 3-D Secure, cancels, giving
up), and a stream of hostile input that must never earn a 5xx of its own.

Every API call is recorded in the ``Ledger`` (source ``api``); Stripe calls go through the
suite's proxy, which records them (source ``stripe``).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from kafka import KafkaConsumer, TopicPartition

from payments.settings import Settings
from tests import support_api
from tests.faults.chaos import Ledger, Traffic

CARDS = {
    "pay": "4242424242424242",
    "decline": "4000000000000341",  # declined when charged
    "3ds": "4000002500003155",  # asks for 3-D Secure first
}
# The background load, one plan per arriving customer in turn ("abandon" never pays: the
# expiry must cancel its intent). The faults add "pay" customers during Stripe outages and
# "gap" customers while webhooks are lost; a "canary" pays after each fault.
PLANS = (
    ["pay"] * 8
    + ["decline"] * 2
    + ["decline-then-pay"] * 2
    + ["3ds"] * 3
    + ["3ds-abandon"]
    + ["cancel"] * 2
    + ["abandon"] * 2
)
DESCRIPTIONS = ["Café crème ☕", "注文 #42", "plain order", "ünïcödé 🎉 order"]
# Longer than any outage a customer meets in the suite (the API or Stripe down, a primary
# restart, a 202 waiting for the worker to finish the creation).
RETRY_FOR_SECONDS = 180.0
# A fault's canary must be through (its status event out) within this long, or the system did
# not heal.
HEAL_WITHIN_SECONDS = 180.0
DECLINE_ERROR = {
    "type": "card_error",
    "code": "card_declined",
    "decline_code": "generic_decline",
    "message": "Your card was declined.",
}


@dataclass
class Customer:
    """One payment as its customer lived it."""

    key: str
    plan: str
    request: dict[str, Any]
    payment_id: str | None = None
    intent_id: str | None = None
    answers: list[int] = field(default_factory=list)  # to its create requests
    accepted: bool = False  # answered 202: stored, Stripe unreachable, finished by the worker
    gave_up: str | None = None  # why the customer could not do what it came to do
    stripe_end: str | None = None  # the intent's status after the customer's last step
    seen_at_stripe: list[str] = field(default_factory=list)  # the intent's statuses, in order
    forged_failure: str | None = None  # the payment_failed event it sent, if any
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def answered(self) -> bool:
        return bool(self.answers) or self.done.is_set()


class StatusWatch:
    """Follows ``payment-status-update`` from its end (one thread only: the fault thread)."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            request_timeout_ms=20_000,
        )
        topic = settings.status_topic
        parts = [
            TopicPartition(topic, p)
            for p in sorted(self.consumer.partitions_for_topic(topic) or [])
        ]
        assert parts, f"topic {topic} has no partitions"
        self.consumer.assign(parts)
        self.consumer.seek_to_end(*parts)
        for tp in parts:
            self.consumer.position(tp)
        self.seen: set[tuple[str, str]] = set()

    def wait(self, payment_id: str, status: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (payment_id, status) not in self.seen and time.monotonic() < deadline:
            for batch in self.consumer.poll(timeout_ms=500).values():
                for record in batch:
                    try:
                        event = json.loads(record.value)
                        self.seen.add((str(event["payment_id"]), str(event["status"])))
                    except (ValueError, KeyError, TypeError):
                        continue
        return (payment_id, status) in self.seen

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Load(Traffic):
    api: str
    stripe_base: str  # the suite's proxy in front of the stand-in
    settings: Settings
    prefix: str
    rng: random.Random
    ledger: Ledger
    workers: int = 64
    customers: list[Customer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: int = 0
    watch: StatusWatch | None = None

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="customer")
        self.futures: list[Future[None]] = []
        self.auth = support_api.auth(self.settings)
        self.stripe = requests.Session()
        self.stripe.auth = (self.settings.stripe_secret_key, "")
        self.secret = self.settings.webhook_secrets[0]

    # -- calls ------------------------------------------------------------------------------

    def _api(self, method: str, path: str, **kw: Any) -> requests.Response | None:
        """One API call as a client makes it; None when it got no answer (the API down)."""
        headers = {**self.auth, **kw.pop("headers", {})}
        start = time.monotonic()
        try:
            r = requests.request(method, self.api + path, timeout=30, headers=headers, **kw)
        except requests.RequestException as exc:
            kind = "timeout" if isinstance(exc, requests.Timeout) else "refused"
            self.ledger.record("api", kind, start)
            return None
        self.ledger.record("api", "ok" if r.status_code < 500 else str(r.status_code), start)
        return r

    def _stripe(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any]] | None:
        """One call to Stripe (through the proxy) as the browser makes it; None: no answer."""
        try:
            r = requests.request(
                method,
                self.stripe_base + path,
                auth=(self.settings.stripe_secret_key, ""),
                timeout=30,
                **kw,
            )
            return r.status_code, r.json()
        except (requests.RequestException, ValueError):
            return None

    # -- a customer -------------------------------------------------------------------------

    def new_customer(self, plan: str) -> Customer:
        with self.lock:
            index = self.arrived
            self.arrived += 1
            customer = Customer(
                key=f"{self.prefix}-{index:05d}",
                plan=plan,
                request={
                    "amount_minor": self.rng.randint(50, 500_000),
                    "currency": self.rng.choice(["usd", "eur", "jpy"]),
                    "customer_email": f"{self.prefix}-{index:05d}@example.com",
                    "description": self.rng.choice(DESCRIPTIONS),
                    "metadata": {"suite": "faults"},
                },
            )
            self.customers.append(customer)
        return customer

    def start(self, plan: str) -> Customer:
        customer = self.new_customer(plan)
        self.futures.append(self.pool.submit(self.live, customer))
        return customer

    def live(self, customer: Customer) -> None:
        try:
            clicks = 3 if int(customer.key.rsplit("-", 1)[1]) % 10 == 3 else 1
            if clicks > 1:  # a double (triple) click: the same request at once
                threads = [
                    threading.Thread(target=self._create, args=(customer,))
                    for _ in range(clicks - 1)
                ]
                for t in threads:
                    t.start()
                self._create(customer)
                for t in threads:
                    t.join()
            else:
                self._create(customer)
            if customer.intent_id is not None:
                self._act(customer)
                self._look(customer)
        except Exception as exc:  # a bug of the suite must show, not vanish in a thread
            customer.gave_up = f"suite error: {type(exc).__name__}: {exc}"
            raise
        finally:
            customer.done.set()

    def _create(self, customer: Customer) -> None:
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        delay = 0.2
        while time.monotonic() < deadline and customer.intent_id is None:
            r = self._api(
                "POST",
                "/payments",
                json=customer.request,
                headers={"Idempotency-Key": customer.key},
            )
            if r is not None:
                customer.answers.append(r.status_code)
                if r.status_code in (200, 201):
                    doc = r.json()
                    customer.payment_id = doc["id"]
                    customer.intent_id = doc.get("provider_payment_id")
                    if customer.intent_id:
                        return
                elif r.status_code == 202:
                    # Stored, Stripe unreachable: the worker finishes it. Wait, do not re-send.
                    customer.accepted = True
                    customer.payment_id = r.json()["id"]
                    self._await_intent(customer, deadline)
                    return
                elif 400 <= r.status_code < 500 and r.status_code not in (409, 429):
                    customer.gave_up = f"create answered {r.status_code}: {r.text[:300]}"
                    return
            time.sleep(delay)
            delay = min(delay * 2, 3.0)
        if customer.intent_id is None and customer.gave_up is None:
            customer.gave_up = "no payment with an intent after retrying"

    def _await_intent(self, customer: Customer, deadline: float) -> None:
        while time.monotonic() < deadline:
            r = self._api("GET", f"/payments/{customer.payment_id}")
            if r is not None and r.status_code == 200:
                customer.intent_id = r.json().get("provider_payment_id")
                if customer.intent_id:
                    return
            time.sleep(2.0)
        customer.gave_up = "202, and the worker never created the intent"

    def _look(self, customer: Customer) -> None:
        """The customer's page reads the payment back (from a replica)."""
        self._api("GET", f"/payments/{customer.payment_id}")

    def _act(self, customer: Customer) -> None:
        plan = customer.plan
        if plan in {"pay", "canary", "gap-pay"}:
            self._pay(customer, "pay", "succeeded")
        elif plan == "decline":
            self._pay(customer, "decline", "declined")
        elif plan in {"decline-then-pay", "gap-decline-then-pay"}:
            self._forge_failure(customer)
            self._pay(customer, "pay", "succeeded")
        elif plan == "3ds":
            self._pay(customer, "3ds", "succeeded")
        elif plan == "3ds-abandon":
            self._pay(customer, "3ds", "requires_action")
        elif plan == "cancel":
            self._cancel(customer)
        # "abandon": nothing; the expiry must cancel its intent at the TTL.

    # -- at Stripe --------------------------------------------------------------------------

    def _pay(self, customer: Customer, card: str, goal: str) -> None:
        """Drive the intent until ``goal`` with ``card``, from whatever state a lost answer
        left it in (each step is repeated only when Stripe did not take it)."""
        intent_path = f"/v1/payment_intents/{customer.intent_id}"
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        while time.monotonic() < deadline:
            got = self._stripe("GET", intent_path)
            if got is None or got[0] != 200:
                time.sleep(1.0)
                continue
            intent = got[1]
            status = intent["status"]
            customer.stripe_end = status
            if customer.seen_at_stripe[-1:] != [status]:
                customer.seen_at_stripe.append(status)
            if status == "succeeded" or (status == "requires_action" and goal == status):
                return
            if status == "requires_payment_method" and intent.get("last_payment_error"):
                customer.stripe_end = "declined"
                if goal != "declined":
                    customer.gave_up = "declined, though paying with a card that succeeds"
                return
            if status == "canceled":
                customer.gave_up = f"intent canceled while paying ({goal})"
                return
            if status == "requires_payment_method":
                pm = self._stripe(
                    "POST",
                    "/v1/payment_methods",
                    data={
                        "type": "card",
                        "card[number]": CARDS[card],
                        "card[exp_month]": "12",
                        "card[exp_year]": "2034",
                        "card[cvc]": "123",
                    },
                )
                if pm is not None and pm[0] == 200:
                    self._stripe("POST", intent_path, data={"payment_method": pm[1]["id"]})
            elif status == "requires_confirmation":
                self._stripe("POST", f"{intent_path}/confirm")
            elif status == "requires_action":
                self._stripe(
                    "POST",
                    f"{intent_path}/_authenticate",
                    data={"client_secret": intent["client_secret"], "success": "true"},
                )
            else:  # processing
                time.sleep(0.5)
        customer.gave_up = f"could not reach {goal} at Stripe"

    def _forge_failure(self, customer: Customer) -> None:
        """A declined attempt the stand-in cannot make (it refuses to confirm again after a
        decline): Stripe's signed ``payment_intent.payment_failed`` for the unpaid intent, then
        wait until the payment says ``failed``."""
        got = None
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        while got is None or got[0] != 200:
            if time.monotonic() > deadline:
                customer.gave_up = "could not read its intent to send a decline"
                return
            got = self._stripe("GET", f"/v1/payment_intents/{customer.intent_id}")
        intent = {
            **got[1],
            "status": "requires_payment_method",
            "last_payment_error": DECLINE_ERROR,
        }
        event_id = f"evt_faults_{uuid.uuid4().hex}"
        body = json.dumps(
            {
                "id": event_id,
                "object": "event",
                "type": "payment_intent.payment_failed",
                "created": int(time.time()),
                "data": {"object": intent},
            }
        ).encode()
        customer.forged_failure = event_id
        while time.monotonic() < deadline:
            headers = {
                "Stripe-Signature": support_api.sign(body, self.secret),
                "Content-Type": "application/json",
            }
            r = self._api("POST", "/webhooks/stripe", data=body, headers=headers)
            if r is not None and r.status_code < 500:
                break
            time.sleep(1.0)
        while time.monotonic() < deadline:
            r = self._api("GET", f"/payments/{customer.payment_id}")
            if r is not None and r.status_code == 200 and r.json().get("status") == "failed":
                return
            time.sleep(0.5)
        customer.gave_up = "the payment never showed failed after the decline"

    def _cancel(self, customer: Customer) -> None:
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        while time.monotonic() < deadline:
            r = self._api("POST", f"/payments/{customer.payment_id}/cancel")
            if r is not None and (r.status_code < 500 and r.status_code not in (409, 429)):
                customer.stripe_end = "canceled" if r.status_code == 200 else str(r.status_code)
                if r.status_code != 200:
                    customer.gave_up = f"cancel answered {r.status_code}: {r.text[:200]}"
                return
            time.sleep(1.0)
        customer.gave_up = "could not cancel"

    # -- what the faults ask for (Traffic) --------------------------------------------------

    def arrive(self, plan: str, count: int) -> list[Any]:
        if plan == "gap":
            plans = ["gap-pay", "gap-decline-then-pay"] * count
            return [self.start(p) for p in plans[:count]]
        return [self.start(plan) for _ in range(count)]

    def answered(self, customers: list[Any]) -> bool:
        return all(c.answered for c in customers)

    def finished(self, customers: list[Any]) -> bool:
        return all(c.done.is_set() for c in customers)

    def look(self, count: int) -> None:
        with self.lock:
            paid = [c for c in self.customers if c.payment_id and c.done.is_set()]
        for customer in self.rng.sample(paid, min(count, len(paid))):
            self._look(customer)

    def canary(self) -> bool:
        if self.watch is None:
            self.watch = StatusWatch(self.settings)  # from the end: before the canary pays
        customer = self.new_customer("canary")
        self.live(customer)
        if customer.payment_id is None or customer.gave_up:
            return False
        return self.watch.wait(customer.payment_id, "succeeded", timeout=HEAL_WITHIN_SECONDS)

    def target(self) -> Customer | None:
        """A customer who will never pay (for forged webhooks about its payment)."""
        with self.lock:
            idle = [
                c for c in self.customers if c.plan == "abandon" and c.intent_id and c.done.is_set()
            ]
        return self.rng.choice(idle) if idle else None

    def wait_all(self) -> None:
        for future in list(self.futures):
            future.result()
        self.pool.shutdown(wait=True)
        if self.watch is not None:
            self.watch.close()


# ------------------------------------------------------------------------------ hostile input


PACE_SECONDS = 0.05  # between two hostile requests
ROUND_SECONDS = 10.0  # at least, per round of every hostile input
WEBHOOK_DELIVERIES = 60  # of a forged webhook the API answered with a 5xx, one a second
FORGED = ("webhook: another intent names a real payment", "webhook: own intent, other amount")


def hostile_inputs(
    settings: Settings, prefix: str, target: Customer | None, *, reuse: bool = True
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(name, method, path, requests kwargs): each is the caller's fault, or odd but valid."""
    secret = settings.webhook_secrets[0]
    week_ago = int(time.time()) - 7 * 24 * 3600
    auth = support_api.auth(settings)

    def hook(raw: bytes, *, at: int | None = None, sig: str | None = None) -> dict[str, Any]:
        header = sig if sig is not None else support_api.sign(raw, secret, at=at)
        headers = {"Stripe-Signature": header, "Content-Type": "application/json"}
        return {"data": raw, "headers": headers}

    event = support_api.intent_event(
        f"evt_{uuid.uuid4().hex}",
        "payment_intent.succeeded",
        intent_id=f"pi_{uuid.uuid4().hex[:14]}",
        payment_id=str(uuid.uuid4()),
        status="succeeded",
    )
    good = {"amount_minor": 1000, "currency": "usd"}

    def post(body: Any, key: str | None = "k") -> dict[str, Any]:
        headers = {**auth}
        if key:
            headers["Idempotency-Key"] = f"{prefix}-bad-{uuid.uuid4().hex}"
        if isinstance(body, bytes):
            return {"data": body, "headers": {**headers, "Content-Type": "application/json"}}
        return {"json": body, "headers": headers}

    def keyed(body: dict[str, Any], key: str) -> dict[str, Any]:
        return {"json": body, "headers": {**auth, "Idempotency-Key": key}}

    reused_key = f"{prefix}-reused-{uuid.uuid4().hex}"
    inputs = [
        ("webhook: bad signature", "POST", "/webhooks/stripe", hook(event, sig="t=1,v1=deadbeef")),
        ("webhook: no signature", "POST", "/webhooks/stripe", {"data": event}),
        ("webhook: week-old replay", "POST", "/webhooks/stripe", hook(event, at=week_ago)),
        ("webhook: unknown payment", "POST", "/webhooks/stripe", hook(event)),
        ("webhook: duplicate", "POST", "/webhooks/stripe", hook(event)),
        (
            "webhook: unknown type",
            "POST",
            "/webhooks/stripe",
            hook(event.replace(b"payment_intent.succeeded", b"charge.dispute.created")),
        ),
        ("webhook: malformed body", "POST", "/webhooks/stripe", hook(b'{"id": "evt_1", "typ')),
        ("webhook: oversized body", "POST", "/webhooks/stripe", hook(b" " * 2_000_000 + event)),
        ("api: amount 0", "POST", "/payments", post({**good, "amount_minor": 0})),
        ("api: amount negative", "POST", "/payments", post({**good, "amount_minor": -5})),
        ("api: amount too big", "POST", "/payments", post({**good, "amount_minor": 10**12})),
        ("api: amount float", "POST", "/payments", post({**good, "amount_minor": 10.5})),
        ("api: amount string", "POST", "/payments", post({**good, "amount_minor": "1000"})),
        ("api: amount huge int", "POST", "/payments", post({**good, "amount_minor": 10**40})),
        ("api: unknown currency", "POST", "/payments", post({**good, "currency": "xyz"})),
        ("api: currency number", "POST", "/payments", post({**good, "currency": 840})),
        ("api: no currency", "POST", "/payments", post({"amount_minor": 1000})),
        (
            "api: 51 metadata keys",
            "POST",
            "/payments",
            post({**good, "metadata": {f"k{i}": "v" for i in range(51)}}),
        ),
        ("api: long metadata key", "POST", "/payments", post({**good, "metadata": {"k" * 41: 1}})),
        ("api: metadata list", "POST", "/payments", post({**good, "metadata": [1, 2]})),
        ("api: bad e-mail", "POST", "/payments", post({**good, "customer_email": "not@"})),
        ("api: long description", "POST", "/payments", post({**good, "description": "é" * 10_000})),
        ("api: unknown field", "POST", "/payments", post({**good, "amount": 1000})),
        ("api: no idempotency key", "POST", "/payments", post(good, key=None)),
        (
            "api: 256-char key",
            "POST",
            "/payments",
            {"json": good, "headers": {**auth, "Idempotency-Key": "k" * 256}},
        ),
        ("api: not JSON", "POST", "/payments", post(b"amount=1000")),
        ("api: JSON array", "POST", "/payments", post([good])),
        ("api: NUL in text", "POST", "/payments", post({**good, "description": "a\u0000b"})),
        ("api: huge body", "POST", "/payments", post(b'{"d": "' + b"x" * 2_000_000 + b'"}')),
        ("api: bad id", "GET", "/payments/not-a-uuid", {"headers": auth}),
        ("api: unknown id", "GET", f"/payments/{uuid.uuid4()}", {"headers": auth}),
        ("api: bad status filter", "GET", "/payments?status=bogus", {"headers": auth}),
        ("api: bad limit", "GET", "/payments?limit=-1", {"headers": auth}),
        ("api: bad cursor", "GET", "/payments?after=%%%", {"headers": auth}),
        ("api: cancel unknown", "POST", f"/payments/{uuid.uuid4()}/cancel", {"headers": auth}),
    ]
    if reuse:  # makes a real payment (abandoned: it expires), so not every round
        inputs += [
            ("api: key reuse (first)", "POST", "/payments", keyed(good, reused_key)),
            (
                "api: key reuse, new body",
                "POST",
                "/payments",
                keyed({**good, "amount_minor": 7}, reused_key),
            ),
        ]
    if auth:
        inputs += [
            ("api: no API key", "GET", "/payments", {}),
            ("api: wrong API key", "GET", "/payments", {"headers": {"Authorization": "Bearer x"}}),
        ]
    if target is not None and target.payment_id and target.intent_id:
        # Signed by "Stripe", about a real payment, but not its own intent (or not its amount):
        # the payment must not move, and the inbox must say why.
        amount, currency = target.request["amount_minor"], target.request["currency"]
        for name, intent_id, amount_sent in (
            (FORGED[0], f"pi_forged{uuid.uuid4().hex[:12]}", amount),
            (FORGED[1], target.intent_id, amount + 1),
        ):
            body = json.dumps(
                {
                    "id": f"evt_forged_{uuid.uuid4().hex}",
                    "object": "event",
                    "type": "payment_intent.succeeded",
                    "created": int(time.time()),
                    "data": {
                        "object": {
                            "id": intent_id,
                            "object": "payment_intent",
                            "status": "succeeded",
                            "amount": amount_sent,
                            "currency": currency,
                            "metadata": {"payment_id": target.payment_id},
                            "last_payment_error": None,
                        }
                    },
                }
            ).encode()
            inputs.append((name, "POST", "/webhooks/stripe", hook(body)))
    return inputs


def depends_on(method: str, path: str) -> frozenset[str]:
    """The parts of the stack an API endpoint needs to answer (``FaultRecord.part``): the
    PostgreSQL primary, for all of them (reads fall back to it from a replica), and Stripe for
    those that call it (creating a payment, canceling one)."""
    if method == "POST" and (path == "/payments" or path.endswith("/cancel")):
        return frozenset({"postgres", "stripe"})
    return frozenset({"postgres"})


@dataclass
class HostileReport:
    tried: int = 0
    rounds: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    # 503 problem+json while a fault took away a part the endpoint needs (fair), by fault.
    excused: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    forged: dict[str, str] = field(default_factory=dict)  # forged event taken -> its payment


def _request_until_answered(
    ledger: Ledger, method: str, url: str, kwargs: dict[str, Any]
) -> tuple[requests.Response, float, float] | None:
    """The API's answer with when it was asked and answered; a refused connection (the API
    is down) is retried for two minutes, then None."""
    for _attempt in range(120):
        start = time.monotonic()
        try:
            r = requests.request(method, url, timeout=30, **kwargs)
        except requests.RequestException:
            ledger.record("api", "refused", start)
            time.sleep(1.0)
            continue
        ledger.record("api", "ok" if r.status_code < 500 else str(r.status_code), start)
        return r, start, time.monotonic()
    return None


def send_hostile(
    api: str,
    settings: Settings,
    prefix: str,
    *,
    ledger: Ledger,
    keep_going: Callable[[], bool],
    excusing: Callable[[float, float, frozenset[str]], str | None],
    target: Callable[[], Customer | None],
    between_rounds: Callable[[int], None],
) -> HostileReport:
    """Send every hostile input, round after round while ``keep_going()`` (at least once).

    A 5xx is the API's fault, except a 503 problem answer while a fault took away a part the
    endpoint needs (``depends_on``; ``excusing`` names that fault): the honest answer. A refused
    connection is retried (the API is down), and a forged webhook answered with a 5xx is
    delivered again, as Stripe does.
    """
    report = HostileReport()
    while report.rounds == 0 or keep_going():
        round_started = time.monotonic()
        reuse = report.rounds % 5 == 0
        for name, method, path, kwargs in hostile_inputs(settings, prefix, target(), reuse=reuse):
            time.sleep(PACE_SECONDS)
            # Stripe redelivers a webhook the API did not take (any 5xx). The forged ones are
            # judged by what the inbox kept, so they are redelivered the same way until taken.
            deliveries = WEBHOOK_DELIVERIES if name in FORGED else 1
            for delivery in range(1, deliveries + 1):
                answer = _request_until_answered(ledger, method, api + path, kwargs)
                if answer is None:
                    report.server_errors.append(f"{name}: API unreachable for two minutes")
                    break
                r, start, end = answer
                report.tried += 1
                report.answers[f"{r.status_code}"] += 1
                problem = r.headers.get("Content-Type", "").startswith("application/problem+json")
                fault = excusing(start, end, depends_on(method, path)) if problem else None
                if r.status_code == 503 and fault is not None:
                    report.excused[fault] += 1
                elif r.status_code >= 500:
                    report.server_errors.append(f"{name}: {r.status_code} {r.text[:200]}")
                elif r.status_code >= 400 and not problem:
                    report.server_errors.append(f"{name}: {r.status_code} without problem+json")
                if r.status_code < 500 and name in FORGED:
                    sent = json.loads(kwargs["data"])
                    report.forged[sent["id"]] = sent["data"]["object"]["metadata"]["payment_id"]
                if r.status_code < 500 or deliveries == 1:
                    break
                if delivery == deliveries:
                    report.server_errors.append(f"{name}: not taken in {deliveries} deliveries")
                time.sleep(1.0)
        report.rounds += 1
        between_rounds(report.rounds)
        # A steady trickle under the faults, not a flood that starves the customers.
        time.sleep(max(0.0, ROUND_SECONDS - (time.monotonic() - round_started)))
    return report


# Records Debezium would never write, by what is wrong with them: each must reach the DLQ.
MALFORMED_CDC_RECORDS = {
    "valid JSON, not a change": json.dumps({"op": "u", "after": {"id": "not-a-uuid"}}).encode(),
    "not JSON": b"\x00\xff{not json at all",
}
