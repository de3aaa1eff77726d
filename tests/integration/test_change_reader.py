"""The worker's change-topic reader on the real broker: it finds where a group's reading of a
partition starts (its committed offset, or the first record the broker kept when it never
committed) and reads back exactly a range of a partition's records (what the agent applies
when its consumer skipped them), without joining or moving the group."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from payments.settings import Settings
from streams.sequence import KafkaRangeReader

pytestmark = pytest.mark.integration


def test_the_reader_returns_a_range_of_records_and_where_the_group_starts(
    settings: Settings,
) -> None:
    topic, group = f"reader-test-{uuid.uuid4().hex[:8]}", f"reader-group-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    admin.create_topics([NewTopic(topic, 2, settings.kafka_replication_factor)])
    try:
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
        for n in range(10):
            producer.send(topic, key=b"k", value=f"change {n}".encode(), partition=1)
            producer.send(topic, key=b"k", value=f"change {n}".encode(), partition=0)
        producer.flush()
        producer.close()
        # Partition 0, never committed by the group, lost its first three records to retention.
        admin.delete_records({TopicPartition(topic, 0): 3})
        committer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
        )
        committer.assign([TopicPartition(topic, 1)])
        committer.commit({TopicPartition(topic, 1): OffsetAndMetadata(4, "", -1)})
        committer.close()

        async def read() -> tuple[int, int, list[tuple[int, int, bytes | None]]]:
            reader = KafkaRangeReader(settings.kafka_bootstrap_servers, topic, group)
            try:
                committed = await reader.start(1)
                untouched = await reader.start(0)
                records = await reader.read(1, 2, 7)
                return committed, untouched, [(r.partition, r.offset, r.value) for r in records]
            finally:
                await reader.close()

        committed, untouched, records = asyncio.run(read())
        assert committed == 4
        assert untouched == 3
        assert records == [(1, n, f"change {n}".encode()) for n in range(2, 7)]
        # Reading committed nothing: the group is where it was.
        check = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group)
        assert check.committed(TopicPartition(topic, 1)) == 4
        check.close()
    finally:
        admin.delete_topics([topic])
        admin.close()
