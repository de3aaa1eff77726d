"""stripe-mock, Stripe's OpenAPI-driven mock, for the contract tests: it validates every
parameter against the published spec and answers 400 for an unknown or malformed one. Found as
``.stack/bin/stripe-mock`` (installed by the stack), ``STRIPE_MOCK_BIN``, or on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support_api import free_port

ROOT = Path(__file__).resolve().parents[2]


def stripe_mock_binary() -> str:
    candidates = [
        os.environ.get("STRIPE_MOCK_BIN", ""),
        str(ROOT / ".stack/bin/stripe-mock"),
        shutil.which("stripe-mock") or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise AssertionError(
        "stripe-mock not found: run `scripts/stack up`, or install it with "
        "`GOBIN=$PWD/.stack/bin go install github.com/stripe/stripe-mock@v0.197.0`"
    )


@pytest.fixture(scope="module")
def stripe_mock() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [stripe_mock_binary(), "-http-addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(
                    f"{base}/v1/balance", timeout=1, headers={"Authorization": "Bearer sk_test_123"}
                )
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("stripe-mock did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
