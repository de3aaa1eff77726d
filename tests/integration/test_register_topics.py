"""The registration script creates the change topics up front, so a worker that starts on an
empty table is assigned their partitions at once (not after a metadata refresh minutes later)."""

from __future__ import annotations

import uuid
from pathlib import Path

from kafka import KafkaAdminClient

from cdc.connect import load_connector
from cdc.register import change_topics, connector_env, ensure_topics
from payments.settings import Settings

CONNECTOR = Path(__file__).resolve().parents[2] / "connectors" / "payments-postgres.json"


def test_the_connector_file_names_the_payments_topic_with_six_partitions(
    settings: Settings,
) -> None:
    _, config = load_connector(CONNECTOR, connector_env(settings))
    topics, partitions, _ = change_topics(config)
    assert settings.cdc_payments_topic in topics
    assert partitions == 6


def test_missing_topics_are_created_once_with_the_connector_partitions(settings: Settings) -> None:
    scratch = f"test-register-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(settings.kafka_bootstrap_servers, [scratch], 6, 1) == [scratch]
    assert ensure_topics(settings.kafka_bootstrap_servers, [scratch], 6, 1) == []
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        described = admin.describe_topics([scratch])
        assert len(described[0]["partitions"]) == 6
        admin.delete_topics([scratch])
    finally:
        admin.close()
