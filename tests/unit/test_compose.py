"""docker-compose.yml cannot run here (no container engine): keep it consistent with the native
stack — same parts, same ports (on loopback only), setting names that exist, the same connector
file, the same versions (scripts/jvm/pom.xml, the PostgreSQL server and the .venv's Python), the
same roles and config providers, a worker the API can reach, and no password in it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from payments.settings import Settings
from streams.app import PaymentsWorker

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from localstack import connect, envfile, postgres  # noqa: E402

SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEYS|CREDENTIALS")
INTERPOLATED = re.compile(r"^\$\{[A-Z_]+:\?[^}]+\}$")
# Every address of a container, so that other containers reach it over the compose network.
CONTAINER_NETWORK = "0.0.0.0"  # noqa: S104 - inside a container; published on loopback only


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


def _native_postgres_version() -> str:
    """The version of the PostgreSQL server the native stack runs (``postgres --version`` of
    the binary scripts/localstack starts), e.g. ``15.18``."""
    server = postgres.pg_bin("postgres")
    answer = subprocess.run([server, "--version"], capture_output=True, text=True, check=True)
    found = re.search(r"\(PostgreSQL\) (\d+\.\d+)", answer.stdout)
    assert found, f"{server} --version said {answer.stdout!r}"
    return found.group(1)


def _venv_python_version() -> str:
    """The Python of the native stack's .venv, e.g. ``3.11.7``."""
    python = ROOT / ".venv/bin/python"
    answer = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return answer.stdout.strip()


def test_compose_runs_the_versions_of_the_native_stack() -> None:
    pom, images = _pom_versions(), _images()
    assert images["kafka"] == f"apache/kafka:{pom['kafka.version']}"
    assert images["connect"] == f"quay.io/debezium/connect:{pom['debezium.version']}"
    postgres_images = {images[name] for name in ("postgres", "replica1", "replica2", "db-grants")}
    assert postgres_images == {f"postgres:{_native_postgres_version()}"}
    dockerfile_from = re.search(r"^FROM python:(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert dockerfile_from is not None, "the Dockerfile does not start FROM python:<version>"
    python_tag = dockerfile_from.group(1)
    assert python_tag.split("-")[0] == _venv_python_version(), python_tag


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


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each ``ports`` entry."""
    found = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) == 3, f"{entry} does not name the host address it is published on"
        found.append((parts[0], int(parts[1]), int(parts[2])))
    return found


def test_published_ports_match_the_native_stack_on_loopback_only() -> None:
    """Nothing of the stack authenticates a connection from another machine (Kafka, Connect,
    kafka-ui, which edits connectors): compose publishes every port on 127.0.0.1 only."""
    services = _compose()["services"]
    expected = {
        "postgres": 5432,
        "replica1": 5433,
        "replica2": 5434,
        "kafka": 9092,
        "connect": 8083,
        "localstripe": 8420,
        "api": 8000,
        "hooks": 8001,
        "worker": 6066,
        "kafka-ui": 8080,
    }
    for name, port in expected.items():
        published = _published(services[name])
        assert port in {host_port for _, host_port, _ in published}, (name, published)
    for name, service in services.items():
        for address, _, _ in _published(service):
            assert address == "127.0.0.1", f"{name} is published on {address}"


def test_the_api_reaches_the_worker_by_the_url_its_group_knows() -> None:
    """/ops asks each worker at the URL its consumer-group record carries (its web host and
    port), else at WORKER_URL: in compose, the worker's service name, on an address of the
    container's network (its loopback is unreachable from the API's container)."""
    services = _compose()["services"]
    command, env = services["worker"]["command"], services["worker"]["environment"]
    port = int(command[command.index("--web-port") + 1])
    assert env["WORKER_WEB_BIND"] == CONTAINER_NETWORK
    assert env["WORKER_WEB_HOST"] == "worker"  # the service's name in the compose network
    assert services["api"]["environment"]["WORKER_URL"] == f"http://worker:{port}"
    settings = Settings(
        _env_file=None,
        worker_web_bind=env["WORKER_WEB_BIND"],
        worker_web_host=env["WORKER_WEB_HOST"],
        worker_web_port=port,
    )
    app = PaymentsWorker(settings, store="memory://").app
    assert (app.conf.web_bind, app.conf.web_port) == (CONTAINER_NETWORK, port)
    assert str(app.conf.canonical_url) == f"http://worker:{port}"
    local = PaymentsWorker(Settings(_env_file=None), store="memory://").app
    assert (local.conf.web_bind, str(local.conf.canonical_url)) == (
        "127.0.0.1",
        "http://127.0.0.1:6066",
    )


def test_app_environment_names_are_real_settings() -> None:
    # Settings' names, the stack's own, and what gunicorn.conf.py reads (the API's pool).
    gunicorn_conf = (ROOT / "gunicorn.conf.py").read_text()
    read_by_gunicorn = set(re.findall(r'os\.environ\.get\("([A-Z_]+)"', gunicorn_conf))
    assert "API_POOL" in read_by_gunicorn
    known = (
        {name.upper() for name in Settings.model_fields}
        | set(envfile.STACK_ONLY_KEYS)
        | read_by_gunicorn
    )
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert example <= known, f".env.example names unknown settings: {example - known}"
    services = _compose()["services"]
    for name in ["api", "hooks", "worker", "register-connectors", "migrate"]:
        unknown = _env_names(services[name]) - known
        assert not unknown, f"{name} sets unknown settings {unknown}"


def test_the_same_connector_file_is_registered() -> None:
    command = _compose()["services"]["register-connectors"]["command"]
    assert "connectors/payments-postgres.json" in command
    assert (ROOT / "connectors/payments-postgres.json").exists()
