"""The import contracts that say "stdlib only" list every dependency: a package added to
pyproject.toml without its import name there would be a hole in them."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
STDLIB_ONLY = (
    "the domain and the ports are stdlib only",
    "the use cases import only the domain, the ports and payments.logs",
)


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def import_names(requirement: str) -> set[str]:
    """The top-level modules an installed requirement provides (``kafka-python`` -> kafka)."""
    distribution = _normalized(re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0])
    return {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if module.isidentifier()
        and not module.startswith("_")
        and distribution in {_normalized(d) for d in distributions}
    }


def test_every_runtime_dependency_is_forbidden_where_only_the_stdlib_is_allowed() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    contracts = {c["name"]: c for c in project["tool"]["importlinter"]["contracts"]}
    for requirement in project["project"]["dependencies"]:
        names = import_names(requirement)
        assert names, f"{requirement} is not installed: run scripts/bootstrap"
        for contract in STDLIB_ONLY:
            missing = names - set(contracts[contract]["forbidden_modules"])
            assert not missing, f"{contract!r} does not forbid {sorted(missing)} ({requirement})"
