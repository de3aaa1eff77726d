"""Failover: three workers under a steady load of changes; one is SIGKILLed (once a worker
without partition 0, once the sweep's leader, which owns it). Its partitions move to the others
(standby replicas make it quick), no status change goes unannounced, none is announced under a
second event id, and the next cycles of the reconciliation timer, on a short interval, cover
every partition once per interval, with one sweep of Stripe's events per interval."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from payments.settings import Settings
from tests import support_api
from tests.stack_support import ROOT, CdcTail, insert_payment, stack

pytestmark = pytest.mark.integration
# The three workers' web ports, past the stack's own workers' (shifted with STACK_PORT_OFFSET,
# like every port of the stack, so that two stacks can run this test at once).
PORT_STEPS = (15, 16, 17)
# The three workers' RECONCILE_INTERVAL_SECONDS: several timer cycles within a short test.
INTERVAL = 5.0
# Cycles of each survivor watched after the takeover.
CYCLES_WATCHED = 4
# Statuses Stripe's side of the story never moves a payment out of; a payment in any other
# (pending, or failed: its intent may still be paid) must be tracked by exactly one worker.
FINAL = {"succeeded", "canceled", "expired"}
OPERATOR = next(iter(Settings().operator_logins.items()), None)


def get(url: str, path: str, **params: str) -> Any:
    resp = requests.get(f"{url}{path}", params=params, auth=OPERATOR, timeout=10)
    return resp.json() if resp.status_code in (200, 404) else None


def wait_for(what: str, check: Any, timeout: float = 180) -> Any:
    return support_api.wait_for(
        check, timeout=timeout, interval=0.3, what=what, tolerate=(requests.RequestException,)
    )


@contextmanager
def three_workers(
    settings: Settings, tmp_path: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    stack("stop", "worker")
    ports = [settings.worker_web_port + step for step in PORT_STEPS]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for port in ports:
            log = open(tmp_path / f"worker-{port}.log", "wb")  # noqa: SIM115 - closed with it
            procs[f"http://127.0.0.1:{port}"] = subprocess.Popen(
                [str(ROOT / ".venv/bin/payments-worker"), "worker", "--web-port", str(port)],
                cwd=ROOT,
                env={**os.environ, "RECONCILE_INTERVAL_SECONDS": str(INTERVAL)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for port in ports:
            state = settings.model_copy(update={"worker_web_port": port}).worker_state_dir
            subprocess.run(["rm", "-rf", str(ROOT / state)], check=False)
        stack("start", "worker")


class Load(threading.Thread):
    """Inserts payments and settles some of them (a status change each), as fast as a steady
    trickle; remembers every status change it made (payment id -> versions that changed it)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.halt = threading.Event()
        self.changes: dict[str, set[int]] = defaultdict(set)
        self.created: list[str] = []
        self.rng = random.Random(7)

    def run(self) -> None:
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            while not self.halt.wait(0.05):
                pid = str(insert_payment(conn))
                self.created.append(pid)
                if len(self.created) > 3 and self.rng.random() < 0.7:
                    target = self.rng.choice(self.created[-20:])
                    row = conn.execute(
                        "UPDATE payments SET status = 'succeeded', version = version + 1 "
                        "WHERE id = %s AND status = 'pending' RETURNING version",
                        (target,),
                    ).fetchone()
                    if row is not None:
                        self.changes[target].add(int(row[0]))


@pytest.fixture
def load(settings: Settings) -> Iterator[Load]:
    """The load, its payments closed after the test: left pending (without an intent), the
    stack's worker would give each one an intent and, later, cancel it at Stripe, and the
    tests after this one would wait behind a thousand Stripe calls."""
    load = Load(settings)
    yield load
    load.halt.set()
    if load.is_alive():
        load.join()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE payments SET status = 'canceled', version = version + 1, "
            "updated_at = now() WHERE id = ANY(%s::uuid[]) AND status = 'pending'",
            (load.created,),
        )


def partition_of(settings: Settings, pid: str, tail: CdcTail) -> int:
    found = tail.collect([(pid, "c")], timeout=30)
    return int(found[(pid, "c")]["_partition"])


def created_at(settings: Settings, pid: str) -> str:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT created_at FROM payments WHERE id = %s", (pid,)).fetchone()
    assert row is not None
    return str(row[0].isoformat())


@dataclass(frozen=True)
class Cycle:
    """One reconciliation cycle as a worker's ``/stats/`` reports it (``last_cycle``)."""

    started: float  # the sweep's start when the cycle led one, else the checks'
    ended: float
    partitions: tuple[int, ...]
    swept: bool

    @classmethod
    def of(cls, summary: dict[str, Any]) -> Cycle:
        sweep = summary["sweep"]
        return cls(
            started=sweep["started_at"] if sweep else summary["started_at"],
            ended=summary["started_at"] + summary["duration_seconds"],
            partitions=tuple(summary["partitions"]),
            swept=sweep is not None,
        )


def watch_cycles(urls: list[str], cycles: int) -> dict[str, list[Cycle]]:
    """The timer's cycles of each worker that start from now on, until each ran ``cycles``
    (read from ``last_cycle`` far more often than once an interval, so that none is missed)."""
    since = time.time()
    seen: dict[str, dict[float, Cycle]] = {u: {} for u in urls}

    def each_ran_enough() -> bool:
        for url in urls:
            summary = (get(url, "/stats/") or {}).get("last_cycle")
            if summary is not None and (cycle := Cycle.of(summary)).started > since:
                seen[url][cycle.started] = cycle
        return all(len(found) >= cycles for found in seen.values())

    wait_for(
        f"{cycles} reconciliation cycles of each survivor",
        each_ran_enough,
        timeout=cycles * INTERVAL * 4 + 60,
    )
    return {url: sorted(found.values(), key=lambda c: c.started) for url, found in seen.items()}


@pytest.mark.parametrize("victim_role", ["follower", "leader"])
def test_a_killed_worker_hands_its_partitions_over_without_losing_an_event(
    settings: Settings, tmp_path: Path, victim_role: str, load: Load
) -> None:
    """``follower``: the victim does not own partition 0; ``leader``: it does, so it led the
    sweep of Stripe's events, which another worker must take over."""
    status_tail = CdcTail(settings, settings.status_topic)
    cdc_tail = CdcTail(settings)
    with three_workers(settings, tmp_path) as procs:
        urls = list(procs)

        def none_exited(among: list[str]) -> None:
            """A worker that died (a crash, not our kill) fails the test at once, with why."""
            for url in among:
                if procs[url].poll() is not None:
                    port = url.rsplit(":", 1)[1]
                    tail = (tmp_path / f"worker-{port}.log").read_text(errors="replace")
                    raise AssertionError(
                        f"worker {url} exited ({procs[url].returncode}): ...{tail[-3000:]}"
                    )

        def assignment() -> dict[str, list[int]] | None:
            none_exited(urls)
            found = {u: get(u, "/stats/")["partitions"]["active"] for u in urls}
            spread = sorted(p for parts in found.values() for p in parts)
            return found if spread == list(range(6)) and all(found.values()) else None

        before = wait_for("three workers sharing the six partitions", assignment)
        load.start()
        time.sleep(10)
        victim = next(u for u in urls if (0 in before[u]) == (victim_role == "leader"))
        moved = set(before[victim])
        os.killpg(procs[victim].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        survivors = [u for u in urls if u != victim]

        # A new payment on one of the victim's partitions: how long until a survivor holds it?
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            while True:
                probe = str(insert_payment(conn))
                if partition_of(settings, probe, cdc_tail) in moved:
                    break
        probe_created = created_at(settings, probe)
        wait_for(
            "a survivor applying a change on a moved partition",
            lambda: any(
                (get(u, f"/open/{probe}/", created_at=probe_created) or {}).get("open")
                for u in survivors
            ),
            timeout=120,
        )
        takeover = time.monotonic() - killed_at
        print(f"\nfailover: kill -> first change applied on a moved partition: {takeover:.1f} s")

        time.sleep(10)
        load.halt.set()
        load.join()

        def survivors_share() -> dict[str, list[int]] | None:
            none_exited(survivors)
            found = {u: get(u, "/stats/")["partitions"]["active"] for u in survivors}
            spread = sorted(p for parts in found.values() for p in parts)
            return found if spread == list(range(6)) else None

        after = wait_for("the survivors sharing all six partitions", survivors_share)
        assert moved <= set(after[survivors[0]]) | set(after[survivors[1]])

        wanted = {f"{pid}:{v}" for pid, versions in load.changes.items() for v in versions}
        assert len(wanted) >= 20, "the load settled enough payments to mean something"
        mine = set(load.changes)

        def announced() -> Counter[str]:
            seen: Counter[str] = Counter()
            for record in status_tail.records(1, lambda _: False):
                if record.key is not None and record.key.decode() in mine:
                    seen[dict(record.headers)["ce_id"].decode()] += 1
            return seen

        def all_announced() -> Counter[str] | None:
            seen = announced()
            return seen if wanted <= set(seen) else None

        try:
            events = wait_for("every status change announced", all_announced)
        except AssertionError:
            missing = sorted(wanted - set(announced()))
            states = {u: get(u, "/stats/") for u in survivors}
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} status changes never announced, e.g. "
                f"{missing[:5]}; survivors: "
                + "; ".join(
                    f"{u} active {(st or {}).get('partitions')} blocked {(st or {}).get('blocked')}"
                    for u, st in states.items()
                )
            ) from None
        assert set(events) == wanted, "an event without a change behind it"
        duplicates = sum(n - 1 for n in events.values())
        print(f"failover: {len(wanted)} status changes, {duplicates} duplicate deliveries")

        # The survivors' open tables (rebuilt from changelogs and standbys through the
        # rebalance) agree with PostgreSQL: each payment the load made is held open by exactly
        # one survivor while it is not final, and by none once it is.
        with psycopg.connect(settings.database_url) as conn:
            rows = conn.execute(
                "SELECT id::text, status, created_at FROM payments WHERE id = ANY(%s::uuid[])",
                (load.created,),
            ).fetchall()
        assert len(rows) == len(load.created)
        # Only the load moved them (pending, then succeeded); the reconciler may give the
        # older ones an intent, which changes no status.
        assert {status for _, status, _ in rows} == {"pending", "succeeded"}

        misplaced: list[str] = []

        def tables_agree() -> bool:
            misplaced.clear()
            for pid, status, created in rows:
                holders = [
                    u
                    for u in survivors
                    if (get(u, f"/open/{pid}/", created_at=created.isoformat()) or {}).get("open")
                ]
                if len(holders) != (0 if status in FINAL else 1):
                    misplaced.append(f"{pid} ({status}) open on {holders}")
            return not misplaced

        try:  # the last inserts may still be on their way to the tables
            wait_for("the open tables to agree with PostgreSQL", tables_agree, timeout=60)
        except AssertionError:
            raise AssertionError(
                f"{len(misplaced)} of {len(rows)} payments misplaced: {misplaced[:5]}"
            ) from None
        print(f"failover: {len(rows)} payments, each open on exactly the survivors it should be")

        # The timer's next cycles: each survivor reconciles the partitions it took over, no
        # other, in every cycle, one interval after the last (none skipped, none extra), and
        # the one that owns partition 0 now sweeps Stripe's events in each of its cycles.
        watched = watch_cycles(survivors, CYCLES_WATCHED)
        for url, cycles in watched.items():
            assert {c.partitions for c in cycles} == {tuple(after[url])}, (url, cycles)
            gaps = [round((b.started - a.ended) / INTERVAL, 2) for a, b in pairwise(cycles)]
            assert [round(g) for g in gaps] == [1] * len(gaps), f"{url}: intervals between {gaps}"
            print(f"failover: {url} cycles {len(cycles)}, intervals between them {gaps}")
        (leader,) = [u for u in survivors if 0 in after[u]]
        assert [c.swept for c in watched[leader]] == [True] * len(watched[leader])
        followers = [c.swept for u in survivors if u != leader for c in watched[u]]
        assert followers == [False] * len(followers), "a second sweep in the group"
        print(
            f"failover ({victim_role} killed): {sum(map(len, watched.values()))} cycles of the "
            f"survivors, each partition once per interval, one sweep per interval by {leader}"
        )
    status_tail.close()
    cdc_tail.close()
