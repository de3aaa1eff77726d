"""gunicorn.conf.py sizes the pool API_POOL names (api/pools.py): intake, the default, with many
threads; hooks with few; API_NICE lowers either's CPU priority. Anything else is refused."""

from __future__ import annotations

import os
import runpy
from pathlib import Path
from typing import Any

import pytest

from api.pools import HOOKS, INTAKE, command

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


def conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> dict[str, Any]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for name in ("API_POOL", "API_THREADS", "API_NICE", "API_RESERVED_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name in ("API_STRIPE_SLOTS", "DB_POOL_MAX"):  # the conf sets them: undone afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


@pytest.mark.parametrize(
    ("pool", "threads", "nice", "stripe_slots"),
    [
        ({}, 64, 0, "56"),
        ({"API_POOL": "intake"}, 64, 0, "56"),
        ({"API_POOL": "hooks"}, 16, 0, "14"),
        ({"API_POOL": "intake", "API_NICE": "4"}, 64, 4, "56"),
    ],
)
def test_each_pool_gets_its_threads_and_cpu_priority(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pool: dict[str, str],
    threads: int,
    nice: int,
    stripe_slots: str,
) -> None:
    settings = conf(monkeypatch, tmp_path, **pool)
    assert (settings["threads"], settings["NICE"]) == (threads, nice)
    assert settings["worker_class"] == "gthread"
    assert os.environ["DB_POOL_MAX"] == str(threads)
    assert os.environ["API_STRIPE_SLOTS"] == stripe_slots


def test_an_unknown_pool_is_refused_naming_the_pools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="API_POOL must be one of intake, hooks, got 'webhooks'"):
        conf(monkeypatch, tmp_path, API_POOL="webhooks")


def test_the_command_line_runs_gunicorn_with_the_pools_worker_count() -> None:
    argv = command(HOOKS, "127.0.0.1:8001")
    assert argv[0].endswith("/gunicorn")
    assert argv[1:] == [
        "--bind",
        "127.0.0.1:8001",
        "--workers",
        "1",
        "--timeout",
        "30",
        "api:create_app()",
    ]
    assert command(INTAKE, "127.0.0.1:8000", workers=2)[4] == "2"
    with pytest.raises(ValueError, match="intake pool's worker count"):
        command(INTAKE, "127.0.0.1:8000")
