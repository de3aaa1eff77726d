"""Every topic and table of the worker, declared in one place."""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TableT

from cdc.register import ensure_topics
from payments.settings import Settings

# RocksDB tuned small: the default block cache alone is 2 GiB per partition database.
ROCKSDB_OPTIONS = {
    "block_cache_size": 8 * 1024**2,
    "block_cache_compressed_size": 0,
    "write_buffer_size": 4 * 1024**2,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024**2,
    "max_open_files": 256,
}

OPEN_TABLE = "open-payments"
EMITTED_TABLE = "last-emitted"


def topic_configs(settings: Settings, **extra: str) -> dict[str, str]:
    return {"min.insync.replicas": str(settings.kafka_min_insync_replicas), **extra}


def create_missing_topics(settings: Settings) -> list[str]:
    """Create every topic the worker reads or writes before it joins its group. Faust creates
    them too, but a topic made moments before the group's first assignment is missing from the
    consumer's metadata and left unassigned until the next refresh, minutes later."""
    servers = settings.kafka_bootstrap_servers
    partitions, rf = settings.kafka_topic_partitions, settings.kafka_replication_factor
    plain = [settings.cdc_payments_topic, settings.status_topic, settings.dlq_topic]
    changelogs = [f"{settings.worker_app_id}-{t}-changelog" for t in (OPEN_TABLE, EMITTED_TABLE)]
    return ensure_topics(servers, plain, partitions, rf, topic_configs(settings)) + ensure_topics(
        servers,
        changelogs,
        partitions,
        rf,
        topic_configs(settings, **{"cleanup.policy": "compact"}),
    )


@dataclass(frozen=True)
class Topics:
    changes: faust.TopicT
    status_updates: faust.TopicT
    dead_letters: faust.TopicT


@dataclass(frozen=True)
class Tables:
    # age key (streams.handlers.entry_key) -> OpenEntry JSON bytes, for payments not final.
    open: TableT[bytes, bytes]
    # payment id -> Emitted JSON bytes: the last status event sent (replay dedupe).
    emitted: TableT[bytes, bytes]


def declare(app: faust.App, settings: Settings) -> tuple[Topics, Tables]:
    partitions = settings.kafka_topic_partitions

    def raw_topic(name: str) -> faust.TopicT:
        # internal=True: the worker creates the topic (same partitioning) if it does not exist
        # yet, e.g. before Debezium wrote its first change.
        return app.topic(
            name,
            partitions=partitions,
            internal=True,
            key_type=bytes,
            value_type=bytes,
            # Raw both ways: a value that is not JSON must reach the agent (and the DLQ), not
            # be dropped by Faust's codec before it.
            key_serializer="raw",
            value_serializer="raw",
        )

    def table(name: str) -> TableT[bytes, bytes]:
        return app.Table(
            name,
            partitions=partitions,
            # Keys and values are bytes, stored raw (Faust derives the serializer from the
            # type; values: JSON bytes of streams.handlers.encode): a recovery from the
            # changelog writes them to RocksDB without decoding each one; only what is read is
            # decoded.
            key_type=bytes,
            value_type=bytes,
            options=ROCKSDB_OPTIONS,
        )

    topics = Topics(
        changes=raw_topic(settings.cdc_payments_topic),
        status_updates=raw_topic(settings.status_topic),
        dead_letters=raw_topic(settings.dlq_topic),
    )
    return topics, Tables(open=table(OPEN_TABLE), emitted=table(EMITTED_TABLE))
