"""``make lint``'s dependency audit: pip-audit over .venv (installed from the pins in
pyproject.toml by scripts/bootstrap), with one rule about the network.

* A known vulnerability in any installed package fails (exit 1), as does pip-audit failing for
  any reason other than the network.
* When pip-audit cannot reach its vulnerability service (a connection error, or every package
  skipped as "not found", which is how the PyPI JSON API looks from behind an index mirror that
  serves only /simple), nothing was audited: this prints a loud warning naming what was not
  audited and exits 0, so CI does not fail on network unavailability alone.
  ``AUDIT_STRICT=1`` makes that a failure too (for a machine that does reach the service).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PIP_AUDIT = ROOT / ".venv" / "bin" / "pip-audit"
NETWORK_ERRORS = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "timed out",
    "ReadTimeout",
    "ConnectTimeout",
)
UNREACHABLE_SKIP = "not found on PyPI"


def main() -> int:
    if not PIP_AUDIT.exists():
        print("audit: pip-audit is missing from .venv: run scripts/bootstrap", file=sys.stderr)
        return 1
    returncode, stderr, report = run_pip_audit()
    return verdict(report, returncode, stderr, strict=os.environ.get("AUDIT_STRICT") == "1")


def run_pip_audit() -> tuple[int, str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        result = subprocess.run(
            [str(PIP_AUDIT), "--skip-editable", "--progress-spinner=off", "-f", "json",
             "-o", str(report)],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )  # fmt: skip
        doc = json.loads(report.read_text()) if report.exists() and report.stat().st_size else {}
    return result.returncode, result.stderr or result.stdout, doc


def verdict(doc: dict[str, Any], returncode: int, stderr: str, *, strict: bool) -> int:
    """The rule in the module docstring, applied to one pip-audit JSON report."""
    # The project itself (installed editable) is not a published package: not counted.
    deps = [d for d in doc.get("dependencies", []) if "editable" not in d.get("skip_reason", "")]
    vulnerable = [d for d in deps if d.get("vulns")]
    if vulnerable:
        print("audit: FAILED, known vulnerabilities in installed packages:")
        for dep in vulnerable:
            for vuln in dep["vulns"]:
                fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed version yet"
                print(f"  {dep['name']} {dep.get('version')}: {vuln['id']} (fixed in {fixes})")
        return 1
    if returncode != 0 and not deps:
        tail = stderr.strip().splitlines()[-1:] or ["(no output)"]
        if any(marker in stderr for marker in NETWORK_ERRORS):
            return unreachable(f"pip-audit could not reach its service: {tail[0]}", [], strict)
        print(f"audit: FAILED, pip-audit exited {returncode}: {tail[0]}", file=sys.stderr)
        return 1
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = len(deps) - len(skipped)
    if skipped and all(UNREACHABLE_SKIP in d["skip_reason"] for d in skipped):
        if audited == 0:
            return unreachable(
                "every package was skipped as 'not found on PyPI': the vulnerability service "
                "(the PyPI JSON API) is not reachable from here",
                [d["name"] for d in skipped],
                strict,
            )
        print(f"audit: WARNING, {len(skipped)} package(s) not audited (not found on PyPI): "
              + ", ".join(d["name"] for d in skipped))  # fmt: skip
    print(f"audit: {audited} installed package(s) audited, no known vulnerability")
    return 0


def unreachable(why: str, names: list[str], strict: bool) -> int:
    line = "=" * 78
    print(line)
    print(f"audit: WARNING, NOTHING WAS AUDITED: {why}.")
    if names:
        print(f"audit: {len(names)} package(s) not audited: {', '.join(sorted(names))}")
    if strict:
        print("audit: AUDIT_STRICT=1, so this fails.")
        print(line)
        return 1
    print("audit: not failing on network unavailability (set AUDIT_STRICT=1 to fail).")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
