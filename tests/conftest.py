"""Shared fixtures. Tests outside ``tests/unit`` need the real stack (``make test`` starts it):
when a server is missing they fail with a message saying so, they never skip."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from payments.adapters.postgres.repository import PostgresRepository
from payments.settings import Settings
from tests import support_api

SERVER_DIRS = ("integration", "e2e", "contract", "faults")


def _reachable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def s(settings: Settings) -> Settings:
    """The short name the API tests use."""
    return settings


@pytest.fixture(scope="module")
def repo(settings: Settings) -> Iterator[PostgresRepository]:
    """The repository on the primary (migrations applied), for reading what a test caused."""
    repository, pool = support_api.repository(settings)
    yield repository
    pool.close()


@pytest.fixture(scope="session")
def stack_up(settings: Settings) -> Settings:
    """Fail fast, naming the part, when the stack this test needs is not running."""
    primary = urlsplit(settings.database_url)
    kafka_host, kafka_port = settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
    parts = {
        "postgres": (primary.hostname or "127.0.0.1", primary.port or 5432),
        "kafka": (kafka_host, int(kafka_port)),
    }
    down = [
        f"{name} ({host}:{port})"
        for name, (host, port) in parts.items()
        if not _reachable(host, port)
    ]
    if down:
        pytest.fail(
            f"the local stack is not running: {', '.join(down)} unreachable. "
            "Run `make up` (or `make test`, which starts it).",
            pytrace=False,
        )
    return settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(f"/tests/{d}/" in str(item.path) for d in SERVER_DIRS):
            item.fixturenames.append("stack_up")
