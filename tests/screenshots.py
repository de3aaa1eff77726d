"""The README's pictures of the running stack, taken with Debian's chromium through Playwright
(never a downloaded browser): run from the repository root as ``python -m tests.screenshots``.

    python -m tests.screenshots ops        # docs/ops.png (``make ops-screenshot``)
    python -m tests.screenshots checkout   # pay with the test card, docs/checkout.png

The API is ``$API_URL`` (default http://127.0.0.1:8000); /ops needs the operator credential, the
first of ``OPERATOR_CREDENTIALS`` (HTTP Basic).
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

from payments.settings import Settings
from tests.browser_support import SUCCEEDS, chromium_page, fill_form, shown, wait_until_finished

ROOT = Path(__file__).resolve().parent.parent
API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")


def ops() -> int:
    out = ROOT / "docs" / "ops.png"
    logins = Settings().operator_logins
    if not logins:
        print("OPERATOR_CREDENTIALS is empty: /ops is closed without it", file=sys.stderr)
        return 1
    user, password = next(iter(logins.items()))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    with chromium_page(1400, 1000, {"Authorization": f"Basic {token}"}) as page:
        response = page.goto(f"{API}/ops", timeout=20_000)
        if response is None or response.status != 200:
            status = None if response is None else response.status
            print(f"GET {API}/ops answered {status}", file=sys.stderr)
            return 1
        page.screenshot(path=str(out), full_page=True)
    print(f"saved {out.relative_to(ROOT)}")
    return 0


def checkout() -> int:
    out = ROOT / "docs" / "checkout.png"
    with chromium_page() as page:
        page.goto(f"{API}/checkout")
        fill_form(page, card=SUCCEEDS)
        page.click("#pay")
        wait_until_finished(page)
        seen = shown(page)
        page.screenshot(path=str(out), full_page=True)
    print(f"payment {seen.payment_id} {seen.status}, event {seen.steps['event'][1]}")
    print(f"saved {out.relative_to(ROOT)}")
    return 0 if seen.status == "succeeded" else 1


if __name__ == "__main__":
    pages = {"ops": ops, "checkout": checkout}
    if len(sys.argv) != 2 or sys.argv[1] not in pages:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(pages[sys.argv[1]]())
