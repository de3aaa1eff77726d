"""The OpenAPI document against the running API (gunicorn, started by `make up` / `make test`):
Schemathesis with every check it has must find nothing.

Every status the server answers is in the document, and every request the document allows is
one the server accepts (``positive_data_acceptance``; its one allowance, a 402 on confirming
with a card Stripe refuses, is in ``schemathesis.toml``). Every phase must run: the document's
examples, the coverage of its constraints, fuzzing, and the stateful phase following the
document's links (create, then read, confirm, cancel, follow the timeline). A second run knows
two tenants' keys and probes whether one tenant can read what the other created
(``object_level_authorization``). A finding fails the test with Schemathesis's own report (each
with a ``curl`` line to reproduce it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from payments.settings import Settings
from tests import support_api

pytestmark = pytest.mark.integration
API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
# Examples per operation and phase: the two runs take about a minute on the stack, and every
# check still meets each operation many times. SCHEMATHESIS_MAX_EXAMPLES for a longer hunt.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
# The allowances (a 402 on confirming with a card Stripe refuses; gunicorn's 414), explained
# in the file.
CONFIG = Path(__file__).resolve().parents[2] / "schemathesis.toml"


def schemathesis_cli() -> str:
    beside = Path(sys.executable).with_name("schemathesis")
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    assert found, "schemathesis is not installed: it is a dev dependency (make up installs it)"
    return found


def run_schemathesis(config: Path, options: list[str], workdir: Path, examples: int) -> None:
    """``schemathesis run <API>/openapi.json --checks all …``; fail with its report on any
    finding, or when it did not test every operation of the document."""
    spec = requests.get(f"{API}/openapi.json", timeout=10)
    assert spec.status_code == 200, f"no API at {API}: run `make up` (API_URL names another)"
    command = [
        schemathesis_cli(),
        "--config-file",
        str(config),
        "run",
        f"{API}/openapi.json",
        "--checks",
        "all",
        *options,
        "--max-examples",
        str(examples),
        "--generation-database",
        "none",
        "--request-timeout",
        "20",
        "--no-color",
    ]
    if seed := os.environ.get("SCHEMATHESIS_SEED"):
        command += ["--seed", seed]
    # Run from a scratch folder: Schemathesis keeps its own state in the working directory.
    done = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=600, check=False
    )
    report = done.stdout + done.stderr
    summary = report[report.find("SUMMARY") :] if "SUMMARY" in report else report[-3000:]
    print(summary)
    assert done.returncode == 0, f"Schemathesis found problems (exit {done.returncode}):\n{report}"
    tested = re.search(r"Tested:\s+(\d+)", report)
    operations = len([op for path in spec.json()["paths"].values() for op in path])
    assert tested is not None and int(tested.group(1)) == operations, summary
    # Every phase ran: the document's examples, the coverage of its constraints, fuzzing, and
    # the stateful phase, which followed at least one of the document's links.
    phases = re.search(r"Test Phases:\n(.*?)\n\n", summary, re.S)
    assert phases is not None, summary
    assert phases.group(1).split() == [
        *("✅", "Examples", "✅", "Coverage", "✅", "Fuzzing", "✅", "Stateful")
    ], summary
    links = re.search(r"API Links:\s+(\d+) covered", report)
    assert links is not None and int(links.group(1)) >= 1, report
    # Only the webhook (signed by Stripe, which Schemathesis cannot do) answers nothing but
    # 401: any other operation doing so would mean the key was not sent, and nothing was tested.
    assert refused_operations(report) == ["POST /webhooks/stripe"], report


def refused_operations(report: str) -> list[str]:
    """The operations Schemathesis's "Authentication failed" warning lists."""
    start = report.find("Authentication failed:")
    if start < 0:
        return []
    block = report[start : report.find("💡", start)]
    return re.findall(r"^\s+- (.+?)\s*$", block, re.M)


@pytest.fixture
def with_a_key(s: Settings, tmp_path: Path) -> Path:
    """schemathesis.toml plus ``Authorization: Bearer <key>`` on every request (what ``-H``
    does; in a file, the key stays out of the process list and of any failure report)."""
    config = tmp_path / "schemathesis.toml"
    header = json.dumps(f"Bearer {support_api.api_key(s)}")
    config.write_text(f"headers = {{ Authorization = {header} }}\n\n" + CONFIG.read_text())
    return config


@pytest.fixture
def with_two_tenants(s: Settings, tmp_path: Path) -> Path:
    """schemathesis.toml plus two tenants' keys as peers (a WFC identities file)."""
    tenants = support_api.tenants(s)
    assert len(tenants) >= 2, f"API_KEYS names {tenants}; this test needs two tenants"
    identities = tmp_path / "tenants.json"
    identities.write_text(
        json.dumps(
            {
                "auth": [
                    {
                        "name": tenant,
                        "fixedHeaders": [
                            {
                                "name": "Authorization",
                                "value": f"Bearer {support_api.api_key(s, tenant)}",
                            }
                        ],
                    }
                    for tenant in tenants[:2]
                ]
            }
        )
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f"[auth.wfc]\npath = {json.dumps(str(identities))}\n"
        f"peers = {json.dumps(tenants[:2])}\n\n" + CONFIG.read_text()
    )
    return config


def test_schemathesis_finds_nothing_on_the_live_api(with_a_key: Path, tmp_path: Path) -> None:
    run_schemathesis(with_a_key, [], tmp_path, MAX_EXAMPLES)


def test_no_tenant_reads_another_tenants_payments(with_two_tenants: Path, tmp_path: Path) -> None:
    """Schemathesis with two tenants' keys as peers: what one creates, the other must not get."""
    run_schemathesis(with_two_tenants, [], tmp_path, max(10, MAX_EXAMPLES // 2))
