"""``register-connectors``: PUT every connector file in ``connectors/`` and wait until RUNNING."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from cdc.connect import ConnectClient, ConnectError, load_connector
from payments.settings import Settings


def connector_env(settings: Settings) -> dict[str, str]:
    """The placeholders a connector file may use, from the process settings: the primary's
    address from ``DATABASE_URL``, the topics' partitions and replication from the Kafka
    settings. ``${env:NAME}`` references are Kafka Connect's own (resolved inside Connect by its
    EnvVarConfigProvider, so the database login never passes through here) and stay as they are.
    """
    primary = urlsplit(settings.database_url)
    env = dict(os.environ)
    env["PG_HOST"] = primary.hostname or "127.0.0.1"
    env["PG_PORT"] = str(primary.port or 5432)
    env["PG_DBNAME"] = primary.path.lstrip("/")
    env["CDC_TOPIC_PREFIX"] = settings.cdc_topic_prefix
    env["KAFKA_TOPIC_PARTITIONS"] = str(settings.kafka_topic_partitions)
    env["KAFKA_REPLICATION_FACTOR"] = str(settings.kafka_replication_factor)
    env["KAFKA_MIN_INSYNC_REPLICAS"] = str(settings.kafka_min_insync_replicas)
    return env


def change_topics(config: dict[str, str]) -> tuple[list[str], int, int]:
    """The topics the connector writes for its tables, with its topic-creation defaults."""
    prefix = config["topic.prefix"]
    tables = [t.strip() for t in config.get("table.include.list", "").split(",") if t.strip()]
    partitions = int(config.get("topic.creation.default.partitions", "1"))
    replication = int(config.get("topic.creation.default.replication.factor", "1"))
    return [f"{prefix}.{table}" for table in tables], partitions, replication


def topic_configs(config: dict[str, str]) -> dict[str, str]:
    """The connector's ``topic.creation.default.*`` topic settings (min.insync.replicas,
    cleanup.policy, ...), for creating its topics the way Debezium would."""
    prefix = "topic.creation.default."
    skip = {"partitions", "replication.factor"}
    return {
        key[len(prefix) :]: value
        for key, value in config.items()
        if key.startswith(prefix) and key[len(prefix) :] not in skip
    }


def ensure_topics(
    bootstrap_servers: str,
    topics: list[str],
    partitions: int,
    rf: int,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create the change topics that do not exist yet (Debezium creates them only with the first
    change): a consumer that starts first, on an empty table, is then assigned their partitions
    at once instead of after its next metadata refresh (minutes later). Returns those created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15_000)
    try:
        missing = [t for t in topics if t not in set(admin.list_topics())]
        for topic in missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # Debezium or a worker was quicker
                admin.create_topics([NewTopic(topic, partitions, rf, topic_configs=configs or {})])
        return missing
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="register-connectors", description=__doc__)
    parser.add_argument(
        "files", nargs="*", type=Path, default=sorted(Path("connectors").glob("*.json"))
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for connector and task to be RUNNING",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    client = ConnectClient(settings.kafka_connect_url)
    env = connector_env(settings)
    if not args.files:
        print("register-connectors: no connector files found", file=sys.stderr)
        return 1
    for path in args.files:
        try:
            name, config = load_connector(path, env)
            created = client.put_config(name, config)
            print(f"{name}: {'created' if created else 'config up to date / updated'}")
            state = client.wait_running(name, timeout=args.timeout)
            print(f"{name}: RUNNING ({len(state.tasks)} task(s))")
            created_topics = ensure_topics(
                settings.kafka_bootstrap_servers, *change_topics(config), topic_configs(config)
            )
            if created_topics:
                print(f"{name}: created topics {', '.join(created_topics)}")
        except (ConnectError, KafkaError, OSError, ValueError, KeyError) as exc:
            print(f"register-connectors: {path}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
