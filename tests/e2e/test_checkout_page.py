"""The checkout page in headless chromium against the running stack: a person pays with a test
card and watches the status arrive; the event the page shows is the one on Kafka."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from playwright.sync_api import Page, Route

from payments.settings import Settings
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

API = "http://127.0.0.1:8000"
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


def _rows_with_email(settings: Settings, email: str) -> list[str]:
    with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT id::text FROM payments WHERE customer_email = %s", (email,)
        ).fetchall()
    return [r[0] for r in rows]


def test_paying_with_the_test_card_shows_succeeded_and_the_emitted_event(
    page: Page, status_tail: CdcTail
) -> None:
    page.goto(f"{API}/checkout")
    fill_form(page, card=SUCCEEDS, amount="12.34", email=_email())
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
    assert events[0]["amount_minor"] == 1234
    assert "payment_intent.succeeded" in seen.steps["webhook"][1]


def test_the_decline_card_shows_failed_with_the_reason(page: Page, status_tail: CdcTail) -> None:
    page.goto(f"{API}/checkout")
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
