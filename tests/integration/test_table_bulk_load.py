"""A worker that lost its RocksDB state rebuilds its open-payments table from the changelog: a
partition far behind is copied in bulk by the worker's store (``streams.store``), a partition
only a little behind is replayed by Faust's own recovery, and either way the table holds exactly
what the changelog says (the last value of each key, nothing a tombstone deleted). Its log is
JSON lines throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from kafka import KafkaAdminClient, KafkaProducer

from payments.domain.status import Status
from payments.settings import Settings
from streams.handlers import OpenEntry, encode
from streams.topics import create_missing_topics
from tests import support_api
from tests.stack_support import ROOT

pytestmark = pytest.mark.integration

FAR_BEHIND = 12_000  # more than the store's bulk-load threshold (10,000 records)
LITTLE_BEHIND = 300


def entry(created_at: float, status: Status = Status.PENDING) -> OpenEntry:
    return OpenEntry(uuid.uuid4(), status, created_at, f"pi_{uuid.uuid4().hex[:20]}", 1999, "usd")


def test_a_worker_without_its_state_rebuilds_the_open_table_from_the_changelog(
    tmp_path: Path,
) -> None:
    settings = Settings()
    run = f"bulk-{uuid.uuid4().hex[:8]}"
    port = support_api.free_port()
    scratch = settings.model_copy(
        update={
            "worker_app_id": run,
            "cdc_topic_prefix": run,
            "status_topic": f"{run}-status",
            "dlq_topic": f"{run}-dlq",
        }
    )
    create_missing_topics(scratch)
    changelog = f"{run}-open-payments-changelog"
    now = time.time()
    far = [entry(now - 86_400 + i) for i in range(FAR_BEHIND)]
    near = [entry(now - 3_600 + i) for i in range(LITTLE_BEHIND)]
    declined, gone = far[0], far[1]
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","), acks="all", linger_ms=20
    )
    for partition, entries in ((0, far), (1, near)):
        for e in entries:
            producer.send(changelog, key=e.key, value=encode(e.to_json()), partition=partition)
    # Later records of the same keys: the first payment was declined, the second became final.
    failed = OpenEntry(
        declined.payment_id,
        Status.FAILED,
        declined.created_at,
        declined.provider_payment_id,
        declined.amount_minor,
        declined.currency,
    )
    producer.send(changelog, key=failed.key, value=encode(failed.to_json()), partition=0)
    producer.send(changelog, key=gone.key, value=None, partition=0)
    producer.flush()
    producer.close()

    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "WORKER_APP_ID": run,
        "CDC_TOPIC_PREFIX": run,
        "STATUS_TOPIC": f"{run}-status",
        "DLQ_TOPIC": f"{run}-dlq",
        "WORKER_DATA_DIR": str(tmp_path / "state"),
        "WORKER_WEB_PORT": str(port),
        "RECONCILE_INTERVAL_SECONDS": "86400",
    }
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [str(ROOT / ".venv/bin/payments-worker"), "worker", "--web-port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    auth = support_api.operator_auth(settings)
    try:

        def open_counts() -> dict[str, int] | None:
            stats = requests.get(f"{url}/stats/", auth=auth, timeout=5).json()
            counts: dict[str, int] = stats["open"]["by_status"]
            return counts if sum(counts.values()) >= FAR_BEHIND + LITTLE_BEHIND - 1 else None

        counts = support_api.wait_for(
            open_counts,
            timeout=180,
            interval=0.5,
            what="the rebuilt open-payments table",
            tolerate=(requests.RequestException,),
        )
        # 12,300 payments, one of them deleted by its tombstone, one declined since.
        assert counts == {"pending": 12_298, "failed": 1}

        def where(e: OpenEntry) -> requests.Response:
            created = datetime.fromtimestamp(e.created_at, UTC).isoformat()
            return requests.get(
                f"{url}/open/{e.payment_id}/", params={"created_at": created}, auth=auth, timeout=5
            )

        assert where(declined).json()["status"] == "failed"
        assert where(gone).status_code == 404
        assert where(far[-1]).json()["status"] == "pending"
        assert where(near[-1]).json()["status"] == "pending"

        lines = log_path.read_text(errors="replace").splitlines()
        # Every line is one JSON object (Faust's, aiokafka's and our own records alike), but
        # Faust's start-up banner (a table of settings, printed once).
        assert [line for line in lines if not _json(line) and line[:1] not in "+|"] == []
        loaded = [r for r in map(_json, lines) if r.get("event") == "table partition bulk loaded"]
        # Only the partition far behind was copied in bulk (its 12,002 records, tombstone
        # included); Faust's own recovery replayed the other one.
        assert [(r["table"], r["partition"], r["records"]) for r in loaded] == [
            ("open-payments", 0, FAR_BEHIND + 2)
        ]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        _delete_scratch_topics(settings, run)


def _json(line: str) -> dict[str, Any]:
    try:
        found = json.loads(line)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _delete_scratch_topics(settings: Settings, prefix: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers.split(","))
    try:
        topics = [t for t in admin.list_topics() if t.startswith(prefix)]
        if topics:
            admin.delete_topics(topics)
    finally:
        admin.close()
