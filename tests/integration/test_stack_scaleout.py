"""Scale-out on one machine, as a user of `make up` sees it:

* both replicas stream from the primary, and each serves a row the primary just wrote;
* every worker of the stack (`make up WORKERS=N`) answers on its own port, keeps its RocksDB
  state in its own folder, and is a member of the one consumer group;
* three KRaft nodes (`KAFKA_BROKERS=3`, here a scratch cluster on free ports, so the running
  stack is not touched) keep acks=all writes going with one node killed, with RF 3 and
  min.insync.replicas 2 from the generated environment.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import requests
from dotenv import dotenv_values
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from payments.settings import Settings
from tests import support_api
from tests.stack_support import ROOT, insert_payment, stack, stack_dir

pytestmark = pytest.mark.integration


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    # Any error: a part still coming up; kept as the last value for the message.
    return support_api.wait_for(
        check, timeout=timeout, interval=0.5, what=what, tolerate=(Exception,)
    )


# ------------------------------------------------------------------------------ replicas


def test_both_replicas_stream_and_serve_what_the_primary_wrote(settings: Settings) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as primary:
        rows = primary.execute(
            "SELECT application_name, state FROM pg_stat_replication "
            "WHERE application_name LIKE 'replica%' ORDER BY 1"
        ).fetchall()
        assert rows == [("replica1", "streaming"), ("replica2", "streaming")], rows
        payment_id = insert_payment(primary, amount_minor=777)
        try:
            read = urlsplit(settings.database_read_url)
            hosts = read.netloc.rsplit("@", 1)[1].split(",")
            assert len(hosts) == 2, f"DATABASE_READ_URL should list both replicas: {hosts}"
            for host in hosts:
                name, port = host.rsplit(":", 1)
                with psycopg.connect(
                    host=name,
                    port=int(port),
                    user=read.username,
                    password=read.password,
                    dbname=read.path.lstrip("/"),
                    autocommit=True,
                ) as replica:
                    assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
                    wait_for(
                        f"the replica on {host} to serve the new row",
                        lambda r=replica: (
                            r.execute(
                                "SELECT amount_minor FROM payments WHERE id = %s", (payment_id,)
                            ).fetchone()
                            == (777,)
                        ),
                        30,
                    )
        finally:
            primary.execute("DELETE FROM payments WHERE id = %s", (payment_id,))


# ------------------------------------------------------------------------------ workers


def _open_state_dirs(pid: int, root: Path) -> set[str]:
    """The RocksDB folders (under root) a process holds files open in."""
    dirs: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = Path(os.readlink(fd))
        except OSError:
            continue
        if target.is_relative_to(root):
            dirs.add(target.relative_to(root).parts[0])
    return dirs


def test_every_worker_has_its_own_port_state_folder_and_group_membership(
    settings: Settings,
) -> None:
    urls = settings.worker_urls
    ports = [urlsplit(u).port for u in urls]
    assert len(set(ports)) == len(ports), f"workers share a port: {urls}"
    for url in urls:
        operator = next(iter(settings.operator_logins.items()), None)
        answer = requests.get(f"{url}/stats/", auth=operator, timeout=10)
        assert answer.status_code == 200, f"worker at {url}: HTTP {answer.status_code}"

    run = stack_dir() / "run"
    pids = {
        int(re.search(r"--web-port\s+(\d+)", _cmdline(pid)).group(1)): pid  # type: ignore[union-attr]
        for pid in (int(p.read_text().split()[0]) for p in run.glob("worker*.pid"))
        if Path(f"/proc/{pid}").exists()
    }
    assert sorted(pids) == sorted(ports), f"running workers {sorted(pids)} != WORKER_URL {ports}"
    root = (ROOT / Settings(worker_data_dir="").worker_state_dir).parent
    expected = {port: f"{settings.worker_app_id}-{port}" for port in ports}
    for port, folder in expected.items():
        assert (root / folder).is_dir(), f"worker on {port} has no state folder {root / folder}"

    def every_worker_holds_only_its_folder() -> bool:
        held = {port: _open_state_dirs(pid, root) for port, pid in pids.items()}
        for port, dirs in held.items():
            assert dirs <= {expected[port]}, f"worker on {port} holds files of {dirs}"
        return any(held.values())  # RocksDB opened somewhere: the check above meant something

    wait_for("a worker to open its RocksDB tables", every_worker_holds_only_its_folder, 60)

    def group_has_every_worker() -> bool:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        try:
            group = admin.describe_groups([settings.worker_app_id])[settings.worker_app_id]
        finally:
            admin.close()
        return group["group_state"] == "Stable" and len(group["members"]) == len(urls)

    wait_for(f"{len(urls)} worker(s) in a stable consumer group", group_has_every_worker, 90)


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


# ------------------------------------------------------------------------------ Kafka x3


def _free_block(size: int) -> int:
    """A base port with ``size`` free ports after it."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + size >= 65_000:
            continue
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no block of {size} free ports found")


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    base = _free_block(6)
    env = dict(
        os.environ,
        STACK_DIR=str(tmp_path / "stack"),
        STACK_JVM_DIR=str(stack_dir() / "jvm"),
        KAFKA_BROKERS="3",
        KAFKA_PORT=str(base),
        KAFKA_CONTROLLER_PORT=str(base + 1),
    )
    env.pop("STACK_PORT_OFFSET", None)
    try:
        stack("start", "kafka", env=env, timeout=300)
        generated = dotenv_values(tmp_path / "stack" / "env")
        yield (
            {k: v or "" for k, v in generated.items()},
            ",".join(f"127.0.0.1:{base + 2 * i}" for i in range(3)),
        )
    finally:
        stack("down", env=env, check=False, timeout=180)


def test_three_kafka_nodes_keep_acks_all_writes_with_one_node_killed(
    three_nodes: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    generated, servers = three_nodes
    assert generated["KAFKA_BOOTSTRAP_SERVERS"] == servers
    rf = int(generated["KAFKA_REPLICATION_FACTOR"])
    min_isr = generated["KAFKA_MIN_INSYNC_REPLICAS"]
    assert (rf, min_isr) == (3, "2"), "KAFKA_BROKERS=3 should generate RF 3, min.insync 2"
    topic = f"acks-all-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=20_000)
    try:
        admin.create_topics(
            [NewTopic(topic, 3, rf, topic_configs={"min.insync.replicas": min_isr})]
        )
        (described,) = admin.describe_topics([topic])
        assert all(len(p["replica_nodes"]) == 3 for p in described["partitions"])
        broker = admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, "2")], config_filter="all"
        )["broker"]["2"]
        for key in (
            "default.replication.factor",
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
        ):
            assert broker[key]["value"] == "3", f"{key} = {broker[key]['value']}"
        assert broker["transaction.state.log.min.isr"]["value"] == "2"
    finally:
        admin.close()

    def produce(value: bytes) -> None:
        producer = KafkaProducer(
            bootstrap_servers=servers, acks="all", retries=10, request_timeout_ms=15_000
        )
        try:
            for partition in range(3):
                producer.send(topic, value, partition=partition).get(timeout=60)
        finally:
            producer.close()

    produce(b"before")
    stack("kill", "kafka2", env=_env_of(tmp_path))
    produce(b"one node down")  # acks=all: the two in-sync replicas that remain suffice

    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        seen: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(seen) < 6 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                seen += [r.value for r in records]
    finally:
        consumer.close()
    assert sorted(seen) == sorted([b"before"] * 3 + [b"one node down"] * 3)


def _env_of(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, STACK_DIR=str(tmp_path / "stack"))
    env.pop("STACK_PORT_OFFSET", None)
    return env
