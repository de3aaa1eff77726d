"""Faust's table recovery, restarted instead of crashed when a rebalance comes while it runs.

A rebalance (``Recovery.on_rebalance``) replaces the sets of active and standby changelog
partitions in place and notes each new one without an offset (``None``) until the recovery
loop, which it signals to start over, builds it. Faust's loop checks that signal after it seeks
its active partitions, but not before it seeks the standby ones: a rebalance landing in between
(seen when workers start together with a changelog to read, and in a survivor after another
worker was killed) makes it seek a new standby partition to ``None``. aiokafka refuses that
(``ValueError: Offset must be a positive integer``) and the whole worker crashes, where it
should have started its recovery over for the new assignment.

Here every seek first looks at that signal: the offsets were built for an assignment that is
gone, so the loop starts over (``RebalanceAgain``, which it already handles for its waits).
``_seek_offsets`` is private to Faust's recovery: faust-streaming is pinned (0.15.3), and a unit
test fails if its loop stops seeking through it (both seeks, active and standby).
"""

from __future__ import annotations

from collections import Counter

from faust.tables import TableManager as FaustTableManager
from faust.tables.recovery import RebalanceAgain
from faust.tables.recovery import Recovery as FaustRecovery
from faust.types import TP, ConsumerT

from payments.logs import get_logger

log = get_logger("streams.recovery")


class Recovery(FaustRecovery):
    async def _seek_offsets(
        self, consumer: ConsumerT, tps: set[TP], offsets: Counter[TP], title: str
    ) -> None:
        if self.signal_recovery_start.is_set():
            log.info("a rebalance came during table recovery; it starts over", seeking=title)
            raise RebalanceAgain()
        await super()._seek_offsets(consumer, tps, offsets, title)


class TableManager(FaustTableManager):
    """Faust's table manager with the recovery above (the app's ``TableManager`` setting)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        assert isinstance(self._recovery, Recovery)
        return self._recovery
