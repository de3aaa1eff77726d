"""`make checkout-screenshot`: pay on the running stack's checkout page with the test card and
save a picture of the page once the event is emitted (docs/checkout.png, for the README)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser_support import (  # noqa: E402
    SUCCEEDS,
    chromium_page,
    fill_form,
    shown,
    wait_until_finished,
)


def main() -> int:
    api = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    target = ROOT / "docs" / "checkout.png"
    target.parent.mkdir(exist_ok=True)
    with chromium_page() as page:
        page.goto(f"{api}/checkout")
        fill_form(page, card=SUCCEEDS)
        page.click("#pay")
        wait_until_finished(page)
        seen = shown(page)
        page.screenshot(path=str(target), full_page=True)
    print(f"payment {seen.payment_id} {seen.status}, event {seen.steps['event'][1]}")
    print(f"saved {target.relative_to(ROOT)}")
    return 0 if seen.status == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
