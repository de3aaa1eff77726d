"""The commands: up, down, status, logs, start|stop|kill NAME, secrets."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Mapping

import localstack
from localstack import connect, kafka, postgres, services
from localstack.config import (
    PG_PARTS,
    ROOT,
    Config,
    StackError,
    canonical,
    instance_number,
    part_kind,
    say,
)
from localstack.envfile import EnvResult, child_env, ensure, read
from localstack.processes import log_tail, pid_alive, terminate, with_pidfile
from payments.settings import Settings


def settings_for(env: Mapping[str, str]) -> Settings:
    """The settings the stack's children see (the environment built for them, nothing else)."""
    fields = Settings.model_fields
    return Settings(**{k.lower(): v for k, v in env.items() if k.lower() in fields})  # type: ignore[arg-type]


def _rel(path: object) -> str:
    text = str(path)
    return text.removeprefix(f"{ROOT}/")


class Stack:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._env: EnvResult | None = None

    # ----------------------------------------------------------------- settings

    def prepare(self) -> EnvResult:
        """Write the layout into .env and generate the secrets it lacks (for up/start)."""
        if self.cfg.conflict:
            raise StackError(
                f"{self.cfg.conflict}. Ports and Kafka nodes cannot change under an existing "
                "stack: run without the variable, or start over (make down; rm -rf .stack)."
            )
        if self._env is None:
            self._env = ensure(self.cfg)
            if self._env.generated:
                say(
                    f"generated {', '.join(self._env.generated)} into "
                    f"{_rel(self._env.path)} (mode 600, gitignored)"
                )
            self.cfg.record_layout()
        return self._env

    @property
    def values(self) -> dict[str, str]:
        return self._env.values if self._env else read(self.cfg.env_file)

    def env(self) -> dict[str, str]:
        return child_env(self.cfg, self.values)

    def settings(self) -> Settings:
        return settings_for(self.env())

    # ----------------------------------------------------------------- parts

    def running(self, name: str) -> bool:
        if name in PG_PARTS:
            return postgres.pg_running(self.cfg, name)
        return pid_alive(self.cfg, name)

    def with_needs(self, names: list[str]) -> list[str]:
        parts = self.cfg.parts()
        wanted: set[str] = set()

        def add(name: str) -> None:
            if name not in parts:
                raise StackError(
                    f"unknown part {name!r}; this stack's parts are: {', '.join(parts)} "
                    f"(WORKERS={self.cfg.layout.workers}, "
                    f"KAFKA_BROKERS={self.cfg.layout.kafka_brokers})"
                )
            if name in wanted:
                return
            wanted.add(name)
            for need in self.cfg.needs(name):
                add(need)

        for name in names or parts:
            add(canonical(name))
        return [n for n in parts if n in wanted]

    def _start(self, name: str, todo: list[str]) -> None:
        cfg, values = self.cfg, self.values
        kind = part_kind(name)
        if name == "postgres":
            postgres.start_postgres(cfg, values)
        elif kind == "replica":
            postgres.start_replica(cfg, name, values)
        elif kind == "kafka":
            # Every node still down starts together: a new quorum needs two of three.
            nodes = [n for n in todo if part_kind(n) == "kafka" and not self.running(n)]
            kafka.start_nodes(cfg, nodes, self.settings())
        elif name == "connect":
            connect.start_connect(cfg, self.settings(), values)
        elif name == "localstripe":
            services.start_localstripe(cfg, values)
        elif name in services.POOL_PARTS:
            services.start_api(cfg, self.env(), name)
        elif kind == "worker":
            services.start_worker(cfg, name, self.env(), self.settings())

    def up(self, names: list[str]) -> int:
        self.prepare()
        parts = self.with_needs(names)
        started: list[str] = []
        t_all = time.monotonic()
        if not names:
            self._drop_extra_workers()
        for name in parts:
            try:
                if not self.running(name):
                    t0 = time.monotonic()
                    say(f"{name}: starting")
                    self._start(name, parts)
                    started.append(name)
                    if part_kind(name) == "kafka":  # the group started together
                        started += [n for n in parts if part_kind(n) == "kafka" and n != name]
                    say(f"{name}: up ({time.monotonic() - t0:.1f}s)")
                self._after(name, parts, started)
            except StackError as exc:
                self._failed(name, exc)
                return 1
            except Exception as exc:  # any surprise still names the part and shows its log
                self._failed(name, StackError(f"{name}: {type(exc).__name__}: {exc}"))
                return 1
        if not started:
            say(f"everything already running ({', '.join(parts)}); nothing changed")
        else:
            say(f"up in {time.monotonic() - t_all:.1f}s")
        self.print_urls(parts)
        return 0

    def _after(self, name: str, parts: list[str], started: list[str]) -> None:
        """What follows a part, started now or already running."""
        if name == "postgres":
            # Every up: new migrations land, then Debezium's grants on what they made.
            postgres.migrate(self.cfg, self.env(), self.values)
        elif part_kind(name) == "replica" and name == [p for p in parts if "replica" in p][-1]:
            # After the last replica asked for: each one streams before anything reads it.
            replicas = [p for p in parts if part_kind(p) == "replica"]
            postgres.wait_replicas_streaming(self.cfg, self.values, replicas)
            say(f"{' and '.join(replicas)}: streaming from the primary")
        elif name == "connect":
            if name not in started and not connect.has_config_providers(self.cfg):
                # Started by an older stack: it cannot resolve the connector's ${env:...} login.
                say("connect: restarting with the env config provider (started by an older stack)")
                terminate(self.cfg, "connect")
                connect.start_connect(self.cfg, self.settings(), self.values)
            # Idempotent: picks up connector config changes too.
            connect.register_connector(self.env())
        elif name == "localstripe" and name not in started:
            services.register_webhook(self.cfg, self.values)
        elif name in services.POOL_PARTS and name not in started:
            wanted = self.env().get("WORKER_URL", "")
            if services.api_worker_url(self.cfg, name) != wanted:
                say(f"{name}: restarting to list the workers on /ops (WORKER_URL changed)")
                terminate(self.cfg, name)
                services.start_api(self.cfg, self.env(), name)

    def _drop_extra_workers(self) -> None:
        keep = set(self.cfg.workers())
        for name in with_pidfile(self.cfg):
            if part_kind(name) == "worker" and name not in keep and terminate(self.cfg, name):
                say(f"{name}: stopped (WORKERS={self.cfg.layout.workers})")

    def _failed(self, name: str, exc: StackError) -> None:
        print(
            f"\n[stack] FAILED: {exc}\n--- last lines of {name}'s log "
            f"({_rel(self.cfg.logs / (name + '.log'))}) ---\n{log_tail(self.cfg, name)}\n",
            file=sys.stderr,
        )

    # ----------------------------------------------------------------- stop

    def stop_one(self, name: str, sig: signal.Signals = signal.SIGTERM) -> bool:
        if name in PG_PARTS:
            return postgres.stop(self.cfg, name, immediate=sig == signal.SIGKILL)
        return terminate(self.cfg, name, sig)

    def down(self) -> int:
        """Stop what the stack started, by pid: every instance, whatever the layout says."""
        running = set(with_pidfile(self.cfg))
        order = ["worker", "hooks", "api", "localstripe", "connect", "kafka"]
        names: list[str] = []
        for kind in order:
            names += sorted(
                (n for n in running if part_kind(n) == kind),
                key=instance_number,
                reverse=True,
            )
        names += ["replica2", "replica1", "postgres"]
        for name in names:
            if self.stop_one(name):
                say(f"{name}: stopped")
        for pool in services.POOL_PARTS:
            (self.cfg.run / f"{pool}.worker_url").unlink(missing_ok=True)
        shutil.rmtree(self.cfg.run / "api-metrics", ignore_errors=True)
        say("down")
        return 0

    def stop_cmd(self, name: str, sig: signal.Signals) -> int:
        name = canonical(name)
        if name not in self.cfg.parts() and name not in with_pidfile(self.cfg):
            self.with_needs([name])  # raises the unknown-part message
        done = "killed" if sig == signal.SIGKILL else "stopped"
        say(f"{name}: {done if self.stop_one(name, sig) else 'was not running'}")
        return 0

    # ----------------------------------------------------------------- report

    def print_urls(self, parts: list[str]) -> None:
        cfg = self.cfg
        r1, r2 = cfg.replica_ports
        kafka_nodes = cfg.kafka_nodes()
        rf = self.values.get("KAFKA_REPLICATION_FACTOR", "1")
        isr = self.values.get("KAFKA_MIN_INSYNC_REPLICAS", "1")
        lines = {
            "postgres": f"PostgreSQL primary   127.0.0.1:{cfg.pg_port}  (db payments, role "
            "payments; DATABASE_URL in .env)",
            "replica1": f"PostgreSQL replicas  127.0.0.1:{r1}, 127.0.0.1:{r2}  (streaming)",
            "kafka": f"Kafka                {cfg.bootstrap_servers}  ({len(kafka_nodes)} KRaft "
            f"node(s); topics RF {rf}, min.insync {isr})",
            "connect": f"Kafka Connect        {cfg.connect_url}  (connector payments-postgres)",
            "localstripe": f"Stripe stand-in      {cfg.stripe_url}",
            "api": f"API                  {cfg.api_url}  (/payments, /docs, /checkout)",
            "hooks": f"API hooks pool       {cfg.hooks_url}  (/webhooks/stripe, /metrics, /ops)",
            "worker": f"Faust workers        {', '.join(cfg.worker_urls)}  "
            "(/pending/ /stats/ /metrics)",
        }
        print()
        for name in parts:
            if name in lines:
                print(f"  {lines[name]}")
        print(f"  logs                 {_rel(cfg.logs)}/<name>.log  (scripts/stack logs NAME)")
        env_file = _rel(cfg.env_file)
        print(
            f"\n  Secrets (DB passwords, API keys, operator login, Stripe keys) are in {env_file}"
            "\n  (mode 600, gitignored); they are never printed. To use them:"
            f"\n    KEY=$(grep -oP '^API_KEYS=acme:\\K[^,]+' {env_file})"
            f'\n    curl -H "Authorization: Bearer $KEY" {cfg.api_url}/payments'
            f"\n    psql \"$(grep -oP '^DATABASE_URL=\\K.*' {env_file})\""
            f"\n    grep ^OPERATOR_CREDENTIALS= {env_file}   # user:password for operators"
        )

    def status(self) -> int:
        """Each part, then the /ops page's snapshot (the same collector, so the two agree)."""
        cfg = self.cfg
        names = cfg.parts() + [n for n in with_pidfile(cfg) if n not in cfg.parts()]
        layout = cfg.layout
        print(
            f"stack {_rel(cfg.stack_dir)}: STACK_PORT_OFFSET={layout.port_offset} "
            f"WORKERS={layout.workers} KAFKA_BROKERS={layout.kafka_brokers}"
        )
        for name in names:
            state = "up" if self.running(name) else "down"
            print(f"{name:<12} {state:<5} port {cfg.port_of(name)}")
        return self._ops_snapshot()

    def _ops_snapshot(self) -> int:
        """The same snapshot as the /ops page (one collector, ``ops``)."""
        from ops.snapshot import build_observer
        from ops.text import format_text

        observer = build_observer(self.settings())
        try:
            snapshot = observer.snapshot()
        finally:
            observer.close()
        for line in format_text(snapshot):
            print(line)
        return 0

    def logs(self, names: list[str]) -> int:
        for name in [canonical(n) for n in names] or self.cfg.parts():
            print(f"==> {name} <==")
            print(log_tail(self.cfg, name, 40))
        return 0

    def secrets(self) -> int:
        result = self.prepare()
        say(f"{_rel(result.path)}: {len(result.values)} settings (mode 600, gitignored)")
        return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(localstack.__doc__)
        return 0
    cmd, args = argv[0], argv[1:]
    try:
        stack = Stack(Config.load())
        if cmd == "up":
            return stack.up(args)
        if cmd == "down":
            return stack.down()
        if cmd == "status":
            return stack.status()
        if cmd == "logs":
            return stack.logs(args)
        if cmd == "secrets" and not args:
            return stack.secrets()
        if cmd in {"start", "stop", "kill"} and len(args) == 1:
            if cmd == "start":
                return stack.up([args[0]])
            return stack.stop_cmd(args[0], signal.SIGKILL if cmd == "kill" else signal.SIGTERM)
    except StackError as exc:
        print(f"[stack] {exc}", file=sys.stderr)
        return 1
    print(localstack.__doc__, file=sys.stderr)
    return 2
