"""Table recovery across a rebalance that comes while it runs: the worker starts its recovery
over for the new assignment; it never seeks a partition the rebalance added and nobody has
built an offset for (aiokafka refuses that seek and Faust's loop crashed the whole worker: seen
in the failover test, a worker started among others with a changelog to read).

Faust's own recovery and rebalance handling on the worker as built in production (in-memory
store, nothing started); the consumer is a stand-in that records the seeks it is asked for."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import pytest
from faust.tables.recovery import RebalanceAgain
from faust.tables.recovery import Recovery as FaustRecovery
from faust.types import TP

from payments.settings import Settings
from streams.app import PaymentsWorker
from streams.recovery import Recovery, TableManager
from tests.unit.test_worker_records import NoBroker


class SeekingConsumer:
    def __init__(self) -> None:
        self.seeks: list[dict[TP, int]] = []

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self.seeks.append(dict(partitions))


def recovery_of(worker: PaymentsWorker) -> Recovery:
    """The worker's table recovery: ours (the app's ``TableManager`` setting), not Faust's."""
    tables = worker.app.tables
    assert isinstance(tables, TableManager)
    return tables.recovery


async def seek_standbys(recovery: Recovery, consumer: SeekingConsumer) -> None:
    """What Faust's recovery loop does once its actives are read: seek the standby partitions
    to their offsets, through its own wait (which also answers a rebalance signal)."""
    await recovery._wait(
        recovery._seek_offsets(
            consumer,  # type: ignore[arg-type]
            recovery.standby_tps,
            recovery.standby_offsets,
            "standby",
        )
    )


def test_a_rebalance_after_the_standby_offsets_were_built_restarts_recovery_before_any_seek() -> (
    None
):
    worker = PaymentsWorker(Settings(), store="memory://", reader=NoBroker())
    app, table = worker.app, worker.tables.open
    recovery = recovery_of(worker)
    changelog = table.changelog_topic.get_topic_name()
    built, added = TP(changelog, 1), TP(changelog, 4)
    consumer = SeekingConsumer()

    async def scenario() -> None:
        # The recovery built its standby offsets for partition 1 (Faust's loop does this first).
        recovery.add_standby(table, built)
        recovery.standby_offsets[built] = 41
        # Then a rebalance: this worker now stands by for partitions 1 and 4.
        app.assignor.assigned_standbys = lambda: {built, added}  # type: ignore[method-assign]
        app.assignor.assigned_actives = lambda: set()  # type: ignore[method-assign]
        await recovery.on_rebalance(
            assigned={built, added},
            revoked=set(),
            newly_assigned={added},
            generation_id=app.consumer_generation_id,
        )
        assert recovery.standby_offsets[added] is None  # not built: Faust's loop builds it
        await seek_standbys(recovery, consumer)

    with pytest.raises(RebalanceAgain):  # the loop's answer to it: start over (``continue``)
        worker.app.loop.run_until_complete(scenario())
    assert consumer.seeks == []


def test_without_a_rebalance_the_standby_partitions_are_sought_to_their_built_offsets() -> None:
    worker = PaymentsWorker(Settings(), store="memory://", reader=NoBroker())
    table = worker.tables.open
    recovery = recovery_of(worker)
    changelog = table.changelog_topic.get_topic_name()
    consumer = SeekingConsumer()

    async def scenario() -> None:
        for partition, offset in ((1, 41), (4, -1)):
            recovery.add_standby(table, TP(changelog, partition))
            recovery.standby_offsets[TP(changelog, partition)] = offset
        await seek_standbys(recovery, consumer)

    worker.app.loop.run_until_complete(scenario())
    # Faust seeks to the last offset read (re-reading it), and -1 (nothing read) to 0.
    assert consumer.seeks == [{TP(changelog, 1): 41, TP(changelog, 4): 0}]


def test_faust_s_recovery_loop_still_seeks_through_the_method_overridden_here() -> None:
    """The guard lives in a private method of Faust's recovery (faust-streaming is pinned): an
    upgrade whose loop seeks some other way would leave it silently unused."""
    loop = inspect.getsource(FaustRecovery._restart_recovery.fun)  # a mode ServiceTask
    assert loop.count("self._seek_offsets") == 2  # its active and its standby partitions
