"""PostgreSQL: the primary (initdb, roles, migrations, Debezium's grants) and two streaming
replicas made with pg_basebackup by the ``replicator`` role."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from localstack.config import ROOT, Config, StackError, say, settings_default
from localstack.envfile import DEBEZIUM_ROLE, REPLICATION_ROLE, SUPERUSER
from localstack.processes import check_port_free, run_command, run_tool, wait_until

SQL_DIR = Path(__file__).resolve().parent / "sql"
DB_NAME = urlsplit(settings_default("database_url")).path.lstrip("/")
REPLICA_NAMES = ("replica1", "replica2")

# Every connection authenticates with a password (SCRAM); only `replicator` may use the
# physical `replication` pseudo-database (Debezium's logical connection is a database one).
PG_HBA = f"""\
# Written by scripts/stack on every start.
local   all          all                          scram-sha-256
host    all          all          127.0.0.1/32    scram-sha-256
host    replication  {REPLICATION_ROLE:<12} 127.0.0.1/32    scram-sha-256
"""

PRIMARY_CONF = """
# payments local stack
listen_addresses = '127.0.0.1'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
# A stuck slot (Connect down for long) must not fill the disk.
max_slot_wal_keep_size = '2GB'
wal_keep_size = '128MB'
hot_standby = on
hot_standby_feedback = on
shared_buffers = '128MB'
max_connections = 300
log_min_messages = warning
"""


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


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _pg_owned_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        _chown_postgres(path)
        # postgres must be able to walk down to its folders.
        for parent in [p for p in path.parents if p != Path("/")]:
            with contextlib.suppress(PermissionError):
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)


def _private_file(path: Path, text: str) -> Path:
    """A mode-600 file the postgres user owns (password files)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    _chown_postgres(path)
    return path


def pg_dir(cfg: Config, name: str) -> Path:
    return cfg.stack_dir / "pg" / name


def pg_ctl(cfg: Config, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_command([*_as_postgres(), pg_bin("pg_ctl"), "-D", str(pg_dir(cfg, name)), *args])


def pg_running(cfg: Config, name: str) -> bool:
    if not (pg_dir(cfg, name) / "PG_VERSION").exists():
        return False
    return pg_ctl(cfg, name, "status").returncode == 0


def write_hba(data: Path) -> None:
    (data / "pg_hba.conf").write_text(PG_HBA)
    _chown_postgres(data / "pg_hba.conf")


def _pg_start(cfg: Config, name: str, port: int, *, hba: bool = True) -> None:
    check_port_free(port, name)
    if hba:
        write_hba(pg_dir(cfg, name))
    log = cfg.logs / f"{name}.log"
    cfg.logs.mkdir(parents=True, exist_ok=True)
    _pg_owned_dir(cfg.run / "pgsock")
    log.touch()
    _chown_postgres(log)
    result = pg_ctl(
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


def stop(cfg: Config, name: str, immediate: bool = False) -> bool:
    if not pg_running(cfg, name):
        return False
    pg_ctl(cfg, name, "-m", "immediate" if immediate else "fast", "-w", "stop")
    return True


# --------------------------------------------------------------------------- connections


def _connect(cfg: Config, user: str, password: str, dbname: str) -> Any:
    import psycopg

    return psycopg.connect(
        host="127.0.0.1",
        port=cfg.pg_port,
        user=user,
        password=password,
        dbname=dbname,
        autocommit=True,
        connect_timeout=5,
    )


def scram(conn: Any, user: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of ``password``, computed by libpq on this side."""
    raw: bytes = conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256")
    return raw.decode()


def superuser(cfg: Config, secrets: Mapping[str, str], dbname: str = "postgres") -> Any:
    """An autocommit connection to the primary as the superuser (its password from .env)."""
    import psycopg

    try:
        return _connect(cfg, SUPERUSER, secrets["POSTGRES_PASSWORD"], dbname)
    except psycopg.OperationalError as exc:
        if "password authentication failed" not in str(exc):
            raise
        raise StackError(
            f"postgres: the superuser password in {cfg.env_file.name} (POSTGRES_PASSWORD) is "
            f"not the one of the cluster in {pg_dir(cfg, 'postgres')}. Put the right one back, "
            "or start over: make down && rm -rf .stack"
        ) from exc


def _adopt_legacy_cluster(cfg: Config, secrets: Mapping[str, str]) -> None:
    """A cluster made before passwords were generated trusts local socket connections and has
    a well-known superuser password: over that socket, set the generated password, then switch
    to the password-only pg_hba.conf."""
    import psycopg

    with psycopg.connect(
        host=str(cfg.run / "pgsock"),
        port=cfg.pg_port,
        user=SUPERUSER,
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    ) as conn:
        verifier = scram(conn, SUPERUSER, secrets["POSTGRES_PASSWORD"])
        conn.execute(f"ALTER ROLE {SUPERUSER} PASSWORD '{verifier}'".encode())
    write_hba(pg_dir(cfg, "postgres"))
    pg_ctl(cfg, "postgres", "reload")
    say("postgres: older stack: superuser password replaced by the generated one, trust removed")


def render_psql(sql: str, values: Mapping[str, str]) -> str:
    """Substitute psql's ``:'name'`` variables with quoted literals (what psql -v does)."""
    for name, value in values.items():
        sql = sql.replace(f":'{name}'", "'" + value.replace("'", "''") + "'")
    if ":'" in sql:
        raise StackError(f"unset psql variable in SQL: {sql[sql.index(chr(58) + chr(39)) :][:40]}")
    return sql


def ensure_roles(cfg: Config, secrets: Mapping[str, str]) -> None:
    with superuser(cfg, secrets) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone():
            conn.execute(f"CREATE DATABASE {DB_NAME}".encode())
    with superuser(cfg, secrets, DB_NAME) as conn:
        values = {
            "payments_password": scram(conn, "payments", secrets["PAYMENTS_DB_PASSWORD"]),
            "debezium_password": scram(conn, DEBEZIUM_ROLE, secrets["DEBEZIUM_DB_PASSWORD"]),
            "replicator_password": scram(conn, REPLICATION_ROLE, secrets["REPLICATOR_DB_PASSWORD"]),
        }
        conn.execute(render_psql((SQL_DIR / "roles.sql").read_text(), values).encode())


def grant_debezium(cfg: Config, secrets: Mapping[str, str]) -> None:
    """Debezium's table rights; after every migrate (a migration may recreate a table)."""
    with superuser(cfg, secrets, DB_NAME) as conn:
        conn.execute((SQL_DIR / "grants.sql").read_text().encode())


def start_postgres(cfg: Config, secrets: Mapping[str, str]) -> None:
    data = pg_dir(cfg, "postgres")
    if not (data / "PG_VERSION").exists():
        say("postgres: initdb (first run)")
        _pg_owned_dir(data)
        _pg_owned_dir(cfg.run)
        pwfile = _private_file(cfg.run / "pg-superuser-password", secrets["POSTGRES_PASSWORD"])
        try:
            run_tool(
                [
                    *_as_postgres(),
                    pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ],
                "postgres: initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(PRIMARY_CONF)
    rules = [ln for ln in (data / "pg_hba.conf").read_text().splitlines() if ln[:1] not in "#"]
    legacy = any("trust" in rule.split() for rule in rules)
    _pg_start(cfg, "postgres", cfg.pg_port, hba=not legacy)
    if legacy:
        _adopt_legacy_cluster(cfg, secrets)
    ensure_roles(cfg, secrets)


def migrate(cfg: Config, env: Mapping[str, str], secrets: Mapping[str, str]) -> None:
    """Apply the schema migrations as the application role, then Debezium's grants."""
    result = run_tool([str(ROOT / ".venv/bin/payments-migrate")], "postgres: migrations", env)
    say(f"postgres: {result.stdout.strip()}")
    grant_debezium(cfg, secrets)


# --------------------------------------------------------------------------- replicas


def _passfile(cfg: Config, secrets: Mapping[str, str]) -> Path:
    """The replicator's password for pg_basebackup and the replicas' walreceiver (a libpq
    passfile, mode 600, owned by postgres): it never sits in a command line or a config."""
    folder = cfg.stack_dir / "pg"
    _pg_owned_dir(folder)
    line = f"127.0.0.1:{cfg.pg_port}:replication:{REPLICATION_ROLE}:"
    password = secrets["REPLICATOR_DB_PASSWORD"].replace("\\", "\\\\").replace(":", "\\:")
    return _private_file(folder / "replicator.pgpass", line + password + "\n")


def _replica_is_current(cfg: Config, data: Path) -> bool:
    """Made by the replicator role from this primary's port (older replicas streamed as the
    app role, which no longer has REPLICATION: they are made again)."""
    with contextlib.suppress(FileNotFoundError):
        conf = (data / "postgresql.auto.conf").read_text()
        return f"user={REPLICATION_ROLE}" in conf and f"port={cfg.pg_port}" in conf
    return False


def start_replica(cfg: Config, name: str, secrets: Mapping[str, str]) -> None:
    port = cfg.replica_ports[REPLICA_NAMES.index(name)]
    data = pg_dir(cfg, name)
    slot = f"{name}_slot"
    passfile = _passfile(cfg, secrets)
    if (data / "PG_VERSION").exists() and not _replica_is_current(cfg, data):
        say(f"{name}: made by an older stack (not the {REPLICATION_ROLE} role): making it again")
        shutil.rmtree(data)
    if not (data / "PG_VERSION").exists():
        say(f"{name}: pg_basebackup from the primary as {REPLICATION_ROLE} (slot {slot})")
        shutil.rmtree(data, ignore_errors=True)
        _pg_owned_dir(data.parent)
        # A slot left by an earlier replica of this name would make -C fail.
        with superuser(cfg, secrets) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s AND NOT active",
                (slot,),
            )
        run_tool(
            [
                *_as_postgres(),
                pg_bin("pg_basebackup"),
                "-d",
                f"host=127.0.0.1 port={cfg.pg_port} user={REPLICATION_ROLE} passfile={passfile}",
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
            f"{name}: pg_basebackup",
        )
        # The walreceiver reports cluster_name as its application_name in pg_stat_replication.
        with open(data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"cluster_name = '{name}'\n")
    _pg_start(cfg, name, port)


def replication_state(cfg: Config, secrets: Mapping[str, str]) -> list[tuple[Any, ...]]:
    with superuser(cfg, secrets) as conn:
        return list(
            conn.execute(
                "SELECT application_name, state, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint "
                "FROM pg_stat_replication ORDER BY application_name"
            ).fetchall()
        )


def wait_replicas_streaming(
    cfg: Config, secrets: Mapping[str, str], names: Sequence[str] = REPLICA_NAMES
) -> None:
    def streaming() -> bool:
        rows = replication_state(cfg, secrets)
        return set(names) <= {row[0] for row in rows if row[1] == "streaming"}

    wait_until(
        cfg,
        names[-1],
        streaming,
        f"{', '.join(names)} streaming in pg_stat_replication on the primary",
        60,
        has_pid=False,
    )
