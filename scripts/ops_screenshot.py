"""Save a screenshot of the running API's /ops page to docs/ops.png (``make ops-screenshot``).

Uses Debian's ``chromium`` through Playwright (never a downloaded browser). The API is
``$API_URL`` (default http://127.0.0.1:8000); with ``API_KEYS`` set, the first key is sent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from payments.settings import Settings  # noqa: E402
from tests.browser_support import chromium_page  # noqa: E402


def main() -> int:
    base = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
    out = ROOT / "docs" / "ops.png"
    out.parent.mkdir(exist_ok=True)
    keys = sorted(Settings().api_key_tenants)
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    with chromium_page(1400, 1000, headers) as page:
        response = page.goto(f"{base}/ops", timeout=20_000)
        if response is None or response.status != 200:
            status = None if response is None else response.status
            print(f"GET {base}/ops answered {status}", file=sys.stderr)
            return 1
        page.screenshot(path=str(out), full_page=True)
    print(f"saved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
