"""The running stack keeps its secrets and its customers' personal data where they belong:

* the generated secrets live in .env only (mode 600, gitignored), in no tracked file, and the
  stack's own files hold no literal password;
* the application role is neither superuser nor replication; Debezium reads only what it
  streams; only the replicator role may stream the cluster physically;
* Kafka Connect shows and stores the connector's login as a placeholder, never the password;
* a change of a payment reaches the CDC topic without the customer's email, the description,
  the metadata or the client secret.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import requests
from kafka import KafkaConsumer, TopicPartition

from payments.settings import Settings
from tests.stack_support import ROOT, CdcTail, generated_env, secret_values, stack_dir

pytestmark = pytest.mark.integration

# A credential written in clear: a URL with a password, SQL's PASSWORD with a quoted literal,
# PGPASSWORD set to a value, a connector password that is not a config-provider reference,
# Stripe keys with a body.
LITERAL_PASSWORD = [
    re.compile(r"postgres(?:ql)?://[^/:@\s'\"]+:(?![$%{])[^@\s'\"/]+@"),
    re.compile(r"PASSWORD\s+'(?!\{)[^']+'"),
    re.compile(r"PGPASSWORD[=:]\s*(?![$\"'{])\S+"),
    re.compile(r"\"database\.password\"\s*:\s*\"(?!\$\{(?:env|file):)"),
    re.compile(r"\b(?:whsec|sk_test|sk_live)_[A-Za-z0-9]{6,}"),
]
# What a test may write in clear: a value that says it is a placeholder, and these two public
# values, which are no one's secret.
PLACEHOLDER = "placeholder"
PUBLIC_VALUES = {
    "whsec_localstripe": "the old well-known local default; tests prove it is refused",
    "sk_test_standin": "the fault suite's key for its own stand-in, which takes any key",
}


def literal_credentials(line: str) -> list[str]:
    """The credentials written in clear on ``line`` that are not placeholders."""
    found = []
    for rx in LITERAL_PASSWORD:
        for match in rx.finditer(line):
            text = match.group(0)
            if PLACEHOLDER in text.lower() or any(v in text for v in PUBLIC_VALUES):
                continue
            found.append(text)
    return found


def tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()]


# ------------------------------------------------------------------------------ secrets


def test_generated_secrets_live_in_a_private_ignored_env_file() -> None:
    env = generated_env()
    path = ROOT / ".env"
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600, f".env is {oct(mode)}, anyone on the machine can read the secrets"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, ".env is not gitignored"
    missing = [n for n in ("POSTGRES_PASSWORD", "PAYMENTS_DB_PASSWORD", "API_KEYS") if not env[n]]
    assert not missing, f".env lacks {missing}"


def test_no_generated_secret_is_in_any_tracked_file() -> None:
    secrets = secret_values(generated_env())
    assert len(secrets) >= 9, "fewer generated secrets than expected"
    leaks = []
    for path in tracked_files():
        text = path.read_bytes().decode("utf-8", errors="replace")
        leaks += [f"{path.relative_to(ROOT)}" for secret in secrets if secret in text]
    assert not leaks, f"a generated secret is written in tracked files: {sorted(set(leaks))}"


def test_no_tracked_file_holds_a_literal_password() -> None:
    """Every file git tracks (code, tests, docs, the stack's scripts): a password or key in
    clear is a placeholder that says so, or one of the public values above."""
    found, scanned = [], 0
    for path in tracked_files():
        scanned += 1
        rel = str(path.relative_to(ROOT))
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            found += [f"{rel}:{n}: {text}" for text in literal_credentials(line)]
    assert scanned > 100, f"only {scanned} tracked files"
    assert not found, "literal credentials:\n" + "\n".join(found)


def test_the_scan_finds_what_it_is_for() -> None:
    # Assembled here, so that this file does not hold what the scan above must not find.
    pw, key = "hunter22", "4eC39HqLyjWDarjtT1zdp7dc"
    assert literal_credentials(f'DATABASE_URL="postgresql://payments:{pw}@db/payments"')
    assert literal_credentials(f"ALTER ROLE x PASSWORD '{pw}'")
    assert literal_credentials(f"PGPASSWORD={pw} psql")
    assert literal_credentials('"database.password": ' + f'"{pw}"')
    assert literal_credentials(f"key = 'sk_live_{key}'")
    assert not literal_credentials('"database.password": "${env:DEBEZIUM_DB_PASSWORD}"')
    assert not literal_credentials(f"postgresql://payments:{PLACEHOLDER}-1@127.0.0.1/payments")


# ------------------------------------------------------------------------------ roles


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
        yield conn


def test_the_application_role_is_neither_superuser_nor_replication(
    app: psycopg.Connection[Any],
) -> None:
    row = app.execute(
        "SELECT current_user, rolsuper, rolreplication, rolcreaterole, rolcreatedb, "
        "pg_has_role(current_user, 'pg_monitor', 'member') FROM pg_roles "
        "WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    user, superuser, replication, createrole, createdb, monitor = row
    assert user == "payments"
    assert not superuser, "the app role is a superuser"
    assert not replication, "the app role may replicate the whole cluster"
    assert not createrole and not createdb
    assert monitor, "the /ops page needs pg_monitor for pg_stat_replication"
    owner = app.execute(
        "SELECT pg_get_userbyid(pubowner) FROM pg_publication WHERE pubname = 'payments_pub'"
    ).fetchone()
    assert owner == ("payments",), "payments_pub should be the app role's (it owns the tables)"


def test_debezium_reads_only_what_it_streams(app: psycopg.Connection[Any]) -> None:
    role = app.execute(
        "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = 'debezium'"
    ).fetchone()
    assert role == (False, True)

    def may(table: str, right: str) -> bool:
        row = app.execute("SELECT has_table_privilege('debezium', %s, %s)", (table, right))
        return bool(row.fetchone()[0])  # type: ignore[index]

    assert may("payments", "SELECT") and may("dbz_heartbeat", "SELECT")
    assert may("dbz_heartbeat", "UPDATE"), "the heartbeat action query needs UPDATE"
    for right in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
        assert not may("payments", right), f"debezium may {right} payments"
    for table in ("payment_events", "webhook_events", "reconcile_cursors", "schema_migrations"):
        assert not may(table, "SELECT"), f"debezium may read {table}"


def test_only_the_replicator_may_stream_the_cluster(settings: Settings) -> None:
    env = generated_env()
    primary = urlsplit(settings.database_url)
    common = {"host": primary.hostname, "port": primary.port, "connect_timeout": 5}
    # Debezium's login cannot open a physical replication connection (pg_hba.conf).
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(
            user="debezium", password=env["DEBEZIUM_DB_PASSWORD"], replication="true", **common
        ).close()
    # The replicator cannot read any database.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            user="replicator", password=env["REPLICATOR_DB_PASSWORD"], dbname="payments", **common
        ).close()


# ------------------------------------------------------------------------------ Connect


def test_connect_shows_and_stores_the_connector_login_as_a_placeholder(
    settings: Settings,
) -> None:
    password = generated_env()["DEBEZIUM_DB_PASSWORD"]
    name, base = settings.cdc_connector_name, settings.kafka_connect_url.rstrip("/")
    status = requests.get(f"{base}/connectors/{name}/status", timeout=10).json()
    assert status["connector"]["state"] == "RUNNING", "the login did not resolve in Connect"
    assert all(t["state"] == "RUNNING" for t in status["tasks"]), status
    config = requests.get(f"{base}/connectors/{name}/config", timeout=10).json()
    assert config["database.password"] == "${env:DEBEZIUM_DB_PASSWORD}"
    assert config["database.user"] == "${env:DEBEZIUM_DB_USER}"
    for path in (f"/connectors/{name}/config", f"/connectors/{name}", f"/connectors/{name}/tasks",
                 "/connectors?expand=info&expand=status"):  # fmt: skip
        body = requests.get(f"{base}{path}", timeout=10).text
        assert password not in body, f"GET {path} shows the database password"

    # Connect's config topic holds what it stored for the connector and its task.
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    try:
        tp = TopicPartition("connect-configs", 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        stored: list[bytes] = []
        while consumer.position(tp) < end:
            for records in consumer.poll(timeout_ms=1000).values():
                stored += [r.value or b"" for r in records]
    finally:
        consumer.close()
    blob = b"\n".join(stored)
    assert b"${env:DEBEZIUM_DB_PASSWORD}" in blob, "connect-configs holds no connector config"
    assert password.encode() not in blob, "Connect stored the database password in Kafka"
    log = stack_dir() / "logs" / "connect.log"
    assert password not in log.read_text(errors="replace"), f"{log} shows the password"


# ------------------------------------------------------------------------------ PII


def test_a_change_reaches_the_topic_without_personal_data(
    settings: Settings, app: psycopg.Connection[Any]
) -> None:
    tail = CdcTail(settings)
    payment_id = uuid.uuid4()
    email = f"ada-{payment_id.hex[:8]}@example.com"
    try:
        app.execute(
            "INSERT INTO payments (id, idempotency_key, request_hash, amount_minor, currency, "
            "customer_email, description, metadata, client_secret) "
            "VALUES (%s, %s, 'test', 1999, 'usd', %s, 'Order 1042 for Ada Lovelace', "
            "%s::jsonb, %s)",
            (
                payment_id,
                f"pii-{payment_id}",
                email,
                json.dumps({"shipping_address": "12 Analytical Row"}),
                f"pi_x_secret_{payment_id.hex}",
            ),
        )
        app.execute(
            "UPDATE payments SET status = 'succeeded', version = version + 1 WHERE id = %s",
            (payment_id,),
        )
        wanted = [(str(payment_id), "c"), (str(payment_id), "u")]
        seen = tail.collect(wanted, timeout=60)
    finally:
        tail.close()
    assert set(seen) == set(wanted), f"the changes did not arrive: {sorted(seen)}"
    for (_, op), envelope in seen.items():
        rows = [envelope["after"]] + ([envelope["before"]] if op == "u" else [])
        for row in rows:
            assert row["amount_minor"] == 1999 and row["status"] in {"pending", "succeeded"}
            for column in ("customer_email", "description", "metadata", "client_secret"):
                assert column not in row, f"{column} is on the CDC topic ({op})"
        raw = json.dumps(envelope)
        for value in (email, "Ada Lovelace", "Analytical Row", payment_id.hex + '"'):
            assert value not in raw, f"{value!r} reached the CDC topic"
