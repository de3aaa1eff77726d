"""The local stack as plain processes: PostgreSQL primary + 2 replicas, Kafka (KRaft), Kafka Connect
with Debezium, localstripe, the API (gunicorn) and one Faust worker.

    scripts/stack up [NAME ...]      start everything (or the named parts, with what they need)
    scripts/stack down               stop exactly what the stack started (by pid)
    scripts/stack status             each part, replica lag, connector state, topic offsets
    scripts/stack logs [NAME]        the tail of one log, or of all
    scripts/stack start|stop|kill NAME   one part (kill = SIGKILL, for fault tests)

State lives in $STACK_DIR (default .stack/): data, pid files, logs/<name>.log.
Ports and the state folder are overridable by environment variables (see ``Config``).
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["postgres", "replica1", "replica2", "kafka", "connect", "localstripe", "api", "worker"]
NEEDS = {
    "replica1": ["postgres"],
    "replica2": ["postgres"],
    "connect": ["postgres", "kafka"],
    "api": ["postgres", "replica1", "replica2", "localstripe"],
    "worker": ["postgres", "kafka", "connect", "localstripe"],
}


class StackError(Exception):
    """A part failed to start or stop; the message says which and why."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Config:
    stack_dir: Path = field(default_factory=lambda: (ROOT / _env("STACK_DIR", ".stack")).resolve())
    pg_port: int = int(_env("PG_PORT", "5432"))
    replica_ports: tuple[int, int] = (
        int(_env("REPLICA1_PORT", "5433")),
        int(_env("REPLICA2_PORT", "5434")),
    )
    kafka_port: int = int(_env("KAFKA_PORT", "9092"))
    controller_port: int = int(_env("KAFKA_CONTROLLER_PORT", "9093"))
    connect_port: int = int(_env("CONNECT_PORT", "8083"))
    localstripe_port: int = int(_env("LOCALSTRIPE_PORT", "8420"))
    api_port: int = int(_env("API_PORT", "8000"))
    worker_port: int = int(_env("WORKER_WEB_PORT", "6066"))
    webhook_secret: str = _env("STRIPE_WEBHOOK_SECRET", "whsec_localstripe")
    java: str = _env("JAVA", "java")
    start_timeout: float = float(_env("STACK_START_TIMEOUT", "120"))

    @property
    def logs(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def run(self) -> Path:
        return self.stack_dir / "run"

    @property
    def jvm(self) -> Path:
        return self.stack_dir / "jvm"

    def port_of(self, name: str) -> int:
        return {
            "postgres": self.pg_port,
            "replica1": self.replica_ports[0],
            "replica2": self.replica_ports[1],
            "kafka": self.kafka_port,
            "connect": self.connect_port,
            "localstripe": self.localstripe_port,
            "api": self.api_port,
            "worker": self.worker_port,
        }[name]

    def app_env(self) -> dict[str, str]:
        """The settings (DESIGN.md names) the API, worker and scripts see for this stack."""
        r1, r2 = self.replica_ports
        env = dict(os.environ)
        env.update(
            {
                "DATABASE_URL": f"postgresql://payments:payments@127.0.0.1:{self.pg_port}/payments",
                "DATABASE_READ_URL": (
                    f"postgresql://payments:payments@127.0.0.1:{r1},127.0.0.1:{r2}/payments"
                    "?load_balance_hosts=random&target_session_attrs=prefer-standby"
                ),
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.kafka_port}",
                "KAFKA_CONNECT_URL": f"http://127.0.0.1:{self.connect_port}",
                "WORKER_URL": f"http://127.0.0.1:{self.worker_port}",
                "STRIPE_API_BASE": os.environ.get(
                    "STRIPE_API_BASE", f"http://127.0.0.1:{self.localstripe_port}"
                ),
                "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
                "PG_HOST": "127.0.0.1",
                "PG_PORT": str(self.pg_port),
            }
        )
        return env


def say(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


# --------------------------------------------------------------------------- processes


def _pidfile(cfg: Config, name: str) -> Path:
    return cfg.run / f"{name}.pid"


def _read_pid(cfg: Config, name: str) -> int | None:
    try:
        return int(_pidfile(cfg, name).read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive.
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False
    return True


def running(cfg: Config, name: str) -> bool:
    if name in PG_PARTS:
        return _pg_running(cfg, name)
    return _alive(_read_pid(cfg, name))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def log_tail(cfg: Config, name: str, lines: int = 30) -> str:
    path = cfg.logs / f"{name}.log"
    if not path.exists():
        return f"(no log at {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def spawn(cfg: Config, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    cfg.logs.mkdir(parents=True, exist_ok=True)
    cfg.run.mkdir(parents=True, exist_ok=True)
    log = open(cfg.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start {name}\n".encode())
    log.flush()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env or cfg.app_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _pidfile(cfg, name).write_text(f"{proc.pid}\n")
    return proc.pid


def wait_until(
    cfg: Config, name: str, check: Callable[[], bool], what: str, timeout: float | None = None
) -> None:
    deadline = time.monotonic() + (timeout or cfg.start_timeout)
    while time.monotonic() < deadline:
        if name not in PG_PARTS and not running(cfg, name):
            raise StackError(f"{name} exited while starting ({what})")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise StackError(
        f"{name} did not become ready within {timeout or cfg.start_timeout:.0f}s ({what})"
    )


def check_port_free(cfg: Config, name: str) -> None:
    port = cfg.port_of(name)
    if port_open(port):
        raise StackError(
            f"port {port} for {name} is already in use by another process. Stop that process "
            f"or choose another port for {name} (see scripts/stack.py Config)."
        )


def terminate(cfg: Config, name: str, sig: signal.Signals = signal.SIGTERM) -> bool:
    pid = _read_pid(cfg, name)
    if not _alive(pid):
        _pidfile(cfg, name).unlink(missing_ok=True)
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
    _pidfile(cfg, name).unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------- PostgreSQL

PG_PARTS = ("postgres", "replica1", "replica2")


def pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if found:
        return found[-1]
    path = shutil.which(tool)
    if not path:
        raise StackError(
            f"PostgreSQL's {tool} was not found: run scripts/bootstrap (apt-get install postgresql)"
        )
    return path


def _as_postgres() -> list[str]:
    """Run PostgreSQL tools as the `postgres` user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"]
    return []


def _pg_owned_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)
        # postgres must be able to walk down to its folders.
        for parent in [cfg_dir for cfg_dir in path.parents if cfg_dir != Path("/")]:
            with contextlib.suppress(PermissionError):
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)


def _pg_dir(cfg: Config, name: str) -> Path:
    return cfg.stack_dir / "pg" / name


def _pg_ctl(cfg: Config, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_as_postgres(), pg_bin("pg_ctl"), "-D", str(_pg_dir(cfg, name)), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _pg_running(cfg: Config, name: str) -> bool:
    if not (_pg_dir(cfg, name) / "PG_VERSION").exists():
        return False
    return _pg_ctl(cfg, name, "status").returncode == 0


def _superuser(cfg: Config) -> Any:
    """An autocommit connection to the primary as the ``postgres`` superuser."""
    import psycopg

    return psycopg.connect(
        host="127.0.0.1",
        port=cfg.pg_port,
        user="postgres",
        password="postgres",
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    )


def _pg_query(port: int, sql: str, user: str = "payments", dbname: str = "payments") -> list[tuple]:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        password=user if user != "payments" else "payments",
        dbname=dbname,
        autocommit=True,
        connect_timeout=3,
    ) as conn:
        return list(conn.execute(sql.encode()).fetchall())


def _pg_start(cfg: Config, name: str, port: int) -> None:
    check_port_free(cfg, name)
    log = cfg.logs / f"{name}.log"
    cfg.logs.mkdir(parents=True, exist_ok=True)
    _pg_owned_dir(cfg.run / "pgsock")
    log.touch()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(log, pw.pw_uid, pw.pw_gid)
    result = _pg_ctl(
        cfg,
        name,
        "-l",
        str(log),
        "-w",
        "-t",
        str(int(cfg.start_timeout)),
        "-o",
        f"-p {port} -k {cfg.run / 'pgsock'}",
        "start",
    )
    if result.returncode != 0:
        raise StackError(
            f"{name} (PostgreSQL on {port}) failed to start: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )


def start_postgres(cfg: Config) -> None:
    data = _pg_dir(cfg, "postgres")
    if not (data / "PG_VERSION").exists():
        say("postgres: initdb (first run)")
        _pg_owned_dir(data)
        pwfile = cfg.run / "pg-superuser-password"
        _pg_owned_dir(cfg.run)
        pwfile.write_text("postgres\n")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [
                *_as_postgres(),
                pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
        )
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# payments local stack\n"
                "listen_addresses = '127.0.0.1'\n"
                "wal_level = logical\n"
                "max_wal_senders = 20\n"
                "max_replication_slots = 20\n"
                # A stuck slot (Connect down for long) must not fill the disk.
                "max_slot_wal_keep_size = '2GB'\n"
                "wal_keep_size = '128MB'\n"
                "hot_standby = on\n"
                "hot_standby_feedback = on\n"
                "shared_buffers = '128MB'\n"
                "max_connections = 300\n"
                "log_min_messages = warning\n"
            )
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 scram-sha-256\n")
    _pg_start(cfg, "postgres", cfg.pg_port)
    with _superuser(cfg) as conn:
        conn.execute(
            b"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments') THEN
                CREATE ROLE payments LOGIN REPLICATION PASSWORD 'payments';
              END IF;
              GRANT pg_monitor TO payments;
            END $$;
            """
        )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'payments'").fetchone():
            conn.execute("CREATE DATABASE payments OWNER payments")


def migrate(cfg: Config) -> None:
    """Apply the schema migrations (idempotent; every `up` runs it, so new ones land)."""
    result = subprocess.run(
        [str(ROOT / ".venv/bin/payments-migrate")],
        env=cfg.app_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"postgres: migrations failed: {result.stderr.strip()}")
    say(f"postgres: {result.stdout.strip()}")


def start_replica(cfg: Config, name: str) -> None:
    port = cfg.port_of(name)
    data = _pg_dir(cfg, name)
    slot = f"{name}_slot"
    if not (data / "PG_VERSION").exists():
        say(f"{name}: pg_basebackup from the primary (slot {slot})")
        shutil.rmtree(data, ignore_errors=True)
        _pg_owned_dir(data.parent)
        # A slot left by an earlier replica of this name would make -C fail.
        with contextlib.suppress(Exception):
            _pg_query(
                cfg.pg_port,
                f"SELECT pg_drop_replication_slot('{slot}') FROM "
                f"pg_replication_slots WHERE slot_name = '{slot}' AND NOT active",
            )
        env = dict(os.environ, PGPASSWORD="payments")
        result = subprocess.run(
            [
                *_as_postgres(),
                "env",
                "PGPASSWORD=payments",
                pg_bin("pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(cfg.pg_port),
                "-U",
                "payments",
                "-D",
                str(data),
                "-R",
                "-X",
                "stream",
                "-C",
                "-S",
                slot,
                "--checkpoint=fast",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"{name}: pg_basebackup failed: {result.stderr.strip()}")
        # The walreceiver reports cluster_name as its application_name in pg_stat_replication.
        with open(data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"cluster_name = '{name}'\n")
    _pg_start(cfg, name, port)


def replication_state(cfg: Config) -> list[tuple]:
    return _pg_query(
        cfg.pg_port,
        "SELECT application_name, state, client_port, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint "
        "FROM pg_stat_replication ORDER BY application_name",
    )


def wait_replicas_streaming(cfg: Config) -> None:
    def both() -> bool:
        streaming = {row[0] for row in replication_state(cfg) if row[1] == "streaming"}
        return {"replica1", "replica2"} <= streaming

    wait_until(cfg, "replica1", both, "both replicas streaming in pg_stat_replication", 60)


# --------------------------------------------------------------------------- Kafka + Connect


def _java_argv(cfg: Config, heap: str, main: str, *args: str) -> list[str]:
    java = shutil.which(cfg.java)
    if not java:
        raise StackError(
            f"java was not found (looked for {cfg.java!r} on PATH): Kafka and Kafka Connect need a "
            "Java 17+ runtime. Run scripts/bootstrap or apt-get install openjdk-17-jre-headless."
        )
    libs = cfg.jvm / "libs"
    if not libs.is_dir():
        raise StackError(f"the Kafka jars are missing ({libs}): run scripts/bootstrap")
    return [
        java,
        f"-Xmx{heap}",
        f"-Xms{heap}",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={ROOT / 'scripts/jvm/log4j2.properties'}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def start_kafka(cfg: Config) -> None:
    check_port_free(cfg, "kafka")
    if port_open(cfg.controller_port):
        raise StackError(f"port {cfg.controller_port} for the kafka controller is already in use")
    home = cfg.stack_dir / "kafka"
    props = _write(
        home / "server.properties",
        f"""process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{cfg.controller_port}
listeners=PLAINTEXT://127.0.0.1:{cfg.kafka_port},CONTROLLER://127.0.0.1:{cfg.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{cfg.kafka_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={home / "data"}
num.partitions=6
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=168
""",
    )
    if not (home / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        say("kafka: formatting KRaft storage (first run)")
        fmt = subprocess.run(
            _java_argv(
                cfg,
                "256m",
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "--ignore-formatted",
                # One argument with "=": a random id may begin with "-" and read as an option.
                f"--cluster-id={cluster_id}",
                f"--config={props}",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise StackError(f"kafka: storage format failed: {fmt.stderr.strip()[-2000:]}")
    spawn(cfg, "kafka", _java_argv(cfg, "512m", "kafka.Kafka", str(props)))
    wait_until(cfg, "kafka", lambda: _kafka_ready(cfg), f"broker answering on {cfg.kafka_port}")


def _kafka_ready(cfg: Config) -> bool:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=f"127.0.0.1:{cfg.kafka_port}", request_timeout_ms=3000
    )
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()


def start_connect(cfg: Config) -> None:
    check_port_free(cfg, "connect")
    props = _write(
        cfg.stack_dir / "connect" / "connect-distributed.properties",
        f"""bootstrap.servers=127.0.0.1:{cfg.kafka_port}
group.id=payments-connect
listeners=http://127.0.0.1:{cfg.connect_port}
rest.advertised.host.name=127.0.0.1
rest.advertised.port={cfg.connect_port}
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
config.storage.topic=connect-configs
offset.storage.topic=connect-offsets
status.storage.topic=connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=5
status.storage.partitions=3
offset.flush.interval.ms=1000
topic.creation.enable=true
plugin.path={cfg.jvm / "plugins"}
""",
    )
    spawn(
        cfg,
        "connect",
        _java_argv(cfg, "512m", "org.apache.kafka.connect.cli.ConnectDistributed", str(props)),
    )
    wait_until(
        cfg,
        "connect",
        lambda: (
            "PostgresConnector"
            in json.dumps(_http_json(f"http://127.0.0.1:{cfg.connect_port}/connector-plugins"))
        ),
        f"REST API on {cfg.connect_port} listing the Debezium PostgresConnector plugin from "
        f"{cfg.jvm / 'plugins'}",
        cfg.start_timeout + 60,
    )


def register_connector(cfg: Config) -> None:
    result = subprocess.run(
        [str(ROOT / ".venv/bin/register-connectors")],
        env=cfg.app_env(),
        text=True,
        capture_output=True,
        check=False,
    )
    for line in (result.stdout + result.stderr).strip().splitlines():
        say(f"connect: {line}")
    if result.returncode != 0:
        raise StackError("connect: registering the Debezium connector failed (see above)")


def _http_json(
    url: str, method: str = "GET", data: bytes | None = None, timeout: float = 3
) -> object | None:
    req = urllib.request.Request(url, method=method, data=data)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else {}


# --------------------------------------------------------------------------- Python services


def start_localstripe(cfg: Config) -> None:
    check_port_free(cfg, "localstripe")
    spawn(
        cfg,
        "localstripe",
        [
            str(ROOT / ".venv/bin/localstripe"),
            "--port",
            str(cfg.localstripe_port),
            "--from-scratch",
        ],
    )
    wait_until(
        cfg,
        "localstripe",
        lambda: port_open(cfg.localstripe_port),
        f"HTTP on {cfg.localstripe_port}",
    )
    # localstripe forgets its config on restart: (re)register the API's webhook endpoint.
    form = urllib.parse.urlencode(
        {"url": f"http://127.0.0.1:{cfg.api_port}/webhooks/stripe", "secret": cfg.webhook_secret}
    ).encode()
    _http_json(f"http://127.0.0.1:{cfg.localstripe_port}/_config/webhooks/local", "POST", form)


def start_api(cfg: Config) -> None:
    check_port_free(cfg, "api")
    spawn(
        cfg,
        "api",
        [
            str(ROOT / ".venv/bin/gunicorn"),
            "--bind",
            f"127.0.0.1:{cfg.api_port}",
            "--workers",
            _env("API_WORKERS", "2"),
            "--timeout",
            "30",
            "api:create_app()",
        ],
    )
    wait_until(
        cfg,
        "api",
        lambda: _http_json(f"http://127.0.0.1:{cfg.api_port}/healthz") is not None,
        f"GET /healthz on {cfg.api_port}",
    )


def start_worker(cfg: Config) -> None:
    check_port_free(cfg, "worker")
    env = cfg.app_env()
    env.setdefault("WORKER_DATA_DIR", str(cfg.stack_dir / "worker"))
    env["WORKER_WEB_PORT"] = str(cfg.worker_port)
    spawn(
        cfg,
        "worker",
        [
            str(ROOT / ".venv/bin/payments-worker"),
            "worker",
            "--web-port",
            str(cfg.worker_port),
            "--loglevel",
            "info",
        ],
        env,
    )
    wait_until(
        cfg,
        "worker",
        lambda: port_open(cfg.worker_port),
        f"worker web on {cfg.worker_port}",
        cfg.start_timeout,
    )


STARTERS: dict[str, Callable[[Config], None]] = {
    "postgres": start_postgres,
    "replica1": lambda cfg: start_replica(cfg, "replica1"),
    "replica2": lambda cfg: start_replica(cfg, "replica2"),
    "kafka": start_kafka,
    "connect": start_connect,
    "localstripe": start_localstripe,
    "api": start_api,
    "worker": start_worker,
}


# --------------------------------------------------------------------------- commands


def _with_needs(names: list[str]) -> list[str]:
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in ORDER:
            raise StackError(f"unknown part {name!r}; parts are: {', '.join(ORDER)}")
        if name in wanted:
            return
        wanted.add(name)
        for need in NEEDS.get(name, []):
            add(need)

    for name in names or ORDER:
        add(name)
    return [n for n in ORDER if n in wanted]


def start_one(cfg: Config, name: str) -> bool:
    """Start one part if it is not running; True when it was started now."""
    if running(cfg, name):
        return False
    t0 = time.monotonic()
    say(f"{name}: starting")
    try:
        STARTERS[name](cfg)
    except StackError:
        raise
    except Exception as exc:  # any surprise still names the part and shows its log
        raise StackError(f"{name}: {type(exc).__name__}: {exc}") from exc
    if name == "connect":
        register_connector(cfg)
    say(f"{name}: up ({time.monotonic() - t0:.1f}s)")
    return True


def cmd_up(cfg: Config, names: list[str]) -> int:
    parts = _with_needs(names)
    started = []
    for name in parts:
        try:
            if start_one(cfg, name):
                started.append(name)
            if name == "postgres":
                migrate(cfg)
                if name == "replica2":
                    wait_replicas_streaming(cfg)
        except StackError as exc:
            print(
                f"\n[stack] FAILED: {exc}\n--- last lines of {name}'s log "
                f"(.stack/logs/{name}.log) ---\n{log_tail(cfg, name)}\n",
                file=sys.stderr,
            )
            return 1
    if "connect" in parts and "connect" not in started and running(cfg, "connect"):
        register_connector(cfg)  # idempotent; picks up connector config changes
    if not started:
        say(f"everything already running ({', '.join(parts)}); nothing changed")
    print_urls(cfg, parts)
    return 0


def print_urls(cfg: Config, parts: list[str]) -> None:
    r1, r2 = cfg.replica_ports
    lines = {
        "postgres": f"PostgreSQL primary   postgresql://payments:payments@127.0.0.1:{cfg.pg_port}/payments",
        "replica1": f"PostgreSQL replicas  127.0.0.1:{r1}, 127.0.0.1:{r2} (streaming)",
        "kafka": f"Kafka                127.0.0.1:{cfg.kafka_port}",
        "connect": f"Kafka Connect        http://127.0.0.1:{cfg.connect_port} "
        "(connector payments-postgres)",
        "localstripe": f"Stripe stand-in      http://127.0.0.1:{cfg.localstripe_port}",
        "api": f"API                  http://127.0.0.1:{cfg.api_port}  "
        "(docs: /docs, metrics: /metrics)",
        "worker": f"Faust worker         http://127.0.0.1:{cfg.worker_port}  "
        "(/pending/ /stats/ /metrics)",
    }
    for name in parts:
        if name in lines:
            print(f"  {lines[name]}")
    print(f"  logs                 {cfg.logs}/<name>.log  (scripts/stack logs NAME)")


def stop_one(cfg: Config, name: str, sig: signal.Signals = signal.SIGTERM) -> bool:
    if name in PG_PARTS:
        if not _pg_running(cfg, name):
            return False
        mode = "immediate" if sig == signal.SIGKILL else "fast"
        _pg_ctl(cfg, name, "-m", mode, "-w", "stop")
        return True
    return terminate(cfg, name, sig)


def cmd_down(cfg: Config) -> int:
    for name in reversed(ORDER):
        if stop_one(cfg, name):
            say(f"{name}: stopped")
    say("down")
    return 0


def cmd_status(cfg: Config) -> int:
    """Each part, then the /ops page's snapshot (the same collector, so the two agree)."""
    for name in ORDER:
        state = "up" if running(cfg, name) else "down"
        print(f"{name:<12} {state:<5} port {cfg.port_of(name)}")
    from ops.snapshot import build_observer
    from ops.text import format_text
    from payments.settings import Settings

    env = cfg.app_env()
    observer = build_observer(
        Settings(
            database_url=env["DATABASE_URL"],
            kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            kafka_connect_url=env["KAFKA_CONNECT_URL"],
            worker_url=env["WORKER_URL"],
        )
    )
    try:
        snapshot = observer.snapshot()
    finally:
        observer.close()
    for line in format_text(snapshot):
        print(line)
    return 0


def cmd_logs(cfg: Config, names: list[str]) -> int:
    for name in names or ORDER:
        print(f"==> {name} <==")
        print(log_tail(cfg, name, 40))
    return 0


def main(argv: list[str]) -> int:
    cfg = Config()
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    cmd, args = argv[0], argv[1:]
    try:
        if cmd == "up":
            return cmd_up(cfg, args)
        if cmd == "down":
            return cmd_down(cfg)
        if cmd == "status":
            return cmd_status(cfg)
        if cmd == "logs":
            return cmd_logs(cfg, args)
        if cmd in {"start", "stop", "kill"} and len(args) == 1:
            name = args[0]
            _with_needs([name])  # validates the name
            if cmd == "start":
                return cmd_up(cfg, [name])
            sig = signal.SIGKILL if cmd == "kill" else signal.SIGTERM
            done = "killed" if sig == signal.SIGKILL else "stopped"
            say(f"{name}: {done if stop_one(cfg, name, sig) else 'was not running'}")
            return 0
    except StackError as exc:
        print(f"[stack] {exc}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
