"""Kafka Connect (distributed mode) with the Debezium PostgreSQL plugin, and the connector.

The connector file names its database login as ``${env:DEBEZIUM_DB_USER}`` and
``${env:DEBEZIUM_DB_PASSWORD}``: Connect resolves them from its own environment through the
``EnvVarConfigProvider`` configured here, so the password is in no file, no REST answer and no
Kafka topic (Connect stores the placeholder). Only those two variables are readable that way,
and Connect's environment holds no other secret of the stack.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path

from localstack.config import ROOT, Config, StackError, say
from localstack.envfile import minimal_env
from localstack.kafka import java_argv, write
from localstack.processes import check_port_free, http_json, run_command, spawn, wait_until
from payments.settings import Settings

# Connect's own topics (compacted): name -> partitions.
INTERNAL_TOPICS = {"connect-configs": 1, "connect-offsets": 5, "connect-status": 3}
SECRET_VARS = ("DEBEZIUM_DB_USER", "DEBEZIUM_DB_PASSWORD")
ENV_PROVIDER = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"


def properties(cfg: Config, settings: Settings) -> str:
    rf = settings.kafka_replication_factor
    allow = "^(" + "|".join(SECRET_VARS) + ")$"
    return f"""bootstrap.servers={settings.kafka_bootstrap_servers}
group.id=payments-connect
listeners=http://127.0.0.1:{cfg.connect_port}
rest.advertised.host.name=127.0.0.1
rest.advertised.port={cfg.connect_port}
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
config.storage.topic=connect-configs
offset.storage.topic=connect-offsets
status.storage.topic=connect-status
config.storage.replication.factor={rf}
offset.storage.replication.factor={rf}
status.storage.replication.factor={rf}
offset.storage.partitions={INTERNAL_TOPICS["connect-offsets"]}
status.storage.partitions={INTERNAL_TOPICS["connect-status"]}
offset.flush.interval.ms=1000
# A worker that fell out of its group (the broker gone for a minute) gets its connector and task
# back within 10 s, not after the default 5 minutes kept for a worker expected to return.
scheduled.rebalance.max.delay.ms=10000
# Connect's own producers wait for the broker for as long as it is down (source tasks' producers
# already do: Connect's defaults for them). The status producer's default, 120 s, let a broker
# down 150 s end with the connector RUNNING but reported UNASSIGNED (a stale write retried late).
delivery.timeout.ms=2147483647
topic.creation.enable=true
plugin.path={cfg.jvm / "plugins"}
config.providers=env
config.providers.env.class={ENV_PROVIDER}
config.providers.env.param.allowlist.pattern={allow}
"""


def ensure_internal_topics(settings: Settings) -> list[str]:
    """Create Connect's topics before it does, with min.insync.replicas (Connect sets only their
    replication factor). Existing ones are left alone."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    configs = {
        "cleanup.policy": "compact",
        "min.insync.replicas": str(settings.kafka_min_insync_replicas),
    }
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=15_000
    )
    try:
        existing = set(admin.list_topics())
        missing = [t for t in INTERNAL_TOPICS if t not in existing]
        for topic in missing:
            new = NewTopic(
                topic,
                INTERNAL_TOPICS[topic],
                settings.kafka_replication_factor,
                topic_configs=configs,
            )
            with contextlib.suppress(TopicAlreadyExistsError):  # Connect was quicker
                admin.create_topics([new])
        return missing
    finally:
        admin.close()


def properties_path(cfg: Config) -> Path:
    return cfg.stack_dir / "connect" / "connect-distributed.properties"


def has_config_providers(cfg: Config) -> bool:
    path = properties_path(cfg)
    return path.exists() and "config.providers=env" in path.read_text()


def start_connect(cfg: Config, settings: Settings, values: Mapping[str, str]) -> None:
    check_port_free(cfg.connect_port, "connect")
    ensure_internal_topics(settings)
    props = write(properties_path(cfg), properties(cfg, settings))
    missing = [name for name in SECRET_VARS if not values.get(name)]
    if missing:
        raise StackError(f"connect: {', '.join(missing)} missing from {cfg.env_file}")
    env = minimal_env(**{name: values[name] for name in SECRET_VARS})
    argv = java_argv(
        cfg, cfg.connect_heap, "org.apache.kafka.connect.cli.ConnectDistributed", str(props)
    )
    spawn(cfg, "connect", argv, env)
    wait_until(
        cfg,
        "connect",
        lambda: (
            "PostgresConnector" in json.dumps(http_json(f"{cfg.connect_url}/connector-plugins"))
        ),
        f"REST API on {cfg.connect_port} listing the Debezium PostgresConnector plugin from "
        f"{cfg.jvm / 'plugins'}",
        cfg.start_timeout + 60,
    )


def register_connector(env: Mapping[str, str]) -> None:
    """``register-connectors`` (what a user runs): renders connectors/*.json from the settings,
    PUTs it, waits until RUNNING, creates the change topics."""
    result = run_command([str(ROOT / ".venv/bin/register-connectors")], env)
    for line in (result.stdout + result.stderr).strip().splitlines():
        say(f"connect: {line}")
    if result.returncode != 0:
        raise StackError("connect: registering the Debezium connector failed (see above)")
