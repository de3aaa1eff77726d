"""The worker's table store: Faust's RocksDB store, plus a bulk load of a partition that is far
behind its changelog.

Faust rebuilds a table partition by replaying its changelog one record at a time through its
recovery loop: an event object, a queue hand-over, a task and the recovery's bookkeeping for
every record, about 165 µs each (170 s for a million open payments). When a partition assigned
to this worker is more than ``BULK_LOAD_MIN_RECORDS`` behind the end of its changelog (a new
worker, a lost disk), this store copies the records itself before Faust's recovery starts:
read in batches by a consumer of its own (not in any group, committing nothing), written as
RocksDB write batches exactly as Faust's ``apply_changelog_batch`` writes them (the raw key and
value; a tombstone deletes the key), each batch together with the partition's persisted offset.
Faust's recovery then starts from that offset and replays only what arrived after. A copy that
fails or stops making progress leaves what it wrote (consistent with its offset) to Faust's
own recovery.

Registered for Faust under the URL scheme ``rocksdb-bulk`` (an entry point of the
``faust.stores`` group, pyproject.toml).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import rocksdict
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP, CollectionT

from payments.logs import get_logger

log = get_logger("streams.store")

# Below this many records behind, Faust's own recovery is quick enough (a few seconds).
BULK_LOAD_MIN_RECORDS = 10_000
BATCH_RECORDS = 5_000
NO_PROGRESS_SECONDS = 30.0


class BulkLoadingStore(RocksDBStore):
    bulk_load_min_records = BULK_LOAD_MIN_RECORDS

    async def assign_partitions(
        self, table: CollectionT, tps: set[TP], generation_id: int = 0
    ) -> None:
        await super().assign_partitions(table, tps, generation_id)
        changelog = table.changelog_topic.topics
        mine = sorted(tp for tp in tps if tp.topic in changelog)
        if mine:
            await self.bulk_load(mine)

    async def bulk_load(self, tps: Iterable[TP]) -> int:
        """Copy what each partition lacks from its changelog, where it lacks many records;
        return how many records were copied."""
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=[f"{url.host}:{url.port}" for url in self.app.conf.broker],
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=int(NO_PROGRESS_SECONDS * 1000),
        )
        copied = 0
        try:
            await consumer.start()
            firsts = await consumer.beginning_offsets(wanted)
            ends = await consumer.end_offsets(wanted)
            for tp in wanted:
                persisted = self.persisted_offset(TP(tp.topic, tp.partition))
                start = max(firsts[tp], -1 if persisted is None else persisted + 1)
                if ends[tp] - start >= self.bulk_load_min_records:
                    copied += await self._copy(consumer, tp, start, ends[tp])
        except Exception as exc:  # Faust's recovery replays whatever is still missing
            log.warning(
                "table bulk load stopped; Faust's recovery replays the rest",
                table=self.table_name,
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            await consumer.stop()
        return copied

    async def _copy(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int
    ) -> int:
        db = self._db_for_partition(tp.partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        began = moved_at = time.monotonic()
        copied, position = 0, start
        log.info(
            "table partition bulk load started",
            table=self.table_name,
            partition=tp.partition,
            from_offset=start,
            records=end - start,
        )
        while position < end:
            fetched = (await consumer.getmany(tp, timeout_ms=1000, max_records=BATCH_RECORDS)).get(
                tp, []
            )
            records = [r for r in fetched if r.offset < end]
            if records:
                self._write(db, records)
                copied += len(records)
            now = await consumer.position(tp)
            if now > position:
                position, moved_at = now, time.monotonic()
            elif time.monotonic() - moved_at > NO_PROGRESS_SECONDS:
                raise TimeoutError(
                    f"{tp.topic}[{tp.partition}]: no progress past offset {position} for "
                    f"{NO_PROGRESS_SECONDS:.0f} s"
                )
        log.info(
            "table partition bulk loaded",
            table=self.table_name,
            partition=tp.partition,
            records=copied,
            seconds=round(time.monotonic() - began, 1),
        )
        return copied

    def _write(self, db: Any, records: list[Any]) -> None:
        """One write batch: the records as Faust's recovery would write them, and the offset
        of the last one (so the database and its offset never disagree)."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for record in records:
            if record.value is None:
                batch.delete(record.key)
            else:
                batch.put(record.key, record.value)
        batch.put(self.offset_key, str(records[-1].offset).encode())
        db.write(batch)
