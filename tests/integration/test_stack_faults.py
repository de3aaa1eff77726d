"""Issue 3: bad situations give a clear message naming the part, not a hang."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdc.connect import ConnectClient
from payments.settings import Settings
from tests.stack_support import ROOT, stack

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def scratch_env(tmp_path: Path) -> dict[str, str]:
    """A separate stack folder and ports, so the running stack is not touched."""
    return dict(
        os.environ,
        STACK_DIR=str(tmp_path / "stack"),
        KAFKA_PORT=str(_free_port()),
        KAFKA_CONTROLLER_PORT=str(_free_port()),
        LOCALSTRIPE_PORT=str(_free_port()),
        STACK_START_TIMEOUT="20",
    )


def test_a_port_already_taken_is_named(scratch_env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = dict(scratch_env, LOCALSTRIPE_PORT=str(port))
        result = stack("start", "localstripe", env=env, check=False, timeout=60)
    assert result.returncode != 0
    assert f"port {port} for localstripe is already in use" in result.stderr


def test_missing_java_is_named(scratch_env: dict[str, str]) -> None:
    env = dict(scratch_env, JAVA="java-that-is-not-installed")
    result = stack("start", "kafka", env=env, check=False, timeout=60)
    assert result.returncode != 0
    assert "java was not found" in result.stderr
    assert "kafka" in result.stderr


@pytest.fixture
def bad_connector(settings: Settings, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    suffix = uuid.uuid4().hex[:8]
    name, slot = f"payments-bad-{suffix}", f"bad_{suffix}"
    text = (ROOT / "connectors/payments-postgres.json").read_text()
    text = (
        text.replace('"payments-postgres"', f'"{name}"')
        .replace('"debezium_payments"', f'"{slot}"')
        .replace('"payments_pub"', '"no_such_publication"')
        .replace("${CDC_TOPIC_PREFIX}", f"bad{suffix}")
    )
    path = tmp_path / "bad.json"
    path.write_text(text)
    yield path, name, slot
    ConnectClient(settings.kafka_connect_url).delete(name)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND NOT active",
            (slot,),
        )


def test_a_failing_connector_shows_its_task_trace(bad_connector: tuple[Path, str, str]) -> None:
    import subprocess

    path, name, _slot = bad_connector
    result = subprocess.run(
        [str(ROOT / "scripts/register-connectors"), str(path), "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode != 0, result.stdout
    assert f"connector {name} FAILED" in result.stderr
    # Debezium's own reason, from the task trace.
    assert "Publication autocreation is disabled" in result.stderr, result.stderr[-2000:]
