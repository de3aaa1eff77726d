"""Fault injection for the fault suite, and the proof that each fault met traffic.

* ``Ledger``: every request the suite's clients and its Stripe proxy made, with when it started
  and ended and how it went. A fault's bite is read from it over the fault's window.
* ``tests.support_api.StripeProxy``: sits between Stripe (the stand-in) and everyone who calls
  it (API, worker, customers); answers 429 or 503 or drops connections on demand.
* ``WebhookSink``: the dead endpoint the stand-in's webhooks go to while they are being lost;
  counts what it swallowed.
* ``Faults``: kills and restarts parts of the stack, one at a time in a seeded random order,
  checks each part was up before it was hit, holds each fault until traffic met it (bounded),
  and times how long the system takes to heal (a canary payment's status event).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import requests

from payments.settings import Settings
from tests.faults.standin import StandIn, alive
from tests.stack_support import ROOT, TopicSince, replica_ports, stack
from tests.support_api import StripeProxy, operator_auth

# After tests.faults.standin, which puts scripts/ on the path: the stack's own names.
from localstack.config import instance_name  # isort: skip

SLOT = "debezium_payments"
# A 503 of the API counts as fair for this long after the fault it depended on ended (its pools
# find their dead connections and reconnect).
EXCUSED_AFTER_SECONDS = 5.0


# ------------------------------------------------------------------------------ what traffic met


@dataclass(frozen=True)
class Call:
    """One request: who made it (``source``), how it went (``outcome``), when (monotonic)."""

    source: str
    outcome: str
    start: float
    end: float


class Ledger:
    """Every request the suite's clients and proxy made (thread-safe, append-only)."""

    def __init__(self) -> None:
        self._calls: list[Call] = []
        self._lock = threading.Lock()

    def record(self, source: str, outcome: str, start: float, end: float | None = None) -> None:
        call = Call(source, outcome, start, time.monotonic() if end is None else end)
        with self._lock:
            self._calls.append(call)

    def met(
        self,
        t0: float,
        t1: float,
        *,
        sources: Iterable[str] | None = None,
        outcomes: Callable[[str], bool] = lambda _: True,
    ) -> Counter[str]:
        """Finished calls that overlapped ``[t0, t1]``, counted by ``"<source> <outcome>"``."""
        wanted = None if sources is None else set(sources)
        with self._lock:
            calls = list(self._calls)
        return Counter(
            f"{c.source} {c.outcome}"
            for c in calls
            if (wanted is None or c.source in wanted)
            and outcomes(c.outcome)
            and c.start <= t1
            and c.end >= t0
        )


def failed(outcome: str) -> bool:
    """A call that did not get an answer, or got a 5xx."""
    return outcome != "ok" and not outcome.startswith(("2", "4"))


# ------------------------------------------------------------------------------ dead endpoint


class WebhookSink:
    """An endpoint that answers every webhook 503 and remembers it: where the stand-in's
    webhooks go while they are being lost (localstripe never retries one)."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                with contextlib.suppress(ValueError):
                    sink.received.append((time.monotonic(), json.loads(raw)))
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/stripe"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def lost_intents(self, kind: str = "payment_intent.succeeded") -> set[str]:
        """Intent ids whose ``kind`` webhook this sink swallowed."""
        return {
            ((event.get("data") or {}).get("object") or {}).get("id", "")
            for _, event in self.received
            if event.get("type") == kind
        }

    def __enter__(self) -> WebhookSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------ the parts


def stack_dir() -> Path:
    return (ROOT / os.environ.get("STACK_DIR", ".stack")).resolve()


def pid_of(name: str) -> int | None:
    """The pid ``scripts/stack`` recorded for a part (PostgreSQL: the postmaster's)."""
    path = (
        stack_dir() / "pg" / name / "postmaster.pid"
        if name in {"postgres", "replica1", "replica2"}
        else stack_dir() / "run" / f"{name}.pid"
    )
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def worker_names(settings: Settings) -> list[str]:
    """The stack's workers as ``scripts/stack`` names them (``worker``, ``worker2``...), in the
    order of ``WORKER_URL``."""
    return [instance_name("worker", n) for n in range(1, len(settings.worker_urls) + 1)]


def restart_apps(settings: Settings, env: dict[str, str]) -> None:
    """The API (both pools) and every worker of the layout, restarted with ``env`` (the fault
    suite and the stack tests that run the apps with a short TTL and interval)."""
    for name in ("api", "hooks", *worker_names(settings)):
        stack("stop", name)
        stack("start", name, env=env)


class LogTail:
    """What a part of the stack writes to its log (``.stack/logs/<name>.log``, appended across
    restarts) from the moment this was made."""

    def __init__(self, name: str) -> None:
        self.path = stack_dir() / "logs" / f"{name}.log"
        try:
            self.offset = self.path.stat().st_size
        except FileNotFoundError:
            self.offset = 0

    def count(self, *needles: str) -> int:
        """Lines written since, that contain every one of ``needles``."""
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if all(n in line for n in needles))


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def established_on(pid: int, port: int) -> int:
    """TCP connections process ``pid`` holds open to clients of its ``port`` (a request in
    flight, for a gunicorn sync worker)."""
    inodes = set()
    with contextlib.suppress(FileNotFoundError, PermissionError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                local_port = int(cols[1].rsplit(":", 1)[1], 16)
                if local_port == port and cols[3] == "01" and cols[9] in inodes:
                    count += 1
    return count


class Db:
    """Short-lived connections to the stack's PostgreSQL parts, for probes (never pooled: the
    parts are killed under them)."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.database_url
        # The stack's replicas in the order of DATABASE_READ_URL (shifted with the stack's ports).
        self.ports = {
            f"replica{n}": port for n, port in enumerate(replica_ports(settings), start=1)
        }

    def query(self, sql: str, params: tuple[Any, ...] = (), *, port: int | None = None) -> Any:
        kwargs: dict[str, Any] = {"connect_timeout": 3, "autocommit": True}
        if port is not None:
            kwargs["port"] = port
        with psycopg.connect(self.url, **kwargs) as conn:
            return conn.execute(sql, params).fetchall()

    def now(self) -> Any:
        return self.query("SELECT now()")[0][0]

    def changed_since(self, since: Any) -> int:
        return int(
            self.query("SELECT count(*) FROM payments WHERE updated_at >= %s", (since,))[0][0]
        )

    def app_connections(self, port: int | None = None) -> int:
        """Open connections of the API's and worker's pools (application_name ``payments``)."""
        return int(
            self.query(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'payments' "
                "AND backend_type = 'client backend'",
                port=port,
            )[0][0]
        )

    def streaming(self) -> set[str]:
        rows = self.query(
            "SELECT application_name FROM pg_stat_replication WHERE state = %s", ("streaming",)
        )
        return {r[0] for r in rows}

    def slot_retained(self) -> tuple[int, str] | None:
        rows = self.query(
            "SELECT pg_current_wal_lsn() - restart_lsn, wal_status FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (SLOT,),
        )
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0]), str(rows[0][1])


class SlotWatch(threading.Thread):
    """Samples the Debezium slot's retained WAL every half second while the suite runs."""

    def __init__(self, db: Db) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.samples: list[tuple[float, int]] = []
        self.statuses: set[str] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.5):
            with contextlib.suppress(psycopg.Error):
                found = self.db.slot_retained()
                if found is not None:
                    self.samples.append((time.monotonic(), found[0]))
                    self.statuses.add(found[1])

    def max_between(self, t0: float, t1: float) -> int:
        return max((b for t, b in self.samples if t0 <= t <= t1), default=0)

    @property
    def max_retained(self) -> int:
        return max((b for _, b in self.samples), default=0)


# ------------------------------------------------------------------------------ the faults


@dataclass
class FaultRecord:
    """One injected fault: was the part up, what traffic met it, how long the system took to
    heal after it (until a canary payment's status event came out).

    ``part`` is what the fault takes away (``postgres``, ``replica``, ``stripe``, ``kafka``,
    ``connect``, ``worker``, ``api``, ``webhooks``): an API answer of 503 is fair only while a
    part it depends on is away. ``met`` is the traffic that met the fault (at least one is
    required); ``seen`` what else the suite saw of it (printed), of which each ``required``
    must be there too. ``after_heal`` runs once the canary is through (for counts that need
    the system back)."""

    name: str
    started: float
    part: str
    lifted: float = 0.0  # when the fault was taken away (the part restarted, Stripe back...)
    ended: float = 0.0
    up_before: bool = False
    met: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)
    required: list[str] = field(default_factory=list)
    heal_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    after_heal: list[Callable[[], None]] = field(default_factory=list)

    @property
    def bit(self) -> bool:
        return self.met.total() > 0 and all(self.seen[what] > 0 for what in self.required)

    def summary(self) -> str:
        met = ", ".join(f"{n} {what}" for what, n in sorted(self.met.items())) or "nothing"
        seen = ", ".join(f"{n} {what}" for what, n in sorted(self.seen.items()))
        return "; ".join([met, *([f"seen: {seen}"] if seen else []), *self.notes])


class Traffic:
    """What the faults need from the load."""

    def arrive(self, plan: str, count: int) -> list[Any]:
        """``count`` new customers with ``plan``, starting now (in the background)."""
        raise NotImplementedError

    def answered(self, customers: list[Any]) -> bool:
        """True once each of ``customers`` got an answer to its payment request."""
        raise NotImplementedError

    def finished(self, customers: list[Any]) -> bool:
        """True once each of ``customers`` did everything it came to do."""
        raise NotImplementedError

    def look(self, count: int) -> None:
        """``count`` customers' pages read their payment back (from a replica), now."""
        raise NotImplementedError

    def canary(self) -> bool:
        """Pay once, end to end, and wait for its ``succeeded`` event on the status topic;
        False when it did not come within the time allowed."""
        raise NotImplementedError


def metric_total(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples (every label set) in an exposition text."""
    total = 0.0
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name or sample.startswith(name + "{"):
            total += float(value)
    return total


@dataclass
class Faults:
    """Kills and restarts parts of the stack, one fault at a time, and records each."""

    settings: Settings
    proxy: StripeProxy
    sink: WebhookSink
    standin: StandIn
    ledger: Ledger
    traffic: Traffic
    slot: SlotWatch
    app_env: dict[str, str]
    rng: random.Random
    payments: int
    records: list[FaultRecord] = field(default_factory=list)
    current: FaultRecord | None = None
    errors: list[str] = field(default_factory=list)
    standin_lost: int = 0  # intents the stand-in's restart lost (must stay 0)
    stop: threading.Event = field(default_factory=threading.Event)
    planned: int = 0
    # The long outages: a broker down longer than the producers' request timeouts and Connect's
    # group session (README), Connect down long enough for WAL to pile up in the slot while
    # payments keep changing.
    connect_down_seconds: float = 120.0
    broker_down_seconds: float = 60.0

    def __post_init__(self) -> None:
        self.db = Db(self.settings)
        self.connect_url = self.settings.kafka_connect_url.rstrip("/")
        # Every worker of the stack's layout, by its scripts/stack name.
        self.workers = dict(
            zip(
                worker_names(self.settings),
                [url.rstrip("/") for url in self.settings.worker_urls],
                strict=True,
            )
        )
        self.api_url = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
        self.api_port = urlsplit(self.api_url).port or 80
        # Customers who arrive during one Stripe outage, and who pay while webhooks are lost.
        self.arrivals = max(1, self.payments // 100)
        self.gap_payers = max(2, self.payments // 25)

    # -- is the part up ----------------------------------------------------------------------

    @staticmethod
    def _ok(check: Callable[[], object]) -> bool:
        try:
            return bool(check())
        except Exception:
            return False

    def _worker_up(self, name: str) -> bool:
        return alive(pid_of(name)) and self._ok(
            lambda: (
                requests.get(
                    f"{self.workers[name]}/stats/", auth=operator_auth(self.settings), timeout=5
                ).status_code
                == 200
            )
        )

    def _connector_running(self) -> bool:
        def running() -> bool:
            doc = requests.get(
                f"{self.connect_url}/connectors/{self.settings.cdc_connector_name}/status",
                timeout=5,
            ).json()
            tasks = doc.get("tasks") or []
            return (
                doc["connector"]["state"] == "RUNNING"
                and bool(tasks)
                and all(t["state"] == "RUNNING" for t in tasks)
            )

        return alive(pid_of("connect")) and self._ok(running)

    def _kafka_up(self) -> bool:
        host, port = self.settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
        with socket.socket() as sock:
            sock.settimeout(2)
            return alive(pid_of("kafka")) and sock.connect_ex((host, int(port))) == 0

    def _api_up(self) -> bool:
        return alive(pid_of("api")) and self._ok(
            lambda: requests.get(f"{self.api_url}/healthz", timeout=5).status_code == 200
        )

    def _primary_up(self) -> bool:
        return alive(pid_of("postgres")) and self._ok(lambda: self.db.query("SELECT 1"))

    def _replica_up(self, name: str) -> bool:
        return alive(pid_of(name)) and self._ok(lambda: name in self.db.streaming())

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _fault(self, name: str, up: Callable[[], bool], part: str) -> Iterator[FaultRecord]:
        record = FaultRecord(name, started=time.monotonic(), part=part, up_before=up())
        self.records.append(record)
        print(f"  {time.strftime('%H:%M:%S')} {name}", flush=True)
        self.current = record
        try:
            yield record
        finally:
            record.ended = time.monotonic()
            record.lifted = record.lifted or record.ended
        if self.traffic.canary():
            record.heal_seconds = time.monotonic() - record.lifted
            for count in record.after_heal:
                count()
        else:
            record.notes.append("did not heal: the canary payment's status event never came")
            revived = self._revive()
            if revived:  # so that the next faults still tell something; the run fails anyway
                record.notes.append(f"the suite restarted {', '.join(revived)}, found dead")
        heal = "never" if record.heal_seconds is None else f"{record.heal_seconds:.1f} s"
        print(f"           heal {heal}; met {record.summary()}", flush=True)

    def _revive(self) -> list[str]:
        """Start every part that is down (the ones a fault left dead)."""
        revived = []
        parts = (
            "postgres",
            "replica1",
            "replica2",
            "kafka",
            "connect",
            "api",
            "hooks",
            *self.workers,
        )
        for name in parts:
            if not alive(pid_of(name)):
                self._start(name)
                revived.append(name)
        if not self.standin.answers():
            self.standin.start()
            revived.append("localstripe")
        return revived

    def _hold(self, minimum: float, maximum: float, bitten: Callable[[], bool]) -> None:
        """Keep the fault on for ``minimum`` seconds, then until ``bitten()`` (traffic met it)
        or ``maximum`` seconds in all."""
        t0 = time.monotonic()
        self.stop.wait(minimum)
        while time.monotonic() - t0 < maximum and not self.stop.is_set():
            if self._ok(bitten):
                return
            self.stop.wait(0.25)

    @contextlib.contextmanager
    def _pages_polling(self) -> Iterator[None]:
        """Customers' pages read their payments back, a few every 0.1 s, while the block runs
        (and for a second before it, so that the API's read connections are in use)."""
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.1):
                self.traffic.look(2)

        poller = threading.Thread(target=poll, name="pages", daemon=True)
        poller.start()
        try:
            self.stop.wait(1.0)
            yield
        finally:
            done.set()
            poller.join()

    def _kill(self, name: str) -> None:
        result = stack("kill", name)
        if f"{name}: killed" not in result.stdout:
            raise AssertionError(f"scripts/stack kill {name} killed nothing: {result.stdout}")

    def _lift(self) -> None:
        """The fault is being taken away now: healing time counts from here."""
        if self.current is not None and not self.current.lifted:
            self.current.lifted = time.monotonic()

    def _start(self, name: str) -> None:
        self._lift()
        env = self.app_env if name == "api" or name in self.workers else None
        deadline = time.monotonic() + 120
        while True:
            result = stack("start", name, env=env, check=False)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"scripts/stack start {name} failed: {result.stderr}")
            time.sleep(2)  # e.g. a killed postmaster's backends still hold its shared memory

    def _sigkill_postgres(self, name: str) -> None:
        """SIGKILL the postmaster and every process it started, as a crash would (what
        ``scripts/stack kill`` does for PostgreSQL is ``pg_ctl -m immediate``, a shutdown)."""
        pid = pid_of(name)
        if pid is None or not alive(pid):
            raise AssertionError(f"{name} has no live postmaster to kill (pid {pid})")
        processes = children(pid)
        os.kill(pid, signal.SIGKILL)
        for child in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)

    def _calls(self, t0: float, sources: list[str], outcome: Callable[[str], bool]) -> Counter[str]:
        return self.ledger.met(t0, time.monotonic(), sources=sources, outcomes=outcome)

    def _changes_while(self, minimum: float, maximum: float) -> int:
        """Hold until payments changed in the database under the fault; how many did."""
        since = self.db.now()
        self._hold(minimum, maximum, lambda: self.db.changed_since(since) > 0)
        return self.db.changed_since(since)

    def _connections_on(self, port: int | None) -> int:
        try:
            return self.db.app_connections(port)
        except psycopg.Error:
            return 0

    def _emit_retries(self) -> int:
        """Status event sends the workers have retried (``payments_status_emit_retries_total``
        of each), as far as they answer."""
        total = 0.0
        for url in self.workers.values():
            with contextlib.suppress(requests.RequestException, ValueError):
                text = requests.get(
                    f"{url}/metrics", auth=operator_auth(self.settings), timeout=5
                ).text
                total += metric_total(text, "payments_status_emit_retries_total")
        return int(total)

    # -- the faults -------------------------------------------------------------------------

    def kill_worker(self) -> None:
        """SIGKILL one worker (of the layout's; the others take its partitions meanwhile)."""
        name = self.rng.choice(sorted(self.workers))
        label = (
            "SIGKILL worker"
            if len(self.workers) == 1
            else f"SIGKILL {name} (of {len(self.workers)} workers)"
        )
        with self._fault(label, lambda: self._worker_up(name), "worker") as record:
            self._kill(name)
            try:
                changed = self._changes_while(self.rng.uniform(1, 4), 30)
                record.met["payments changed meanwhile"] += changed
            finally:
                self._start(name)

    def kill_connect(self) -> None:
        with self._fault("SIGKILL Kafka Connect", self._connector_running, "connect") as record:
            self._kill("connect")
            try:
                changed = self._changes_while(self.rng.uniform(2, 5), 30)
                record.met["payments changed meanwhile"] += changed
            finally:
                self._start("connect")

    def restart_connect(self) -> None:
        """A clean restart: Debezium resumes from its last committed offset and replays."""
        name = "Kafka Connect restarted cleanly"
        with self._fault(name, self._connector_running, "connect") as record:
            stack("stop", "connect")
            try:
                record.met["payments changed meanwhile"] += self._changes_while(0, 30)
            finally:
                self._start("connect")

    def connect_down_long(self) -> None:
        name = f"Kafka Connect down {self.connect_down_seconds:.0f} s"
        with self._fault(name, self._connector_running, "connect") as record:
            t0 = time.monotonic()
            self._kill("connect")
            try:
                changed = self._changes_while(self.connect_down_seconds, self.connect_down_seconds)
                record.met["payments changed meanwhile"] += changed
            finally:
                self._start("connect")
            retained = self.slot.max_between(t0, time.monotonic())
            record.notes.append(f"slot retained up to {retained / 2**20:.1f} MB")

    def _broker_down(self, record: FaultRecord, minimum: float, maximum: float) -> None:
        """Kill the (first) broker, hold, start it again. What met it, with one broker: the
        changes committed while it was down that reached the change topic after it (counted
        once the system healed), and Connect's source producer's failed connects to it meanwhile
        (required: it kept trying); with several, the payments that changed meanwhile (the other
        brokers took their records). Reported: the workers' failed broker connects (aiokafka:
        producer and consumer) and the status sends they retried."""
        changes = TopicSince(self.settings, self.settings.cdc_payments_topic)
        connect_log = LogTail("connect")
        worker_logs = [LogTail(name) for name in self.workers]
        retried = self._emit_retries()
        down_from = time.time()
        self._kill("kafka")
        try:
            record.seen["payments changed meanwhile"] += self._changes_while(minimum, maximum)
        finally:
            self._start("kafka")
        back = time.time()
        record.seen["Connect producer connects failed"] += connect_log.count(
            "[Producer clientId=connector-producer-", "could not be established"
        )
        record.seen["worker broker connects failed"] += sum(
            log.count("Unable connect to node") for log in worker_logs
        )
        record.seen["status sends retried"] += max(0, self._emit_retries() - retried)
        if len(self.settings.kafka_bootstrap_servers.split(",")) > 1:
            record.met["payments changed meanwhile"] += record.seen.pop(
                "payments changed meanwhile"
            )
            return
        record.required.append("Connect producer connects failed")

        def held() -> None:
            committed = set()
            for r in changes.read(timeout=60):
                with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                    source = json.loads(r.value)["source"]
                    if down_from * 1000 <= int(source["ts_ms"]) <= back * 1000:
                        committed.add(str(source["lsn"]))
            record.met["changes held through it, delivered after"] += len(committed)

        record.after_heal.append(held)

    def kill_kafka(self) -> None:
        with self._fault("SIGKILL Kafka broker", self._kafka_up, "kafka") as record:
            self._broker_down(record, self.rng.uniform(2, 5), 30)

    def kafka_down_long(self) -> None:
        name = f"Kafka broker down {self.broker_down_seconds:.0f} s"
        with self._fault(name, self._kafka_up, "kafka") as record:
            self._broker_down(record, self.broker_down_seconds, self.broker_down_seconds)

    def kill_replica(self) -> None:
        """SIGKILL the replica the API reads from while customers' pages read their payments:
        a read on a connection to it fails, and the API answers it from the primary."""
        # The replica the API's read pool is connected to, so that the kill cuts connections.
        open_on = {name: self._connections_on(port) for name, port in self.db.ports.items()}
        name = max(open_on, key=lambda n: (open_on[n], self.rng.random()))
        with self._fault(f"SIGKILL {name}", lambda: self._replica_up(name), "replica") as record:
            record.seen["API read connections open at the kill"] += open_on[name]
            api_log = LogTail("api")

            def reads_met() -> Counter[str]:
                """API reads that met the dead replica, by what the API logged of them."""
                return +Counter(
                    {
                        "API reads fell back to the primary": (
                            api_log.count("replica read failed, using primary")
                            + api_log.count("replica list failed, using primary")
                        ),
                        "API pooled connections found dead": api_log.count(
                            '"logger": "psycopg.pool"', "discarding"
                        ),
                    }
                )

            with self._pages_polling():
                self._sigkill_postgres(name)
                try:
                    self._hold(self.rng.uniform(1, 4), 30, lambda: reads_met().total() > 0)
                finally:
                    self._start(name)
            record.met.update(reads_met())

    def kill_primary(self) -> None:
        with self._fault("SIGKILL PostgreSQL primary", self._primary_up, "postgres") as record:
            worker_logs = [LogTail(name) for name in self.workers]
            t0 = time.monotonic()
            self._sigkill_postgres("postgres")
            try:
                self._hold(
                    self.rng.uniform(2, 4), 30, lambda: self._calls(t0, ["api"], failed).total() > 0
                )
            finally:
                self._start("postgres")
            record.met.update(self._calls(t0, ["api"], failed))
            record.seen["worker database pool warnings"] += sum(
                log.count('"logger": "psycopg.pool"', '"level": "warning"') for log in worker_logs
            )

    def kill_api(self) -> None:
        refused: Callable[[str], bool] = lambda o: o == "refused"  # noqa: E731
        with self._fault("SIGKILL API (gunicorn master)", self._api_up, "api") as record:
            t0 = time.monotonic()
            self._kill("api")
            try:
                self._hold(
                    self.rng.uniform(1, 3),
                    30,
                    lambda: self._calls(t0, ["api"], refused).total() > 0,
                )
            finally:
                self._start("api")
            record.met.update(self._calls(t0, ["api"], refused))

    def kill_api_worker(self) -> None:
        """SIGKILL one gunicorn worker while it serves a request (the master starts another)."""

        def busy() -> tuple[int, int] | None:
            master = pid_of("api")
            for pid in children(master) if master else []:
                n = established_on(pid, self.api_port)
                if n:
                    return pid, n
            return None

        with self._fault("SIGKILL an API worker mid-request", self._api_up, "api") as record:
            deadline = time.monotonic() + 60
            found = busy()
            while found is None and time.monotonic() < deadline:
                time.sleep(0.005)
                found = busy()
            if found is None:
                record.notes.append("no API worker was serving a request within 60 s")
                return
            pid, in_flight = found
            os.kill(pid, signal.SIGKILL)
            record.met["requests in flight"] += in_flight

    def kill_standin(self) -> None:
        """SIGKILL the Stripe stand-in and restart it in place on its own state (see
        ``standin``): what Stripe acknowledged must still be there."""
        refused: Callable[[str], bool] = lambda o: o == "refused"  # noqa: E731
        with self._fault("SIGKILL Stripe stand-in", self.standin.answers, "stripe") as record:
            known = self.standin.intent_ids()
            t0 = time.monotonic()
            self._kill("localstripe")
            try:
                arrivals = self.traffic.arrive("pay", self.arrivals)
                self._hold(
                    self.rng.uniform(2, 5),
                    30,
                    lambda: (
                        self.traffic.answered(arrivals)
                        and self._calls(t0, ["stripe"], refused).total() > 0
                    ),
                )
            finally:
                self._lift()
                self.standin.start()
            record.met.update(self._calls(t0, ["stripe"], refused))
            lost = known - self.standin.intent_ids()
            self.standin_lost = len(lost)
            record.notes.append(
                f"the restart lost {len(lost)} of {len(known)} intents"
                if lost
                else f"all {len(known)} intents kept across the restart"
            )

    def freeze_standin(self) -> None:
        """SIGSTOP the stand-in: calls hang until SIGCONT (or the callers' timeouts)."""
        name = "Stripe stand-in frozen (SIGSTOP)"
        with self._fault(name, self.standin.answers, "stripe") as record:
            pid = self.standin.pid()
            assert pid is not None
            held = 0
            os.kill(pid, signal.SIGSTOP)
            try:
                arrivals = self.traffic.arrive("pay", self.arrivals)
                t0 = time.monotonic()
                self.stop.wait(self.rng.uniform(3, 6))
                while time.monotonic() - t0 < 20 and not self.proxy.in_flight:
                    self.stop.wait(0.1)
                held = self.proxy.in_flight
            finally:
                self._lift()
                os.kill(pid, signal.SIGCONT)
            record.met["Stripe calls held"] += held
            self._hold(0, 30, lambda: self.traffic.answered(arrivals))

    def stripe_answers(self, mode: str) -> None:
        answered_so: Callable[[str], bool] = lambda o: o == mode  # noqa: E731
        name = f"Stripe answers {mode}"
        with self._fault(name, lambda: self.proxy.mode == "pass", "stripe") as record:
            t0 = time.monotonic()
            self.proxy.mode = mode
            try:
                arrivals = self.traffic.arrive("pay", self.arrivals)
                self._hold(
                    self.rng.uniform(3, 6),
                    30,
                    lambda: (
                        self.traffic.answered(arrivals)
                        and self._calls(t0, ["stripe"], answered_so).total() > 0
                    ),
                )
            finally:
                self._lift()
                self.proxy.mode = "pass"
            record.met.update(self._calls(t0, ["stripe"], answered_so))

    def webhooks_lost(self) -> None:
        """The webhook endpoint unreachable for a window while customers pay: only the
        reconciler can tell those payments what happened."""
        with self._fault("Stripe webhooks lost", self.standin.answers, "webhooks") as record:
            before = len(self.sink.received)
            self.standin.register_webhook(self.sink.url)
            try:
                payers = self.traffic.arrive("gap", self.gap_payers)
                self._hold(3, 150, lambda: self.traffic.finished(payers))
                time.sleep(2.5)  # the stand-in sends each webhook about 1 s after its cause
            finally:
                self._lift()
                self.standin.register_webhook()
            record.met["webhooks lost"] += len(self.sink.received) - before

    def excusing(self, t0: float, t1: float, parts: Iterable[str]) -> str | None:
        """The fault that took one of ``parts`` away at some moment of ``[t0, t1]`` (or had
        ended less than ``EXCUSED_AFTER_SECONDS`` before), by name; None when there was none."""
        wanted = set(parts)
        for r in self.records:
            ended = r.ended or float("inf")
            if r.part in wanted and r.started <= t1 and ended + EXCUSED_AFTER_SECONDS >= t0:
                return r.name
        return None

    # -- the schedule ------------------------------------------------------------------------

    def plan(self) -> list[Callable[[], None]]:
        steps: list[Callable[[], None]] = [
            self.kill_worker,
            self.kill_connect,
            self.restart_connect,
            self.connect_down_long,
            self.kill_kafka,
            self.kafka_down_long,
            self.kill_replica,
            self.kill_primary,
            self.kill_api,
            self.kill_api_worker,
            self.kill_standin,
            self.freeze_standin,
            lambda: self.stripe_answers("reset"),
            lambda: self.stripe_answers("429"),
            lambda: self.stripe_answers("503"),
            self.webhooks_lost,
        ]
        self.rng.shuffle(steps)
        return steps

    def run(self, pause: tuple[float, float]) -> None:
        """Inject every fault once, in random order, with random pauses between them; a fault
        that breaks is recorded and the next one still runs."""
        steps = self.plan()
        self.planned = len(steps)
        for step in steps:
            if self.stop.wait(self.rng.uniform(*pause)):
                return
            try:
                step()
            except Exception as exc:  # recorded, asserted by the test
                self.errors.append(f"{type(exc).__name__}: {exc}")
