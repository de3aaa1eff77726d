"""Where each part runs: the layout (port offset, workers, Kafka nodes), the ports, the names.

The ports that the settings define (PostgreSQL primary and replicas, Kafka, Kafka Connect, the
Stripe stand-in, the worker's web port) are read from the defaults in ``payments/settings.py``
and shifted by ``STACK_PORT_OFFSET``; only those no setting names (the API's 8000, its hooks
pool's 8001 and the KRaft controller's 9093) are written here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from dotenv import dotenv_values

from payments.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STACK_DIR = ROOT / ".stack"
LAYOUT_FILE = "layout.json"

API_BASE_PORT = 8000
HOOKS_BASE_PORT = 8001  # the API's pool for Stripe's webhooks and the scrapes (api/pools.py)
KAFKA_CONTROLLER_BASE_PORT = 9093
# Node i of a multi-node Kafka takes the broker/controller pair shifted by 2*(i-1): 9094/9095, ...
KAFKA_NODE_PORT_STEP = 2
KAFKA_LAYOUTS = (1, 3)  # one combined node, or three (a quorum that survives one loss)
MAX_WORKERS = 16

PG_PARTS = ("postgres", "replica1", "replica2")
SERVICE_PARTS = ("connect", "localstripe", "api", "hooks")


# Every part listens on the loopback only.
HOST = "127.0.0.1"


def http_url(port: int) -> str:
    return f"http://{HOST}:{port}"


class StackError(Exception):
    """A part failed to start or stop, or the layout asked for is impossible; says which, why."""


def say(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


# --------------------------------------------------------------------------- URLs and ports


def settings_default(name: str) -> str:
    value = Settings.model_fields[name].default
    return str(value)


def _netloc_parts(url: str) -> tuple[str, str, str, str]:
    """(scheme://, userinfo, host list, /rest) of a URL whose netloc may list several hosts."""
    scheme, sep, tail = url.partition("://")
    netloc, slash, rest = tail.partition("/")
    userinfo, _at, hosts = netloc.rpartition("@")
    return f"{scheme}{sep}", userinfo, hosts, f"{slash}{rest}"


def url_ports(url: str) -> list[int]:
    """Every port of a URL's host list (``h1:5433,h2:5434`` -> [5433, 5434])."""
    _, _, hosts, _ = _netloc_parts(url)
    return [int(hp.rsplit(":", 1)[1]) for hp in hosts.split(",") if ":" in hp]


def default_port(name: str) -> int:
    """The (first) port of the URL a setting defaults to: the settings define it, not this."""
    ports = url_ports(settings_default(name))
    if not ports:
        raise StackError(f"the default of {name} names no port: {settings_default(name)!r}")
    return ports[0]


def shift_ports(url: str, offset: int) -> str:
    """The same URL with every port of its host list moved by ``offset``."""
    scheme, userinfo, hosts, rest = _netloc_parts(url)
    shifted = ",".join(
        re.sub(r":(\d+)$", lambda m: f":{int(m.group(1)) + offset}", hp) for hp in hosts.split(",")
    )
    return f"{scheme}{userinfo + '@' if userinfo else ''}{shifted}{rest}"


def with_password(url: str, password: str) -> str:
    """The URL with ``password`` set for its user (percent-encoded)."""
    scheme, userinfo, hosts, rest = _netloc_parts(url)
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{user}:{quote(password, safe='')}@{hosts}{rest}"


@dataclass(frozen=True)
class BasePorts:
    """Offset-0 ports: the settings' defaults, plus those only the stack knows."""

    postgres: int
    replicas: tuple[int, int]
    kafka: int
    controller: int
    connect: int
    localstripe: int
    api: int
    hooks: int
    worker: int

    @classmethod
    def from_settings(cls) -> BasePorts:
        replicas = url_ports(settings_default("database_read_url"))
        if len(replicas) != 2:
            raise StackError(f"the default DATABASE_READ_URL should list 2 replicas: {replicas}")
        return cls(
            postgres=default_port("database_url"),
            replicas=(replicas[0], replicas[1]),
            kafka=int(settings_default("kafka_bootstrap_servers").split(",")[0].rsplit(":", 1)[1]),
            controller=KAFKA_CONTROLLER_BASE_PORT,
            connect=default_port("kafka_connect_url"),
            localstripe=default_port("stripe_api_base"),
            api=API_BASE_PORT,
            hooks=HOOKS_BASE_PORT,
            worker=int(settings_default("worker_web_port")),
        )


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    port_offset: int = 0
    workers: int = 1
    kafka_brokers: int = 1

    @property
    def replication_factor(self) -> int:
        return min(3, self.kafka_brokers)

    @property
    def min_insync_replicas(self) -> int:
        # RF 3 with 2 in sync: acks=all writes go on with one broker down.
        return 2 if self.replication_factor >= 3 else 1


def _int(name: str, raw: str | int | None, low: int, high: int) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise StackError(f"{name}={value} is out of range ({low}..{high})")
    return value


def recorded_layout(stack_dir: Path) -> dict[str, int]:
    """What an existing stack folder was made with: its ports and Kafka nodes cannot change
    under it (replicas and the KRaft quorum store them). A folder from before the layout was
    recorded was made with offset 0 and one Kafka node."""
    path = stack_dir / LAYOUT_FILE
    if path.exists():
        doc = json.loads(path.read_text())
        return {k: int(doc[k]) for k in ("port_offset", "kafka_brokers") if k in doc}
    if (stack_dir / "pg" / "postgres" / "PG_VERSION").exists() or (
        stack_dir / "kafka" / "data"
    ).exists():
        return {"port_offset": 0, "kafka_brokers": 1}
    return {}


@dataclass(frozen=True)
class Config:
    stack_dir: Path
    env_file: Path
    jvm: Path
    layout: Layout
    base: BasePorts
    overrides: Mapping[str, int] = field(default_factory=dict)
    java: str = "java"
    start_timeout: float = 120.0
    api_workers: int = 2
    kafka_heap: str = "384m"
    connect_heap: str = "384m"
    # Set when the environment asks for another offset or Kafka size than the existing
    # stack folder was made with: starting refuses, stopping and status use the folder's.
    conflict: str | None = None

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = dict(os.environ if environ is None else environ)
        stack_dir = (ROOT / (env.get("STACK_DIR") or ".stack")).resolve()
        if env.get("STACK_ENV_FILE"):
            env_file = (ROOT / env["STACK_ENV_FILE"]).resolve()
        elif stack_dir == DEFAULT_STACK_DIR:
            env_file = ROOT / ".env"
        else:  # a scratch stack never rewrites the main stack's .env
            env_file = stack_dir / "env"
        dotenv = (
            {k: v or "" for k, v in dotenv_values(env_file).items()} if env_file.exists() else {}
        )
        recorded = recorded_layout(stack_dir)

        asked_offset = _int("STACK_PORT_OFFSET", env.get("STACK_PORT_OFFSET"), 0, 50_000)
        asked_brokers = _int("KAFKA_BROKERS", env.get("KAFKA_BROKERS"), 1, 9)
        conflicts = []
        if asked_offset is not None and recorded and asked_offset != recorded["port_offset"]:
            conflicts.append(
                f"STACK_PORT_OFFSET={asked_offset}, but {stack_dir} was made with "
                f"STACK_PORT_OFFSET={recorded['port_offset']}"
            )
        if asked_brokers is not None and recorded and asked_brokers != recorded["kafka_brokers"]:
            conflicts.append(
                f"KAFKA_BROKERS={asked_brokers}, but {stack_dir} was made with "
                f"KAFKA_BROKERS={recorded['kafka_brokers']}"
            )
        if conflicts:
            offset, brokers = recorded["port_offset"], recorded["kafka_brokers"]
        else:
            offset = asked_offset
            if offset is None:
                offset = recorded.get("port_offset")
            if offset is None:
                offset = _int(
                    "STACK_PORT_OFFSET (.env)", dotenv.get("STACK_PORT_OFFSET"), 0, 50_000
                )
            brokers = asked_brokers or recorded.get("kafka_brokers")
            brokers = brokers or _int("KAFKA_BROKERS (.env)", dotenv.get("KAFKA_BROKERS"), 1, 9)
        brokers = brokers or 1
        if brokers not in KAFKA_LAYOUTS:
            raise StackError(
                f"KAFKA_BROKERS={brokers}: the stack runs 1 node or 3 (a quorum that survives "
                "the loss of one)"
            )
        workers = _int("WORKERS", env.get("WORKERS"), 1, MAX_WORKERS)
        workers = workers or _int("WORKERS (.env)", dotenv.get("WORKERS"), 1, MAX_WORKERS) or 1
        layout = Layout(port_offset=offset or 0, workers=workers, kafka_brokers=brokers)

        override_names = {
            "postgres": "PG_PORT",
            "replica1": "REPLICA1_PORT",
            "replica2": "REPLICA2_PORT",
            "kafka": "KAFKA_PORT",
            "controller": "KAFKA_CONTROLLER_PORT",
            "connect": "CONNECT_PORT",
            "localstripe": "LOCALSTRIPE_PORT",
            "api": "API_PORT",
            "hooks": "HOOKS_PORT",
        }
        overrides = {
            part: port
            for part, var in override_names.items()
            if (port := _int(var, env.get(var), 1, 65_535)) is not None
        }
        heap_default = "384m" if brokers == 1 else "320m"
        return cls(
            stack_dir=stack_dir,
            env_file=env_file,
            jvm=Path(env.get("STACK_JVM_DIR") or stack_dir / "jvm").resolve(),
            layout=layout,
            base=BasePorts.from_settings(),
            overrides=overrides,
            java=env.get("JAVA") or "java",
            start_timeout=float(env.get("STACK_START_TIMEOUT") or 120),
            api_workers=_int("API_WORKERS", env.get("API_WORKERS"), 1, 32) or 2,
            kafka_heap=env.get("KAFKA_HEAP") or heap_default,
            connect_heap=env.get("CONNECT_HEAP") or "384m",
            conflict="; ".join(conflicts) or None,
        )

    # ----------------------------------------------------------------- folders

    @property
    def logs(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def run(self) -> Path:
        return self.stack_dir / "run"

    def record_layout(self) -> None:
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        (self.stack_dir / LAYOUT_FILE).write_text(
            json.dumps(
                {
                    "port_offset": self.layout.port_offset,
                    "kafka_brokers": self.layout.kafka_brokers,
                }
            )
            + "\n"
        )

    # ----------------------------------------------------------------- ports

    def _port(self, part: str, base: int) -> int:
        if part in self.overrides:
            return self.overrides[part]
        port = base + self.layout.port_offset
        if port > 65_535:
            raise StackError(f"STACK_PORT_OFFSET={self.layout.port_offset} puts {part} past 65535")
        return port

    @property
    def pg_port(self) -> int:
        return self._port("postgres", self.base.postgres)

    @property
    def replica_ports(self) -> tuple[int, int]:
        return (
            self._port("replica1", self.base.replicas[0]),
            self._port("replica2", self.base.replicas[1]),
        )

    def kafka_port(self, node: int = 1) -> int:
        return self._port("kafka", self.base.kafka) + KAFKA_NODE_PORT_STEP * (node - 1)

    def controller_port(self, node: int = 1) -> int:
        return self._port("controller", self.base.controller) + KAFKA_NODE_PORT_STEP * (node - 1)

    @property
    def connect_port(self) -> int:
        return self._port("connect", self.base.connect)

    @property
    def localstripe_port(self) -> int:
        return self._port("localstripe", self.base.localstripe)

    @property
    def api_port(self) -> int:
        return self._port("api", self.base.api)

    @property
    def hooks_port(self) -> int:
        return self._port("hooks", self.base.hooks)

    def worker_port(self, instance: int = 1) -> int:
        return self._port("worker", self.base.worker) + instance - 1

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(
            f"{HOST}:{self.kafka_port(n)}" for n in range(1, self.layout.kafka_brokers + 1)
        )

    # ----------------------------------------------------------------- URLs

    @property
    def api_url(self) -> str:
        return http_url(self.api_port)

    @property
    def hooks_url(self) -> str:
        """The API's hooks pool: Stripe's webhook endpoint and the scrapes."""
        return http_url(self.hooks_port)

    @property
    def connect_url(self) -> str:
        return http_url(self.connect_port)

    @property
    def stripe_url(self) -> str:
        """The Stripe stand-in's (localstripe) base URL."""
        return http_url(self.localstripe_port)

    @property
    def worker_urls(self) -> list[str]:
        return [http_url(self.worker_port(n)) for n in range(1, self.layout.workers + 1)]

    # ----------------------------------------------------------------- names

    def kafka_nodes(self) -> list[str]:
        return [instance_name("kafka", n) for n in range(1, self.layout.kafka_brokers + 1)]

    def workers(self) -> list[str]:
        return [instance_name("worker", n) for n in range(1, self.layout.workers + 1)]

    def parts(self) -> list[str]:
        return [*PG_PARTS, *self.kafka_nodes(), *SERVICE_PARTS, *self.workers()]

    def needs(self, name: str) -> list[str]:
        kind = part_kind(name)
        if kind == "replica":
            return ["postgres"]
        if kind == "kafka":  # a node alone has no quorum: starting one brings up the others
            return [n for n in self.kafka_nodes() if n != name]
        if name == "connect":
            return ["postgres", *self.kafka_nodes()]
        if name in ("api", "hooks"):
            return ["postgres", "replica1", "replica2", "localstripe"]
        if kind == "worker":
            return ["postgres", *self.kafka_nodes(), "connect", "localstripe"]
        return []

    def port_of(self, name: str) -> int:
        kind, n = part_kind(name), instance_number(name)
        if name == "postgres":
            return self.pg_port
        if kind == "replica":
            return self.replica_ports[n - 1]
        if kind == "kafka":
            return self.kafka_port(n)
        if kind == "worker":
            return self.worker_port(n)
        return {
            "connect": self.connect_port,
            "localstripe": self.localstripe_port,
            "api": self.api_port,
            "hooks": self.hooks_port,
        }[name]


def part_kind(name: str) -> str:
    """postgres, replica, kafka, connect, localstripe, api, hooks or worker."""
    match = re.fullmatch(r"(replica|kafka|worker)(\d*)", name)
    return match.group(1) if match else name


def instance_number(name: str) -> int:
    match = re.fullmatch(r"[a-z]+?(\d+)", name)
    return int(match.group(1)) if match else 1


def instance_name(kind: str, n: int) -> str:
    """The first worker and Kafka node keep their plain names (``worker``, ``kafka``)."""
    return kind if n == 1 else f"{kind}{n}"


def canonical(name: str) -> str:
    """``worker1`` is ``worker``, ``kafka1`` is ``kafka``."""
    return {"worker1": "worker", "kafka1": "kafka"}.get(name, name)
