"""docker-compose.yml cannot run here (no container engine): keep it consistent with the native
stack — same parts, same ports, setting names that exist, the same connector file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from payments.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def _env_names(service: dict[str, Any]) -> set[str]:
    env = service.get("environment") or {}
    return set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}


def test_every_native_part_and_kafka_ui_is_a_service() -> None:
    services = _compose()["services"]
    for name in [
        "postgres",
        "replica1",
        "replica2",
        "kafka",
        "connect",
        "register-connectors",
        "localstripe",
        "api",
        "worker",
        "kafka-ui",
    ]:
        assert name in services, f"docker-compose.yml lacks the {name} service"
    assert "kafbat" in services["kafka-ui"]["image"]


def test_published_ports_match_the_native_stack() -> None:
    services = _compose()["services"]
    expected = {
        "postgres": 5432,
        "replica1": 5433,
        "replica2": 5434,
        "kafka": 9092,
        "connect": 8083,
        "localstripe": 8420,
        "api": 8000,
        "worker": 6066,
        "kafka-ui": 8080,
    }
    for name, port in expected.items():
        published = {int(str(p).split(":")[0]) for p in services[name].get("ports", [])}
        assert port in published, f"{name} should publish {port}, publishes {published}"


def test_app_environment_names_are_real_settings() -> None:
    known = {name.upper() for name in Settings.model_fields} | {"PG_HOST", "PG_PORT"}
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert example <= known, f".env.example names unknown settings: {example - known}"
    services = _compose()["services"]
    for name in ["api", "worker", "register-connectors", "migrate"]:
        unknown = _env_names(services[name]) - known
        assert not unknown, f"{name} sets unknown settings {unknown}"


def test_the_same_connector_file_is_registered() -> None:
    command = _compose()["services"]["register-connectors"]["command"]
    assert "connectors/payments-postgres.json" in command
    assert (ROOT / "connectors/payments-postgres.json").exists()
