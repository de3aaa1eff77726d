"""docker-compose.yml cannot run here (no container engine): keep it consistent with the native
stack — same parts, same ports, setting names that exist, the same connector file, the same
versions (scripts/jvm/pom.xml), the same roles and config providers, and no password in it."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from payments.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from localstack import connect, envfile  # noqa: E402

SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEYS|CREDENTIALS")
INTERPOLATED = re.compile(r"^\$\{[A-Z_]+:\?[^}]+\}$")


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


def _pom_versions() -> dict[str, str]:
    """The <properties> of scripts/jvm/pom.xml (our own file, read with a regex)."""
    text = (ROOT / "scripts/jvm/pom.xml").read_text()
    return dict(re.findall(r"<([a-z0-9.]+\.version)>([^<]+)</", text))


def _images() -> dict[str, str]:
    return {name: svc["image"] for name, svc in _compose()["services"].items() if "image" in svc}


def test_every_image_is_pinned_to_an_exact_version() -> None:
    dockerfile_from = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert dockerfile_from is not None
    for where, image in [*_images().items(), ("Dockerfile", dockerfile_from.group(1))]:
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{where}: {image} has no tag"
        assert re.match(r"v?\d+\.\d+(\.\d+)?", tag), f"{where}: {image} is not pinned exactly"
        assert tag not in {"latest", "main"}, f"{where}: {image}"


def test_compose_runs_the_versions_of_the_native_stack() -> None:
    pom, images = _pom_versions(), _images()
    assert images["kafka"] == f"apache/kafka:{pom['kafka.version']}"
    assert images["connect"] == f"quay.io/debezium/connect:{pom['debezium.version']}"
    postgres = {images[name] for name in ("postgres", "replica1", "replica2", "db-grants")}
    assert len(postgres) == 1, f"PostgreSQL images differ: {postgres}"
    # The native stack runs Debian's PostgreSQL 15 (scripts/bootstrap).
    assert postgres.pop().startswith("postgres:15.")


def test_compose_uses_the_settings_partitions_and_replication() -> None:
    services = _compose()["services"]
    defaults = Settings.model_fields
    app_env = services["api"]["environment"]
    partitions = str(defaults["kafka_topic_partitions"].default)
    assert str(app_env["KAFKA_TOPIC_PARTITIONS"]) == partitions
    assert str(services["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]) == partitions
    rf = str(defaults["kafka_replication_factor"].default)
    isr = str(defaults["kafka_min_insync_replicas"].default)
    assert str(app_env["KAFKA_REPLICATION_FACTOR"]) == rf
    assert str(app_env["KAFKA_MIN_INSYNC_REPLICAS"]) == isr
    kafka_env = services["kafka"]["environment"]
    for key in (
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
    ):
        assert str(kafka_env[key]) == rf, key
    assert str(kafka_env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == isr
    connect_env = services["connect"]["environment"]
    for topic in ("CONFIG", "OFFSET", "STATUS"):
        assert str(connect_env[f"CONNECT_{topic}_STORAGE_REPLICATION_FACTOR"]) == rf


def test_no_password_is_written_in_compose() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if SECRET_NAME.search(key) and key != "STRIPE_PUBLISHABLE_KEY":
                assert INTERPOLATED.match(str(value)), f"{name}.{key} is not read from .env"
            if "postgresql://" in str(value):
                userinfo = str(value).split("://", 1)[1].split("@", 1)[0]
                assert userinfo.startswith("payments:${"), f"{name}.{key} has a literal password"


def test_compose_makes_the_same_roles_and_resolves_the_connector_login_in_connect() -> None:
    services = _compose()["services"]
    init = (ROOT / "scripts/compose/postgres-init.sh").read_text()
    assert "/stack-sql/roles.sql" in init and "host replication replicator" in init
    mounts = " ".join(services["postgres"]["volumes"])
    assert "./scripts/compose/postgres-init.sh:/docker-entrypoint-initdb.d/" in mounts
    assert "./scripts/localstack/sql:/stack-sql" in mounts
    assert "/stack-sql/grants.sql" in services["db-grants"]["command"]
    for replica in ("replica1", "replica2"):
        assert "-U replicator" in services[replica]["command"]
    connect_env = services["connect"]["environment"]
    assert connect_env["CONNECT_CONFIG_PROVIDERS"] == "env"
    assert connect_env["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"] == connect.ENV_PROVIDER
    assert connect_env["DEBEZIUM_DB_USER"] == envfile.DEBEZIUM_ROLE
    assert "DEBEZIUM_DB_PASSWORD" in connect_env


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
    known = {name.upper() for name in Settings.model_fields} | set(envfile.STACK_ONLY_KEYS)
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
