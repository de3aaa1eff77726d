"""Kafka in KRaft mode: one combined broker+controller node, or three (``KAFKA_BROKERS=3``), each
node both broker and controller so that the quorum and every RF-3 topic survive one loss.

Replication comes from the settings (``KAFKA_REPLICATION_FACTOR``, ``KAFKA_MIN_INSYNC_REPLICAS``
in the generated .env), the partition count from ``KAFKA_TOPIC_PARTITIONS``' default.
``min.insync.replicas`` is set on the topics the stack creates (Connect's and the connector's),
not broker-wide, so a client that still creates RF-1 topics keeps working with acks=all.
"""

from __future__ import annotations

import base64
import shutil
import uuid
from pathlib import Path

from localstack.config import ROOT, Config, StackError, instance_name, instance_number, say
from localstack.envfile import minimal_env
from localstack.processes import check_port_free, run_tool, spawn, wait_until
from payments.settings import Settings


def java_argv(cfg: Config, heap: str, main: str, *args: str) -> list[str]:
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


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def node_home(cfg: Config, name: str) -> Path:
    return cfg.stack_dir / name  # .stack/kafka, .stack/kafka2, ...


def server_properties(cfg: Config, node: int, settings: Settings) -> str:
    n = cfg.layout.kafka_brokers
    rf, min_isr = settings.kafka_replication_factor, settings.kafka_min_insync_replicas
    if rf > n or min_isr > rf:
        raise StackError(
            f"KAFKA_REPLICATION_FACTOR={rf} and KAFKA_MIN_INSYNC_REPLICAS={min_isr} do not fit "
            f"{n} Kafka node(s): need min.insync <= RF <= nodes"
        )
    if n == 1:  # dynamic quorum of one, formatted --standalone
        quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{cfg.controller_port(1)}"
    else:  # a static quorum of every node
        voters = ",".join(f"{i}@127.0.0.1:{cfg.controller_port(i)}" for i in range(1, n + 1))
        quorum = f"controller.quorum.voters={voters}"
    broker, controller = cfg.kafka_port(node), cfg.controller_port(node)
    partitions = settings.kafka_topic_partitions
    home = node_home(cfg, instance_name("kafka", node))
    return f"""process.roles=broker,controller
node.id={node}
{quorum}
listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={home / "data"}
num.partitions={partitions}
default.replication.factor={rf}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions={partitions}
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=168
"""


def _cluster_id(cfg: Config) -> str:
    """One id for every node of this stack's cluster, made once."""
    path = cfg.stack_dir / "kafka-cluster-id"
    if not path.exists():
        # A random id may begin with "-": passed as one --cluster-id=... argument below.
        write(path, base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=") + "\n")
    return path.read_text().strip()


def _format(cfg: Config, name: str, props: Path) -> None:
    if (node_home(cfg, name) / "data" / "meta.properties").exists():
        return
    cluster_id = _cluster_id(cfg)
    say(f"{name}: formatting KRaft storage (first run)")
    args = ["format", "--ignore-formatted", f"--cluster-id={cluster_id}", f"--config={props}"]
    if cfg.layout.kafka_brokers == 1:
        args.insert(1, "--standalone")
    run_tool(java_argv(cfg, "256m", "kafka.tools.StorageTool", *args), f"{name}: storage format")


def spawn_node(cfg: Config, name: str, settings: Settings) -> None:
    node = instance_number(name)
    check_port_free(cfg.kafka_port(node), name)
    check_port_free(cfg.controller_port(node), f"{name}'s KRaft controller")
    props = write(
        node_home(cfg, name) / "server.properties", server_properties(cfg, node, settings)
    )
    _format(cfg, name, props)
    spawn(cfg, name, java_argv(cfg, cfg.kafka_heap, "kafka.Kafka", str(props)), minimal_env())


def node_ready(cfg: Config, name: str) -> bool:
    """The node answers on its own listener and the cluster lists it as a broker."""
    from kafka import KafkaAdminClient

    node = instance_number(name)
    admin = KafkaAdminClient(
        bootstrap_servers=f"127.0.0.1:{cfg.kafka_port(node)}", request_timeout_ms=3000
    )
    try:
        brokers = admin.describe_cluster().get("brokers", [])
        return any(int(b["broker_id"]) == node and not b.get("is_fenced") for b in brokers)
    finally:
        admin.close()


def wait_node(cfg: Config, name: str) -> None:
    wait_until(
        cfg,
        name,
        lambda: node_ready(cfg, name),
        f"broker {instance_number(name)} registered, answering on {cfg.port_of(name)}",
    )


def start_nodes(cfg: Config, names: list[str], settings: Settings) -> None:
    """Start several nodes together: a new 3-node quorum elects a leader only once two run."""
    for name in names:
        spawn_node(cfg, name, settings)
    for name in names:
        wait_node(cfg, name)
