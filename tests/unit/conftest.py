"""Unit tests run with no servers and without this machine's configuration: here ``Settings()``
reads neither the generated ``.env`` (secrets, API keys, ports shifted by STACK_PORT_OFFSET) nor
the process environment, only what a test passes, so a running local stack cannot change a unit
test's outcome. Integration tests (tests/integration, ...) do read ``.env``: that is the stack."""

from __future__ import annotations

import pytest

from payments.settings import Settings


@pytest.fixture(autouse=True)
def _settings_from_the_test_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
