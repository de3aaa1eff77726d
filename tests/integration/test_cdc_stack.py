"""Issue 3: every change of `payments` on the primary reaches Kafka through Debezium, and the
replicas serve what the primary wrote — including across restarts of Connect and Kafka."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from payments.settings import Settings
from tests.stack_support import CdcTail, insert_payment, stack

pytestmark = pytest.mark.integration


@pytest.fixture
def primary(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def tail(settings: Settings) -> Iterator[CdcTail]:
    cdc = CdcTail(settings)
    yield cdc
    cdc.close()


def test_insert_arrives_as_a_debezium_envelope(
    primary: psycopg.Connection[Any], tail: CdcTail
) -> None:
    payment_id = insert_payment(primary, amount_minor=4242)
    seen = tail.collect([(str(payment_id), "c")], timeout=30)
    envelope = seen[(str(payment_id), "c")]
    assert envelope["before"] is None
    after = envelope["after"]
    assert after["id"] == str(payment_id)
    assert after["amount_minor"] == 4242
    assert after["currency"] == "usd"
    assert after["status"] == "pending"
    assert after["version"] == 1
    assert "client_secret" not in after, "the client secret must not leave the database"
    assert isinstance(envelope["source"]["lsn"], int) and envelope["source"]["lsn"] > 0
    assert isinstance(envelope["source"]["txId"], int)


def test_update_and_delete_arrive_and_a_replica_serves_the_new_row(
    settings: Settings, primary: psycopg.Connection[Any], tail: CdcTail
) -> None:
    payment_id = insert_payment(primary)
    primary.execute(
        "UPDATE payments SET status = 'succeeded', version = version + 1 WHERE id = %s",
        (payment_id,),
    )
    # A replica (libpq multi-host, standby preferred) catches up with the primary.
    deadline = time.monotonic() + 30
    replica_row = None
    with psycopg.connect(settings.database_read_url, autocommit=True) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        while time.monotonic() < deadline:
            replica_row = replica.execute(
                "SELECT status, version FROM payments WHERE id = %s", (payment_id,)
            ).fetchone()
            if replica_row == ("succeeded", 2):
                break
            time.sleep(0.2)
    assert replica_row == ("succeeded", 2)

    primary.execute("DELETE FROM payments WHERE id = %s", (payment_id,))
    ops = [(str(payment_id), op) for op in ("c", "u", "d")]
    seen = tail.collect(ops, timeout=30)
    assert set(seen) == set(ops)
    update = seen[(str(payment_id), "u")]
    assert update["before"]["status"] == "pending"
    assert update["after"]["status"] == "succeeded"
    delete = seen[(str(payment_id), "d")]
    assert delete["after"] is None and delete["before"]["id"] == str(payment_id)


@pytest.mark.parametrize("part", ["connect", "kafka"])
def test_no_change_is_lost_while_a_part_is_killed(
    settings: Settings, primary: psycopg.Connection[Any], part: str
) -> None:
    tail = CdcTail(settings)
    try:
        stack("kill", part)
        written = [insert_payment(primary) for _ in range(20)]
        stack("start", part)
        # Kafka back: Connect's producer reconnects by itself; make sure its task runs.
        stack("start", "connect")
        seen = tail.collect([(str(p), "c") for p in written], timeout=120)
        missing = [p for p in written if (str(p), "c") not in seen]
        assert not missing, f"{len(missing)} of 20 inserts made while {part} was down never arrived"
    finally:
        tail.close()
        stack("up", "connect")
