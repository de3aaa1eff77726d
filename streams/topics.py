"""Every topic and table of the worker, declared in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT

from cdc.register import ensure_topics
from payments.settings import Settings

# The change topic's partition count (Debezium's topic.creation.default.partitions): it bounds
# how many workers share the work, and tables must be co-partitioned with it.
PARTITIONS = 6

# RocksDB tuned small: the default block cache alone is 2 GiB per partition database.
ROCKSDB_OPTIONS = {
    "block_cache_size": 8 * 1024**2,
    "block_cache_compressed_size": 0,
    "write_buffer_size": 4 * 1024**2,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024**2,
    "max_open_files": 256,
}


PENDING_TABLE = "pending-payments"
EMITTED_TABLE = "emitted-versions"


def create_missing_topics(settings: Settings) -> list[str]:
    """Create every topic the worker reads or writes before it joins its group. Faust creates
    them too, but a topic made moments before the group's first assignment is missing from the
    consumer's metadata and left unassigned until the next refresh, minutes later."""
    servers = settings.kafka_bootstrap_servers
    plain = [settings.cdc_payments_topic, settings.status_topic, settings.dlq_topic]
    changelogs = [f"{settings.worker_app_id}-{t}-changelog" for t in (PENDING_TABLE, EMITTED_TABLE)]
    return ensure_topics(servers, plain, PARTITIONS, 1) + ensure_topics(
        servers, changelogs, PARTITIONS, 1, {"cleanup.policy": "compact"}
    )


@dataclass(frozen=True)
class Channels:
    changes: faust.TopicT
    status_updates: faust.TopicT
    dead_letters: faust.TopicT
    pending: TableT[str, dict[str, Any]]
    emitted: TableT[str, int]


def declare(app: faust.App, settings: Settings) -> Channels:
    def raw_topic(name: str, value_serializer: str = "raw") -> faust.TopicT:
        # internal=True: the worker creates the topic (same partitioning) if it does not exist
        # yet, e.g. before Debezium wrote its first change.
        return app.topic(
            name,
            partitions=PARTITIONS,
            internal=True,
            key_type=bytes,
            key_serializer="raw",
            value_serializer=value_serializer,
        )

    return Channels(
        changes=raw_topic(settings.cdc_payments_topic),
        status_updates=raw_topic(settings.status_topic, value_serializer="json"),
        dead_letters=raw_topic(settings.dlq_topic),
        # payment id -> PendingEntry.to_dict(), for payments whose latest row is pending.
        pending=app.Table(
            PENDING_TABLE,
            partitions=PARTITIONS,
            options=ROCKSDB_OPTIONS,
        ),
        # payment id -> the newest version whose status change was emitted (replay dedupe).
        emitted=app.Table(
            EMITTED_TABLE,
            partitions=PARTITIONS,
            options=ROCKSDB_OPTIONS,
        ),
    )
