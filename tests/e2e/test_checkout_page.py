"""The checkout page in headless chromium against the running stack: a person pays with a test
card and watches the status arrive; the event the page shows is the one on Kafka. The browser
never holds an API key and never sets an amount: the demo shop's server prices its orders, and a
merchant's link carries a token for the merchant's own payment."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
from playwright.sync_api import Page, Request, Route

from payments.settings import Settings
from tests import support_api
from tests.browser_support import (
    DECLINED,
    SUCCEEDS,
    THREE_D_SECURE,
    chromium_page,
    complete_3ds,
    fill_form,
    shown,
    wait_until_finished,
)
from tests.stack_support import CdcTail

API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
STEPS = ["stored", "intent", "confirmed", "webhook", "database", "event"]


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium_page() as opened:
        yield opened


@pytest.fixture
def status_tail(settings: Settings) -> Iterator[CdcTail]:
    tail = CdcTail(settings, topic=settings.status_topic)
    yield tail
    tail.close()


def _email() -> str:
    return f"checkout-{uuid.uuid4().hex[:12]}@example.com"


def _credentials_sent(page: Page) -> list[str]:
    """The Authorization header of every call the page makes to /payments/…"""
    sent: list[str] = []

    def seen(request: Request) -> None:
        if request.url.startswith(f"{API}/payments"):
            sent.append(request.headers.get("authorization", ""))

    page.on("request", seen)
    return sent


def _rows_with_email(settings: Settings, email: str) -> list[str]:
    with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT id::text FROM payments WHERE customer_email = %s", (email,)
        ).fetchall()
    return [r[0] for r in rows]


def test_paying_with_the_test_card_shows_succeeded_and_the_emitted_event(
    page: Page, status_tail: CdcTail, settings: Settings
) -> None:
    sent = _credentials_sent(page)
    page.goto(f"{API}/checkout?order=teapot")
    fill_form(page, card=SUCCEEDS, email=_email())
    page.click("#pay")
    wait_until_finished(page)

    seen = shown(page)
    assert seen.status == "succeeded"
    assert list(seen.steps) == STEPS
    assert all(state == "done" for state, _ in seen.steps.values()), seen.steps
    event_id = seen.steps["event"][1]
    events = status_tail.events_for(seen.payment_id, timeout=30)
    assert [e["event_id"] for e in events] == [event_id]
    assert events[0]["status"] == "succeeded"
    # The demo shop's price of a teapot, decided on the server: 45.00 EUR.
    assert (events[0]["amount_minor"], events[0]["currency"]) == (4500, "eur")
    assert "payment_intent.succeeded" in seen.steps["webhook"][1]
    # The page held a checkout token, never an API key.
    keys = set(settings.api_key_tenants)
    assert sent and not any(header.removeprefix("Bearer ") in keys for header in sent)
    assert {h.split(".")[0] for h in sent} == {"Bearer ct1"}


def _merchant_payment(settings: Settings, amount_minor: int) -> tuple[dict[str, Any], str]:
    """The merchant's server: its own payment with its API key, then a checkout link for it."""
    auth = support_api.auth(settings)
    made = requests.post(
        f"{API}/payments",
        json={"amount_minor": amount_minor, "currency": "usd", "description": "Order 1042"},
        headers={**auth, "Idempotency-Key": f"merchant-{uuid.uuid4()}"},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    link = requests.post(
        f"{API}/payments/{made.json()['id']}/checkout-token", headers=auth, timeout=10
    )
    assert link.status_code == 200, link.text
    return made.json(), link.json()["checkout_url"]


def test_a_merchants_checkout_link_pays_the_merchants_payment(
    page: Page, status_tail: CdcTail, settings: Settings
) -> None:
    payment, url = _merchant_payment(settings, 4321)
    sent = _credentials_sent(page)
    page.goto(f"{API}{url}")
    assert page.locator("#price").inner_text() == "43.21 USD"
    assert page.locator("#order").count() == 0  # nothing to choose: the merchant decided
    fill_form(page, card=SUCCEEDS)
    page.click("#pay")
    wait_until_finished(page)

    seen = shown(page)
    assert (seen.payment_id, seen.status) == (payment["id"], "succeeded")
    events = status_tail.events_for(payment["id"], timeout=30)
    assert [(e["amount_minor"], e["status"]) for e in events] == [(4321, "succeeded")]
    token = url.split("token=", 1)[1]
    assert set(sent) == {f"Bearer {token}"}
    # The token is good for this payment's confirm and timeline, nothing else.
    other, _ = _merchant_payment(settings, 100)
    for method, path in (
        ("GET", f"/payments/{other['id']}/timeline"),
        ("GET", f"/payments/{payment['id']}"),
        ("GET", "/payments"),
    ):
        r = requests.request(
            method, f"{API}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert r.status_code == 403, (path, r.text)


def test_the_decline_card_shows_failed_with_the_reason(page: Page, status_tail: CdcTail) -> None:
    page.goto(f"{API}/checkout?order=coffee")
    fill_form(page, card=DECLINED, email=_email())
    page.click("#pay")
    wait_until_finished(page)

    seen = shown(page)
    assert seen.status == "failed"
    assert "declined" in seen.failure.lower()
    assert seen.steps["confirmed"][0] == "failed"
    assert "payment_intent.payment_failed" in seen.steps["webhook"][1]
    events = status_tail.events_for(seen.payment_id, timeout=30)
    assert [(e["event_id"], e["status"]) for e in events] == [(seen.steps["event"][1], "failed")]


def test_the_3d_secure_card_shows_the_extra_step(page: Page) -> None:
    page.goto(f"{API}/checkout")
    fill_form(page, card=THREE_D_SECURE, email=_email())
    page.click("#pay")
    complete_3ds(page)
    wait_until_finished(page)

    seen = shown(page)
    assert seen.status == "succeeded"
    assert seen.steps["3ds"] == ("done", "authenticated")
    assert list(seen.steps) == ["stored", "intent", "3ds", *STEPS[2:]]


def test_a_double_click_on_pay_makes_one_payment(page: Page, settings: Settings) -> None:
    email = _email()
    page.goto(f"{API}/checkout")
    fill_form(page, card=SUCCEEDS, email=email)
    page.dblclick("#pay")
    wait_until_finished(page)

    assert _rows_with_email(settings, email) == [shown(page).payment_id]
    assert shown(page).status == "succeeded"


def test_paying_again_after_a_reload_reuses_the_payment(page: Page, settings: Settings) -> None:
    email = _email()
    page.goto(f"{API}/checkout")

    # The first attempt stores the payment, then the connection drops before the card is sent.
    def drop(route: Route) -> None:
        route.abort()

    page.route("**/payments/*/confirm", drop)
    fill_form(page, card=SUCCEEDS, email=email)
    page.click("#pay")
    page.locator("#form-error").wait_for(state="visible")
    first = _rows_with_email(settings, email)
    assert len(first) == 1

    page.unroute("**/payments/*/confirm")
    page.reload()
    assert page.input_value("#email") == email  # the attempt (and its key) survived the reload
    fill_form(page, card=SUCCEEDS)
    page.click("#pay")
    wait_until_finished(page)

    assert _rows_with_email(settings, email) == first
    assert shown(page).payment_id == first[0]
    assert shown(page).status == "succeeded"
