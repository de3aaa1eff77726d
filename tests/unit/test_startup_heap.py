"""The API's gunicorn workers freeze their start-up heap once the app is loaded, before they
serve. Without it every full collection rescans the modules and the app with the GIL held
(58-211 ms here), a stall for every request and scrape in flight (README, Benchmarks)."""

from __future__ import annotations

import gc
import inspect
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import KNOWN_SETTINGS

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
