"""Failover: three workers under a steady load of changes; one is SIGKILLed. Its partitions move
to the others (standby replicas make it quick), no status change goes unannounced, none is
announced under a second event id, and the next cycles reconcile every partition once."""

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
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from payments.domain.status import Status
from payments.settings import Settings
from tests import support_api
from tests.stack_support import ROOT, CdcTail, insert_payment, stack

pytestmark = pytest.mark.integration
PORTS = (6081, 6082, 6083)
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
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for port in PORTS:
            log = open(tmp_path / f"worker-{port}.log", "wb")  # noqa: SIM115 - closed with it
            procs[f"http://127.0.0.1:{port}"] = subprocess.Popen(
                [str(ROOT / ".venv/bin/payments-worker"), "worker", "--web-port", str(port)],
                cwd=ROOT,
                env=dict(os.environ),
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
        for port in PORTS:
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


def partition_of(settings: Settings, pid: str, tail: CdcTail) -> int:
    found = tail.collect([(pid, "c")], timeout=30)
    return int(found[(pid, "c")]["_partition"])


def created_at(settings: Settings, pid: str) -> str:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT created_at FROM payments WHERE id = %s", (pid,)).fetchone()
    assert row is not None
    return str(row[0].isoformat())


def test_a_killed_worker_hands_its_partitions_over_without_losing_an_event(
    settings: Settings, tmp_path: Path
) -> None:
    status_tail = CdcTail(settings, settings.status_topic)
    cdc_tail = CdcTail(settings)
    load = Load(settings)
    with three_workers(settings, tmp_path) as procs:
        urls = list(procs)

        def assignment() -> dict[str, list[int]] | None:
            found = {u: get(u, "/stats/")["partitions"]["active"] for u in urls}
            spread = sorted(p for parts in found.values() for p in parts)
            return found if spread == list(range(6)) and all(found.values()) else None

        before = wait_for("three workers sharing the six partitions", assignment)
        load.start()
        time.sleep(10)
        victim = next(u for u in urls if 0 not in before[u])  # not the sweep leader, for variety
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

        after = wait_for(
            "the survivors sharing all six partitions",
            lambda: (
                (found := {u: get(u, "/stats/")["partitions"]["active"] for u in survivors})
                and sorted(p for parts in found.values() for p in parts) == list(range(6))
                and found
            ),
        )
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

        misplaced: list[str] = []

        def tables_agree() -> bool:
            misplaced.clear()
            for pid, status, created in rows:
                holders = [
                    u
                    for u in survivors
                    if (get(u, f"/open/{pid}/", created_at=created.isoformat()) or {}).get("open")
                ]
                if len(holders) != (0 if Status(status).is_final else 1):
                    misplaced.append(f"{pid} ({status}) open on {holders}")
            return not misplaced

        try:  # the last inserts may still be on their way to the tables
            wait_for("the open tables to agree with PostgreSQL", tables_agree, timeout=60)
        except AssertionError:
            raise AssertionError(
                f"{len(misplaced)} of {len(rows)} payments misplaced: {misplaced[:5]}"
            ) from None
        print(f"failover: {len(rows)} payments, each open on exactly the survivors it should be")

        reports = [
            requests.post(f"{u}/reconcile/", auth=OPERATOR, timeout=300).json() for u in survivors
        ]
        covered = [p for r in reports for p in r["partitions"]]
        assert sorted(covered) == list(range(6)), "each partition reconciled exactly once"
        assert sum(r["sweep"] is not None for r in reports) == 1, "one sweep for the group"
    status_tail.close()
    cdc_tail.close()
