"""Save a screenshot of the running API's /ops page to docs/ops.png (``make ops-screenshot``).

Uses Debian's ``chromium`` through Playwright (never a downloaded browser). The API is
``$API_URL`` (default http://127.0.0.1:8000); with ``API_KEYS`` set, the first key is sent.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from payments.settings import Settings  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def main() -> int:
    base = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
    out = ROOT / "docs" / "ops.png"
    out.parent.mkdir(exist_ok=True)
    chromium = shutil.which("chromium")
    if not chromium:
        print("chromium is not installed: run scripts/bootstrap", file=sys.stderr)
        return 1
    keys = sorted(Settings().api_key_set)
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(
                viewport={"width": 1400, "height": 1000}, extra_http_headers=headers
            )
            response = page.goto(f"{base}/ops", timeout=20_000)
            if response is None or response.status != 200:
                status = None if response is None else response.status
                print(f"GET {base}/ops answered {status}", file=sys.stderr)
                return 1
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    print(f"saved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
