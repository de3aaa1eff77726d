"""Drives the checkout page in Debian's chromium (Playwright, no downloaded browser).

Used by ``tests/e2e/test_checkout_page.py`` and ``make checkout-screenshot``. Card entry works
with the local Stripe stand-in's card element (plain inputs in the page); Stripe's own element
lives in iframes and is not driven here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SUCCEEDS = "4242424242424242"
DECLINED = "4000000000000341"
THREE_D_SECURE = "4000002500003155"


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's headless chromium under Playwright (never a browser Playwright downloads)."""
    executable = shutil.which("chromium")
    if executable is None:
        raise AssertionError("Debian's chromium is not installed; run scripts/bootstrap")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium_page(
    width: int = 760, height: int = 1100, headers: dict[str, str] | None = None
) -> Iterator[Page]:
    with chromium() as browser:
        page = browser.new_page(
            viewport={"width": width, "height": height}, extra_http_headers=headers or {}
        )
        page.set_default_timeout(30_000)
        yield page


def fill_form(page: Page, *, card: str, email: str | None = None) -> None:
    """Fill the form as a person would (the stand-in's card element: number, MM, YY, CVC). The
    amount is not the browser's to choose: the order (or the merchant's payment) sets it."""
    if email is not None:
        page.fill("#email", email)
    element = page.locator("#card-element")
    element.locator("input[placeholder=number]").fill(card)
    element.locator("input[placeholder=exp_month]").fill("12")
    element.locator("input[placeholder=exp_year]").fill("34")
    element.locator("input[placeholder=cvc]").fill("123")
    element.locator("input[placeholder=postal_code]").fill("75001")


def complete_3ds(page: Page) -> None:
    """Press the stand-in's 3-D Secure dialog's confirm button."""
    page.get_by_role("button", name="Complete authentication").click()


def wait_until_finished(page: Page, timeout_ms: int = 90_000) -> None:
    """The page shows its 'New payment' button once the status is final and its event seen."""
    page.locator("#again").wait_for(state="visible", timeout=timeout_ms)


@dataclass(frozen=True)
class Shown:
    payment_id: str
    status: str
    failure: str
    steps: dict[str, tuple[str, str]]  # key -> (state, detail)


def shown(page: Page) -> Shown:
    failure = page.locator("#failure")
    steps = {}
    for item in page.locator("#steps li").all():
        key = item.get_attribute("data-step") or ""
        steps[key] = (item.get_attribute("data-state") or "", item.locator(".detail").inner_text())
    return Shown(
        payment_id=page.locator("#payment-id").inner_text(),
        status=page.locator("#status").inner_text().lower(),
        failure=failure.inner_text() if failure.is_visible() else "",
        steps=steps,
    )
