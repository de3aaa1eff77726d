"""The Flask app in-process against the real PostgreSQL and localstripe."""

from __future__ import annotations

import base64
import threading
from uuid import UUID, uuid4

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from payments.adapters.postgres.repository import PostgresRepository
from payments.bootstrap import bootstrap
from payments.settings import Settings
from tests import support_api

pytestmark = pytest.mark.integration
BODY = {
    "amount_minor": 4200,
    "currency": "usd",
    "description": "integration",
    "metadata": {"suite": "api"},
}


# /metrics wants an operator credential (Basic); this module's app has its own.
OPERATOR = {"Authorization": "Basic " + base64.b64encode(b"ops:it-operator").decode()}


@pytest.fixture(scope="module")
def app(s: Settings, repo: PostgresRepository) -> Flask:
    return create_app(s.model_copy(update={"operator_credentials": "ops:it-operator"}))


@pytest.fixture
def client(app: Flask, s: Settings) -> FlaskClient:
    return support_api.keyed_client(app, s)


@pytest.fixture(scope="module")
def localstripe(s: Settings) -> support_api.LocalStripe:
    return support_api.LocalStripe(s)


def test_create_replay_and_reuse(
    client: FlaskClient, repo: PostgresRepository, localstripe: support_api.LocalStripe
) -> None:
    key = f"it-{uuid4()}"
    first = client.post("/payments", json=BODY, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.json
    payment_id = first.json["id"]
    assert first.json["client_secret"]
    again = client.post("/payments", json=BODY, headers={"Idempotency-Key": key})
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["client_secret"] == first.json["client_secret"]
    other = client.post(
        "/payments", json={**BODY, "amount_minor": 4300}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 409
    assert other.json["type"] == "/problems/idempotency-key-reused"
    assert payment_id not in other.get_data(as_text=True)
    intents = localstripe.intents_for(payment_id)
    assert [i["id"] for i in intents] == [first.json["provider_payment_id"]]
    assert intents[0]["amount"] == 4200
    stored = repo.get(UUID(payment_id))
    assert stored is not None and stored.client_secret == first.json["client_secret"]
    got = client.get(f"/payments/{payment_id}")
    assert got.status_code == 200 and got.json["provider_payment_id"] == intents[0]["id"]


def test_200_concurrent_posts_with_one_key_make_one_row_and_one_intent(
    app: Flask, s: Settings, repo: PostgresRepository, localstripe: support_api.LocalStripe
) -> None:
    key = f"burst-{uuid4()}"
    statuses: list[int] = []
    ids: set[str] = set()
    replayed: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(200)
    with support_api.serve(app) as base:

        def post() -> None:
            barrier.wait()
            r = requests.post(
                f"{base}/payments",
                json=BODY,
                timeout=60,
                headers={"Idempotency-Key": key, **support_api.auth(s)},
            )
            with lock:
                statuses.append(r.status_code)
                if r.status_code == 201:
                    ids.add(r.json()["id"])
                    replayed.append(r.headers.get("Idempotent-Replayed") == "true")
                else:
                    assert r.status_code == 409, r.text
                    assert r.headers["Retry-After"]

        threads = [threading.Thread(target=post) for _ in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(statuses) == 200
    assert set(statuses) <= {201, 409}
    assert len(ids) == 1
    assert replayed.count(False) == 1  # exactly one request created it
    (payment_id,) = ids
    stored = repo.get(UUID(payment_id))
    assert stored is not None and stored.idempotency_key == key
    with repo.pool.connection() as conn:
        rows = conn.execute(
            "SELECT count(*) FROM payments WHERE idempotency_key = %s", (key,)
        ).fetchone()
    assert rows == (1,)
    assert len(localstripe.intents_for(payment_id)) == 1
    print(
        f"\n200 concurrent POSTs: {statuses.count(201)} x 201, {statuses.count(409)} x 409; "
        "1 row, 1 intent"
    )


def test_stripe_unreachable_gives_202_then_worker_finishes(
    s: Settings, repo: PostgresRepository, localstripe: support_api.LocalStripe
) -> None:
    down = s.model_copy(
        update={
            "stripe_api_base": f"http://127.0.0.1:{support_api.free_port()}",
            "stripe_max_retries": 0,
            "stripe_timeout_seconds": 2.0,
        }
    )
    client = support_api.keyed_client(create_app(down), s)
    key = f"down-{uuid4()}"
    r = client.post("/payments", json=BODY, headers={"Idempotency-Key": key})
    assert r.status_code == 202, r.json
    assert r.json["status"] == "pending"
    assert r.json["provider_payment_id"] is None
    assert "Stripe could not be reached" in r.json["pending_reason"]
    payment_id = UUID(r.json["id"])
    worker = bootstrap(s, role="worker")  # as the worker's reconciler does
    try:
        finished = worker.service.finish_creation(payment_id)
    finally:
        worker.close()
    assert finished is not None and finished.provider_payment_id
    assert len(localstripe.intents_for(str(payment_id))) == 1
    # The client retrying with its key now gets the finished payment, no new intent.
    up = support_api.keyed_client(create_app(s), s)
    replay = up.post("/payments", json=BODY, headers={"Idempotency-Key": key})
    assert replay.status_code == 201
    assert replay.json["provider_payment_id"] == finished.provider_payment_id
    assert len(localstripe.intents_for(str(payment_id))) == 1


def test_client_retry_after_202_creates_the_intent(
    s: Settings, localstripe: support_api.LocalStripe
) -> None:
    down = s.model_copy(
        update={
            "stripe_api_base": f"http://127.0.0.1:{support_api.free_port()}",
            "stripe_max_retries": 0,
            "stripe_timeout_seconds": 2.0,
        }
    )
    key = f"retry-{uuid4()}"
    first = support_api.keyed_client(create_app(down), s).post(
        "/payments", json=BODY, headers={"Idempotency-Key": key}
    )
    assert first.status_code == 202
    assert "127.0.0.1" not in first.get_data(as_text=True)  # Stripe's error text is logged only
    second = support_api.keyed_client(create_app(s), s).post(
        "/payments", json=BODY, headers={"Idempotency-Key": key}
    )
    assert second.status_code == 201
    assert second.json["id"] == first.json["id"]
    assert len(localstripe.intents_for(first.json["id"])) == 1


def test_cancel_cancels_the_intent_on_stripe(
    client: FlaskClient, localstripe: support_api.LocalStripe
) -> None:
    created = client.post("/payments", json=BODY, headers={"Idempotency-Key": f"c-{uuid4()}"}).json
    r = client.post(f"/payments/{created['id']}/cancel")
    assert r.status_code == 200
    assert r.json["status"] == "canceled"
    (intent,) = localstripe.intents_for(created["id"])
    assert intent["status"] == "canceled"
    assert client.post(f"/payments/{created['id']}/cancel").json["status"] == "canceled"


def test_confirming_with_a_payment_method_stripe_does_not_know_is_a_402(
    client: FlaskClient,
) -> None:
    created = client.post("/payments", json=BODY, headers={"Idempotency-Key": f"pm-{uuid4()}"})
    r = client.post(
        f"/payments/{created.json['id']}/confirm", json={"payment_method": "pm_nobody_made"}
    )
    assert r.status_code == 402, r.json  # refused by Stripe, not by our validation
    assert r.json["type"] == "/problems/provider-declined"


def test_list_pages_by_status(client: FlaskClient) -> None:
    made = [
        client.post("/payments", json=BODY, headers={"Idempotency-Key": f"l-{uuid4()}"}).json["id"]
        for _ in range(3)
    ]
    seen: list[str] = []
    after = None
    while True:
        query = {"status": "pending", "limit": 50, **({"after": after} if after else {})}
        page = client.get("/payments", query_string=query).json
        assert all(p["status"] == "pending" for p in page["data"])
        seen += [p["id"] for p in page["data"]]
        after = page["next"]
        if not after:
            break
    assert set(made) <= set(seen)


def test_health_ready_and_metrics(app: Flask, client: FlaskClient) -> None:
    anonymous = app.test_client()
    assert anonymous.get("/healthz").json == {"status": "up"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200, ready.json
    assert ready.json == {"status": "ready", "checks": {"primary": "up", "replicas": "up"}}
    text = client.get("/metrics", headers=OPERATOR).data.decode()
    assert "payments_created_total" in text
    assert 'stripe_calls_total{operation="create_intent",outcome="ok"}' in text


def test_a_primary_that_does_not_answer_is_a_503_with_retry_after(s: Settings) -> None:
    nobody = f"postgresql://payments@127.0.0.1:{support_api.free_port()}/payments"
    dead = s.model_copy(update={"database_url": nobody, "db_connect_timeout_seconds": 1})
    r = support_api.keyed_client(create_app(dead), s).post(
        "/payments", json=BODY, headers={"Idempotency-Key": f"dead-{uuid4()}"}
    )
    assert r.status_code == 503, r.json
    assert r.headers["Retry-After"] == "2"
    assert r.json["type"] == "/problems/database-unavailable"
    assert "127.0.0.1" not in r.get_data(as_text=True)


def test_readyz_reports_a_dead_replica(s: Settings) -> None:
    dead = s.model_copy(
        update={
            "database_read_url": f"postgresql://payments@127.0.0.1:"
            f"{support_api.free_port()}/payments"
        }
    )
    r = create_app(dead).test_client().get("/readyz")
    assert r.status_code == 503
    assert r.json == {"status": "not ready", "checks": {"primary": "up", "replicas": "down"}}
    assert "127.0.0.1" not in r.get_data(as_text=True)


@pytest.mark.parametrize(
    ("amount", "currency", "says"),
    [
        (49, "usd", "minimum charge in USD is 0.50 USD"),
        (1_235, "kwd", "last of the three decimals"),
        (1_050, "isk", "whole units only"),
    ],
)
def test_amounts_stripe_would_refuse_get_a_422_naming_the_field_and_store_nothing(
    client: FlaskClient, repo: PostgresRepository, amount: int, currency: str, says: str
) -> None:
    key = f"money-{uuid4()}"
    r = client.post(
        "/payments",
        json={"amount_minor": amount, "currency": currency},
        headers={"Idempotency-Key": key},
    )
    assert r.status_code == 422, r.json
    assert r.content_type.startswith("application/problem+json")
    assert r.json["errors"][0]["field"] == "amount_minor" and says in r.json["detail"]
    with repo.pool.connection() as conn:
        found = conn.execute("SELECT 1 FROM payments WHERE idempotency_key = %s", (key,))
        assert found.fetchone() is None
