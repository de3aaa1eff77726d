"""The local stack's configuration, without starting anything: ports per layout, the generated
.env (secrets kept, layout rewritten, mode 600, readable by bash and by Settings alike), the
connector rendered from the settings, the roles and grants, the 3-node Kafka config, and the
dependency audit's rule."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from cdc.connect import load_connector
from cdc.register import change_topics, connector_env, topic_configs
from payments.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from audit_deps import verdict  # noqa: E402
from localstack import config, connect, envfile, kafka, postgres  # noqa: E402
from localstack.cli import Stack  # noqa: E402
from localstack.config import Config, StackError  # noqa: E402

CONNECTOR = ROOT / "connectors" / "payments-postgres.json"
SQL = ROOT / "scripts" / "localstack" / "sql"


def load(tmp_path: Path, **env: str) -> Config:
    return Config.load({"STACK_DIR": str(tmp_path / "stack"), **env})


def settings_of(path: Path) -> Settings:
    values = {k.lower(): v for k, v in dotenv_values(path).items() if v is not None}
    return Settings(**{k: v for k, v in values.items() if k in Settings.model_fields})


# ------------------------------------------------------------------------------------ ports


def every_port(cfg: Config) -> dict[str, int]:
    """Every port a layout listens on, by what listens: each part's, and each KRaft
    controller's."""
    ports = {name: cfg.port_of(name) for name in cfg.parts()}
    for n in range(1, cfg.layout.kafka_brokers + 1):
        ports[f"{config.instance_name('kafka', n)} controller"] = cfg.controller_port(n)
    return ports


def test_the_offset_moves_every_port_and_two_stacks_never_share_one(tmp_path: Path) -> None:
    base = every_port(load(tmp_path, WORKERS="3", KAFKA_BROKERS="3"))
    ports = every_port(load(tmp_path, WORKERS="3", KAFKA_BROKERS="3", STACK_PORT_OFFSET="300"))
    assert {name: port - 300 for name, port in ports.items()} == base
    assert base["postgres"] == 5432 and base["replica2"] == 5434 and base["api"] == 8000
    assert base["hooks"] == 8001  # the API's pool for Stripe's webhooks and the scrapes
    assert base["kafka"] == 9092 and base["kafka controller"] == 9093
    assert base["kafka3"] == 9096 and base["kafka3 controller"] == 9097
    assert [base["worker"], base["worker2"], base["worker3"]] == [6066, 6067, 6068]
    assert len(set(ports.values())) == len(ports), "two parts of one stack share a port"
    for other in (0, 100, 200, 400):
        neighbour = every_port(
            load(tmp_path, WORKERS="16", KAFKA_BROKERS="3", STACK_PORT_OFFSET=str(other))
        )
        assert not set(neighbour.values()) & set(ports.values()), f"offset {other} collides"


def test_layout_is_remembered_and_cannot_change_under_an_existing_stack(tmp_path: Path) -> None:
    cfg = load(tmp_path, STACK_PORT_OFFSET="300", KAFKA_BROKERS="3")
    cfg.record_layout()
    again = load(tmp_path)  # no variables: what the folder was made with
    assert again.layout.port_offset == 300 and again.layout.kafka_brokers == 3
    assert again.conflict is None
    moved = load(tmp_path, STACK_PORT_OFFSET="100")
    assert moved.conflict and "STACK_PORT_OFFSET=300" in moved.conflict
    assert moved.layout.port_offset == 300  # stop/status still act on the existing stack
    with pytest.raises(StackError, match="cannot change under an existing stack"):
        Stack(moved).prepare()


def test_only_one_or_three_kafka_nodes(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="1 node or 3"):
        load(tmp_path, KAFKA_BROKERS="2")


def test_names_and_aliases() -> None:
    assert config.canonical("worker1") == "worker" and config.canonical("kafka1") == "kafka"
    assert config.part_kind("worker3") == "worker" and config.instance_number("worker3") == 3
    assert config.part_kind("replica2") == "replica" and config.instance_number("kafka") == 1


def test_up_waits_until_the_replicas_stream_before_going_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(Stack, "running", lambda self, name: False)
    monkeypatch.setattr(Stack, "_start", lambda self, name, todo: calls.append(f"start {name}"))
    monkeypatch.setattr(Stack, "print_urls", lambda self, parts: None)
    monkeypatch.setattr(postgres, "migrate", lambda *args: calls.append("migrate"))
    monkeypatch.setattr(
        postgres,
        "wait_replicas_streaming",
        lambda cfg, values, names: calls.append(f"wait {'+'.join(names)}"),
    )
    monkeypatch.setattr(connect, "register_connector", lambda env: calls.append("register"))
    assert Stack(load(tmp_path)).up(["replica2", "replica1", "connect"]) == 0
    assert calls == [
        "start postgres",
        "migrate",
        "start replica1",
        "start replica2",
        "wait replica1+replica2",
        "start kafka",
        "start connect",
        "register",
    ]


# ------------------------------------------------------------------------------------ .env


def test_first_up_generates_every_secret_into_a_private_file(tmp_path: Path) -> None:
    cfg = load(tmp_path, STACK_PORT_OFFSET="300")
    result = envfile.ensure(cfg, environ={})
    assert set(result.generated) == set(envfile.SECRETS)
    mode = stat.S_IMODE(result.path.stat().st_mode)
    assert mode == 0o600, f"{result.path} is {oct(mode)}"
    s = settings_of(result.path)
    assert set(s.api_key_tenants.values()) == {"acme", "globex"}
    assert all(len(key) >= 32 for key in s.api_key_tenants)
    assert list(s.operator_logins) == ["ops"]
    assert s.webhook_secrets[0].startswith("whsec_") and len(s.webhook_secrets[0]) > 30
    assert s.stripe_secret_key.startswith("sk_test_") and len(s.stripe_secret_key) > 30
    assert len(s.checkout_token_secret) >= 32
    password = result.values["PAYMENTS_DB_PASSWORD"]
    assert s.database_url == f"postgresql://payments:{password}@127.0.0.1:5732/payments"
    assert f"payments:{password}@127.0.0.1:5733,127.0.0.1:5734/payments?" in s.database_read_url
    assert s.kafka_bootstrap_servers == "127.0.0.1:9392"
    assert s.kafka_connect_url == "http://127.0.0.1:8383"
    assert s.stripe_api_base == "http://127.0.0.1:8720"
    assert s.worker_urls == ["http://127.0.0.1:6366"]
    passwords = [result.values[k] for k in envfile.SECRETS if k.endswith("PASSWORD")]
    assert len(set(passwords)) == len(passwords), "two roles share a password"


def test_secrets_are_kept_and_the_layout_follows_the_command(tmp_path: Path) -> None:
    first = envfile.ensure(load(tmp_path), environ={})
    path = first.path
    path.write_text(path.read_text() + "# mine\nLOG_LEVEL=DEBUG\n")
    second = envfile.ensure(load(tmp_path, WORKERS="3", KAFKA_BROKERS="3"), environ={})
    assert second.generated == []
    for name in envfile.SECRETS:
        assert second.values[name] == first.values[name], f"{name} was regenerated"
    assert second.values["LOG_LEVEL"] == "DEBUG" and "# mine" in path.read_text()
    assert second.values["WORKER_URL"].split(",") == [
        "http://127.0.0.1:6066",
        "http://127.0.0.1:6067",
        "http://127.0.0.1:6068",
    ]
    assert second.values["KAFKA_BOOTSTRAP_SERVERS"] == (
        "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    )
    assert second.values["KAFKA_REPLICATION_FACTOR"] == "3"
    assert second.values["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert len(re.findall(r"^WORKER_URL=", path.read_text(), re.M)) == 1


def test_an_empty_secret_line_is_filled_and_the_environment_wins(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    cfg.env_file.parent.mkdir(parents=True)
    cfg.env_file.write_text("API_KEYS=\n")
    result = envfile.ensure(cfg, environ={"STRIPE_SECRET_KEY": "sk_test_from_env"})
    assert result.values["API_KEYS"].startswith("acme:")
    assert "STRIPE_SECRET_KEY" not in result.values, "a secret from the environment was copied"


def test_real_stripe_keeps_its_base_and_gets_no_made_up_keys(tmp_path: Path) -> None:
    result = envfile.ensure(load(tmp_path), environ={"STRIPE_API_BASE": ""})
    assert "STRIPE_SECRET_KEY" not in result.values
    assert "STRIPE_WEBHOOK_SECRET" not in result.values
    assert "STRIPE_API_BASE" not in result.values


def test_bash_and_dotenv_read_the_file_alike(tmp_path: Path) -> None:
    path = envfile.ensure(load(tmp_path), environ={}).path
    shown = subprocess.run(
        ["bash", "-c", f"set -a; . '{path}'; env -0"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout
    from_bash = dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)
    for key, value in dotenv_values(path).items():
        assert from_bash.get(key) == value, f"bash reads {key} differently"


def test_children_get_the_layout_even_over_a_stale_environment(tmp_path: Path) -> None:
    cfg = load(tmp_path, STACK_PORT_OFFSET="300")
    values = envfile.ensure(cfg, environ={}).values
    env = envfile.child_env(cfg, values, base={"KAFKA_BOOTSTRAP_SERVERS": "x:1", "LOG_LEVEL": "W"})
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9392"
    assert env["LOG_LEVEL"] == "W"
    servers = envfile.minimal_env()
    assert not set(servers) & set(envfile.SECRETS), "a server would see a secret"


def test_the_apps_call_the_stripe_the_environment_names(tmp_path: Path) -> None:
    """A proxy in front of the stand-in (the fault suite's) or real Stripe, set in the
    environment, is what the API and the worker call; without one, the stand-in of this stack."""
    cfg = load(tmp_path, STACK_PORT_OFFSET="300")
    values = envfile.ensure(cfg, environ={}).values
    assert envfile.child_env(cfg, values, base={})["STRIPE_API_BASE"] == "http://127.0.0.1:8720"
    proxy = {"STRIPE_API_BASE": "http://127.0.0.1:41234"}
    assert envfile.child_env(cfg, values, base=proxy)["STRIPE_API_BASE"] == proxy["STRIPE_API_BASE"]


# ------------------------------------------------------------------------------------ connector


def test_the_connector_is_rendered_from_the_settings() -> None:
    s = Settings(
        database_url="postgresql://payments@db.internal:6543/paydb",
        kafka_topic_partitions=12,
        kafka_replication_factor=3,
        kafka_min_insync_replicas=2,
    )
    _, cfg = load_connector(CONNECTOR, connector_env(s))
    assert (cfg["database.hostname"], cfg["database.port"], cfg["database.dbname"]) == (
        "db.internal",
        "6543",
        "paydb",
    )
    _, partitions, rf = change_topics(cfg)
    assert (partitions, rf) == (12, 3)
    assert topic_configs(cfg) == {"min.insync.replicas": "2", "cleanup.policy": "delete"}
    # Resolved by Kafka Connect itself, never by us.
    assert cfg["database.user"] == "${env:DEBEZIUM_DB_USER}"
    assert cfg["database.password"] == "${env:DEBEZIUM_DB_PASSWORD}"


def test_the_connector_keeps_personal_data_and_the_client_secret_out_of_the_topic() -> None:
    cfg = json.loads(CONNECTOR.read_text())["config"]
    excluded = set(cfg["column.exclude.list"].split(","))
    for column in ("client_secret", "customer_email", "description", "metadata"):
        assert f"public.payments.{column}" in excluded


def test_debezium_is_granted_exactly_the_tables_it_streams() -> None:
    cfg = json.loads(CONNECTOR.read_text())["config"]
    streamed = set(cfg["table.include.list"].split(","))
    grants = (SQL / "grants.sql").read_text()
    select = re.search(r"GRANT SELECT ON ([^;]+) TO debezium;", grants)
    assert select is not None
    assert {t.strip() for t in select.group(1).split(",")} == streamed
    assert "GRANT UPDATE ON public.dbz_heartbeat TO debezium;" in grants
    assert "dbz_heartbeat" in cfg["heartbeat.action.query"]


def test_roles_are_least_privilege_and_passwords_are_variables() -> None:
    roles = (SQL / "roles.sql").read_text()
    app = re.search(r"ALTER ROLE payments WITH ([^;]+);", roles)
    assert app is not None and "NOSUPERUSER" in app.group(1) and "NOREPLICATION" in app.group(1)
    assert "PASSWORD :'payments_password'" in app.group(1)
    dbz = re.search(r"ALTER ROLE debezium WITH ([^;]+);", roles)
    assert dbz is not None and " REPLICATION" in dbz.group(1) and "NOSUPERUSER" in dbz.group(1)
    assert "replicator" in postgres.PG_HBA and "host    replication  replicator" in postgres.PG_HBA
    assert not re.search(r"PASSWORD\s+'", roles), "a literal password in roles.sql"
    rendered = postgres.render_psql(
        roles,
        {
            "payments_password": "placeholder'b",
            "debezium_password": "d",
            "replicator_password": "r",
        },
    )
    assert "PASSWORD 'placeholder''b'" in rendered
    with pytest.raises(StackError, match="unset psql variable"):
        postgres.render_psql(roles, {"payments_password": "x"})


# ------------------------------------------------------------------------------------ kafka


def test_three_nodes_form_one_quorum_with_replication_from_the_settings(tmp_path: Path) -> None:
    cfg = load(tmp_path, KAFKA_BROKERS="3", STACK_PORT_OFFSET="300")
    s = Settings(kafka_replication_factor=3, kafka_min_insync_replicas=2)
    props = dict(
        line.split("=", 1) for line in kafka.server_properties(cfg, 2, s).splitlines() if line
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9393,2@127.0.0.1:9395,3@127.0.0.1:9397"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9394,CONTROLLER://127.0.0.1:9395"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert props[key] == "3", key
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["num.partitions"] == str(s.kafka_topic_partitions)
    with pytest.raises(StackError, match="do not fit"):
        kafka.server_properties(load(tmp_path), 1, s)


# ------------------------------------------------------------------------------------ audit


def test_the_audit_fails_on_a_vulnerability_and_not_on_an_unreachable_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    vulnerable = {
        "dependencies": [
            {"name": "flask", "version": "1.0", "vulns": [{"id": "X-1", "fix_versions": ["2"]}]}
        ]
    }
    assert verdict(vulnerable, 1, "", strict=False) == 1
    skipped = {
        "dependencies": [
            {"name": "flask", "skip_reason": "Dependency not found on PyPI and could not be ..."},
            {"name": "payments-pipeline", "skip_reason": "distribution marked as editable"},
        ]
    }
    assert verdict(skipped, 0, "", strict=False) == 0
    assert "NOTHING WAS AUDITED" in capsys.readouterr().out
    assert verdict(skipped, 0, "", strict=True) == 1
    offline = "requests.exceptions.ConnectionError: Max retries exceeded"
    assert verdict({}, 1, offline, strict=False) == 0
    assert verdict({}, 1, "ValueError: bad requirement", strict=False) == 1
    clean = {"dependencies": [{"name": "flask", "version": "3.1.3", "vulns": []}]}
    assert verdict(clean, 0, "", strict=True) == 0
