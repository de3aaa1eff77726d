"""The load of the fault suite: customers paying through the API as real clients do (retrying
with the same idempotency key), and a stream of hostile input that must never earn a 5xx."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from payments.settings import Settings
from tests import support_api

CARDS = {"pay": "4242424242424242", "decline": "4000000000000341"}
# What each customer does once the payment exists; "abandon" leaves it pending at Stripe.
PLANS = ["pay"] * 5 + ["decline"] * 2 + ["cancel", "abandon", "pay"]
DESCRIPTIONS = ["Café crème ☕", "注文 #42", "plain order", "ünïcödé 🎉 order"]
RETRY_FOR_SECONDS = 120.0


@dataclass
class Customer:
    """One payment as its client saw it."""

    key: str
    plan: str
    request: dict[str, Any]
    payment_id: str | None = None
    intent_id: str | None = None
    answers: list[int] = field(default_factory=list)
    gave_up: str | None = None


@dataclass
class Load:
    api: str
    settings: Settings
    prefix: str
    rng: random.Random
    customers: list[Customer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _http(self, method: str, path: str, **kw: Any) -> requests.Response | None:
        try:
            return requests.request(method, self.api + path, timeout=30, **kw)
        except requests.RequestException:
            return None  # the API is down (killed): the client retries

    def _create(self, customer: Customer) -> None:
        body = customer.request
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        delay = 0.2
        while time.monotonic() < deadline:
            r = self._http(
                "POST", "/payments", json=body, headers={"Idempotency-Key": customer.key}
            )
            if r is not None:
                customer.answers.append(r.status_code)
                if r.status_code in (200, 201):
                    doc = r.json()
                    customer.payment_id = doc.get("id") or doc.get("payment_id")
                    customer.intent_id = doc.get("provider_payment_id")
                    if customer.intent_id:
                        return
                elif r.status_code == 202:
                    customer.payment_id = r.json()["id"]
                elif 400 <= r.status_code < 500 and r.status_code not in (409, 429):
                    customer.gave_up = f"{r.status_code}: {r.text[:300]}"
                    return
            time.sleep(delay)
            delay = min(delay * 2, 3.0)
        customer.gave_up = "no intent after retrying (the worker finishes the creation)"

    def _act(self, customer: Customer, stripe: support_api.LocalStripe) -> None:
        if customer.intent_id is None or customer.plan == "abandon":
            return
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        while time.monotonic() < deadline:
            try:
                if customer.plan == "cancel":
                    r = self._http("POST", f"/payments/{customer.payment_id}/cancel")
                    if r is not None and r.status_code < 500:
                        customer.answers.append(r.status_code)
                        return
                else:
                    stripe.pay(customer.intent_id, CARDS[customer.plan])
                    return
            except (requests.RequestException, AssertionError):
                pass  # the stand-in is frozen or busy: the customer tries again
            time.sleep(1.0)
        customer.gave_up = f"could not {customer.plan}"

    def customer(self, index: int) -> None:
        key = f"{self.prefix}-{index:05d}"
        customer = Customer(
            key=key,
            plan=PLANS[index % len(PLANS)],
            request={
                "amount_minor": self.rng.randint(50, 500_000),
                "currency": self.rng.choice(["usd", "eur", "jpy"]),
                "customer_email": f"{key}@example.com",
                "description": self.rng.choice(DESCRIPTIONS),
                "metadata": {"suite": "faults"},
            },
        )
        with self.lock:
            self.customers.append(customer)
        if index % 10 == 3:
            # A double click: the same request three times at once.
            threads = [threading.Thread(target=self._create, args=(customer,)) for _ in range(2)]
            for t in threads:
                t.start()
            self._create(customer)
            for t in threads:
                t.join()
        else:
            self._create(customer)
        self._act(customer, support_api.LocalStripe(self.settings))


def hostile_inputs(settings: Settings, prefix: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(name, method, path, requests kwargs): each is the caller's fault, or odd but valid."""
    secret = settings.stripe_webhook_secret
    week_ago = int(time.time()) - 7 * 24 * 3600

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
        headers = {"Idempotency-Key": f"{prefix}-bad-{uuid.uuid4().hex}"} if key else {}
        if isinstance(body, bytes):
            return {"data": body, "headers": {**headers, "Content-Type": "application/json"}}
        return {"json": body, "headers": headers}

    reused_key = f"{prefix}-reused-{uuid.uuid4().hex}"
    return [
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
            {"json": good, "headers": {"Idempotency-Key": "k" * 256}},
        ),
        ("api: not JSON", "POST", "/payments", post(b"amount=1000")),
        ("api: JSON array", "POST", "/payments", post([good])),
        ("api: NUL in text", "POST", "/payments", post({**good, "description": "a\u0000b"})),
        ("api: huge body", "POST", "/payments", post(b'{"d": "' + b"x" * 2_000_000 + b'"}')),
        ("api: key reuse (first)", "POST", "/payments", _keyed(good, reused_key)),
        (
            "api: key reuse, new body",
            "POST",
            "/payments",
            _keyed({**good, "amount_minor": 7}, reused_key),
        ),
        ("api: bad id", "GET", "/payments/not-a-uuid", {}),
        ("api: unknown id", "GET", f"/payments/{uuid.uuid4()}", {}),
        ("api: bad status filter", "GET", "/payments?status=bogus", {}),
        ("api: bad limit", "GET", "/payments?limit=-1", {}),
        ("api: bad cursor", "GET", "/payments?after=%%%", {}),
        ("api: cancel unknown", "POST", f"/payments/{uuid.uuid4()}/cancel", {}),
    ]


def _keyed(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {"json": body, "headers": {"Idempotency-Key": key}}


@dataclass
class HostileReport:
    tried: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)


def send_hostile(api: str, settings: Settings, prefix: str, rounds: int) -> HostileReport:
    """Send every hostile input ``rounds`` times; a 5xx is recorded (the API's fault), a
    refused connection is retried (a fault was injected, not the input's doing)."""
    report = HostileReport()
    for _ in range(rounds):
        for name, method, path, kwargs in hostile_inputs(settings, prefix):
            for _attempt in range(60):
                try:
                    r = requests.request(method, api + path, timeout=30, **kwargs)
                    break
                except requests.RequestException:
                    time.sleep(1.0)
            else:
                report.server_errors.append(f"{name}: API unreachable for a minute")
                continue
            report.tried += 1
            report.answers[f"{r.status_code}"] += 1
            if r.status_code >= 500:
                report.server_errors.append(f"{name}: {r.status_code} {r.text[:200]}")
            elif r.status_code >= 400 and not r.headers.get("Content-Type", "").startswith(
                "application/problem+json"
            ):
                report.server_errors.append(f"{name}: {r.status_code} without problem+json")
    return report


def malformed_cdc_record() -> bytes:
    return json.dumps({"op": "u", "after": {"id": "not-a-uuid"}}).encode()
