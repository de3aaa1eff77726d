"""Both long-running processes freeze their start-up heap before they serve: the API's gunicorn
workers once the app is loaded, the worker before its event loop starts. Without it every full
collection rescans the modules and the app with the GIL held (58-211 ms here), a stall for every
request, scrape and change in flight (README, Benchmarks)."""

from __future__ import annotations

import gc
import inspect
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import KNOWN_SETTINGS

import streams.cli

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.fixture
def conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """gunicorn.conf.py as gunicorn runs it, its environment changes undone afterwards."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("DB_POOL_MAX", "4")
    return runpy.run_path(str(CONF))


def test_gunicorn_knows_every_hook_of_the_config(conf: dict[str, Any]) -> None:
    """A misspelt hook is never called, silently."""
    hooks = {
        name
        for name, value in conf.items()
        if inspect.isfunction(value) and value.__module__ == "<run_path>"
    }
    assert "post_worker_init" in hooks
    assert hooks <= {setting.name for setting in KNOWN_SETTINGS}


def test_an_api_worker_freezes_its_heap_once_the_app_is_loaded(
    unfrozen: None, conf: dict[str, Any]
) -> None:
    assert gc.get_freeze_count() == 0
    conf["post_worker_init"](None)
    assert gc.get_freeze_count() > 0


def test_the_worker_freezes_its_heap_before_its_loop_starts(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_at_start: list[int] = []

    class Worker:
        def __init__(self, settings: Any) -> None:
            self.app = self

        def main(self) -> None:
            frozen_at_start.append(gc.get_freeze_count())

    monkeypatch.setattr(streams.cli, "PaymentsWorker", Worker)
    monkeypatch.setattr(streams.cli, "add_commands", lambda app, settings: None)
    monkeypatch.setattr(sys, "argv", ["payments-worker", "status"])
    streams.cli.main()
    assert len(frozen_at_start) == 1 and frozen_at_start[0] > 0
