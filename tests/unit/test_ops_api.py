"""The API's operator endpoints over fakes: the /ops page, the operator credential on /ops,
/ops.json and /metrics, and /metrics answering from what the process keeps."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from api import create_app
from api.bootstrap import build_api_services
from ops.common import ObserveError
from ops.snapshot import Observer
from payments.settings import Settings
from tests.fakes import FakePaymentRepository, FakeStripeGateway, InMemoryStatusEvents
from tests.unit.test_ops import _workers_section, wait_for

OPERATOR = ("ops", "s3cret-ops")
WEBHOOK_SECRET = "whsec_unit"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH = basic(*OPERATOR)


# ----------------------------------------------------------------------------- fakes


class CountingSource:
    """Every source of the observer at once, counting each question and naming its section's
    usual numbers; ``down`` sections raise as an unreachable part does."""

    where = "fake"

    def __init__(self, down: tuple[str, ...] = ()) -> None:
        self.calls: dict[str, int] = {}
        self.down = down
        self.lock = threading.Lock()

    def _ask(self, name: str) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.down:
            raise ObserveError(f"{name} at fake:1 unreachable: [Errno 111] Connection refused")

    def topics(self) -> list[dict[str, Any]]:
        self._ask("topics")
        return [
            {
                "topic": "payment-status-update",
                "partitions": 2,
                "messages": 7,
                "end_offsets": [
                    {"partition": 0, "end_offset": 3},
                    {"partition": 1, "end_offset": 4},
                ],
            }
        ]

    def latest(self, topic: str, n: int) -> list[dict[str, Any]]:
        self._ask("events")
        return []

    def consumer_groups(self) -> list[dict[str, Any]]:
        self._ask("consumer_groups")
        return [
            {
                "group": "payments-worker",
                "protocol_type": "consumer",
                "state": "Stable",
                "members": 2,
                "lag": 4,
                "partitions": [
                    {"topic": "t", "partition": 0, "committed": 1, "end_offset": 5, "lag": 4}
                ],
            }
        ]

    def status(self) -> dict[str, Any]:
        self._ask("connector")
        return {}

    def slots(self) -> list[dict[str, Any]]:
        self._ask("slots")
        return [
            {
                "slot_name": "debezium_payments",
                "slot_type": "logical",
                "plugin": "pgoutput",
                "active": True,
                "wal_status": "reserved",
                "lag_bytes": 192,
                "retained_bytes": 384,
            }
        ]

    def replicas(self) -> list[dict[str, Any]]:
        self._ask("replicas")
        return []

    def workers(self) -> dict[str, Any]:
        self._ask("worker")
        data: dict[str, Any] = _workers_section(ok=True)["data"]
        return data

    def close(self) -> None:
        pass


class RecordingRepository(FakePaymentRepository):
    """The in-memory repository, recording the name of every method called on it."""

    def __init__(self) -> None:
        super().__init__()
        self.called: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        found = super().__getattribute__(name)
        if callable(found) and not name.startswith("_"):
            super().__getattribute__("called").append(name)
        return found


def app_client(
    source: CountingSource | None = None,
    repo: FakePaymentRepository | None = None,
    **settings: Any,
) -> FlaskClient:
    # No `.env`: these tests say which keys exist. Without keys, the development switch (the
    # API refuses to start with neither); the operator endpoints ignore both.
    settings.setdefault("api_auth_disabled", "api_keys" not in settings)
    s = Settings(_env_file=None, stripe_webhook_secret=WEBHOOK_SECRET, **settings)  # type: ignore[call-arg]
    observer: Any = Observer(source, source, source, source) if source else None
    services = build_api_services(
        s,
        repository=repo or FakePaymentRepository(),
        gateway=FakeStripeGateway(),
        observer=observer,
        status_events=InMemoryStatusEvents(),
    )
    return create_app(s, services=services).test_client()


@pytest.fixture
def source() -> CountingSource:
    return CountingSource(down=("connector",))


@pytest.fixture
def client(source: CountingSource) -> Iterator[FlaskClient]:
    c = app_client(source, operator_credentials="ops:s3cret-ops, second:other-pw")
    yield c
    for close in c.application.extensions["payments"].closers:
        close()


# ----------------------------------------------------------------------------- the page


def test_ops_page_shows_the_numbers_a_row_per_worker_and_escapes_errors(
    client: FlaskClient,
) -> None:
    r = client.get("/ops", headers=AUTH)
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="5">' in html
    assert 'data-topic="payment-status-update" data-partition="1">4<' in html
    assert 'class="num group-lag" data-group="payments-worker">4<' in html
    assert 'data-slot="debezium_payments">192<' in html
    # the down part says so, and its error is text, not markup
    assert 'id="section-connector" class="down"' in html
    assert "connector at fake:1 unreachable: [Errno 111] Connection refused" in html
    # one row per worker of the group, each with its partitions and figures
    assert html.count('<tr class="worker ') == 2
    assert 'class="active-partitions" data-worker-url="http://w1">0, 2, 4<' in html
    assert 'class="standby-partitions" data-worker-url="http://w2">0, 2, 4<' in html
    assert 'class="num open-count" data-worker-url="http://w1">7<' in html
    assert 'data-status="failed">failed 2<' in html
    assert 'class="badge bad blocked">BLOCKED<' in html
    # the checks waiting for a retry: how many, and each shown with its attempts and next time
    assert html.count('<tr class="waiting-retry" ') == 1
    assert 'data-worker-url="http://w1" data-count="41">' in html
    assert '<tr class="retry" data-payment-id="p-7"><td class="mono">p-7</td>' in html
    assert '<td class="num attempts">3</td><td class="num next-in">240.0 s</td>' in html


def test_ops_page_escapes_what_the_parts_say() -> None:
    class Hostile(CountingSource):
        def status(self) -> dict[str, Any]:
            raise ObserveError("Kafka Connect at http://c unreachable: <b>refused</b>")

    c = app_client(Hostile(), operator_credentials="ops:s3cret-ops")
    html = c.get("/ops", headers=AUTH).get_data(as_text=True)
    assert "unreachable: &lt;b&gt;refused&lt;/b&gt;" in html
    assert "<b>refused</b>" not in html


def test_ops_json_is_the_same_snapshot(client: FlaskClient, source: CountingSource) -> None:
    r = client.get("/ops.json", headers=AUTH)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    sections = r.get_json()["sections"]
    assert sections["connector"]["ok"] is False
    assert [w["url"] for w in sections["worker"]["data"]["workers"]] == ["http://w1", "http://w2"]
    assert source.calls["worker"] == 1


# ----------------------------------------------------------------------------- the credential

OPERATOR_PATHS = ("/ops", "/ops.json", "/metrics")


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_operator_endpoints_need_the_operator_credential(client: FlaskClient, path: str) -> None:
    for headers in (
        {},
        basic("ops", "wrong"),
        basic("nobody", "s3cret-ops"),
        basic("ops", "other-pw"),  # another login's password
        {"Authorization": "Basic !!not-base64!!"},
        {"Authorization": "Bearer s3cret-ops"},
    ):
        r = client.get(path, headers=headers)
        assert r.status_code == 401, (path, headers)
        assert r.mimetype == "application/problem+json"
        assert r.headers["WWW-Authenticate"] == 'Basic realm="payments-ops"'
        assert "OPERATOR_CREDENTIALS" in r.get_json()["detail"]
    assert client.get(path, headers=AUTH).status_code == 200
    assert client.get(path, headers=basic("second", "other-pw")).status_code == 200


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_operator_endpoints_are_closed_when_no_operator_credential_is_configured(
    source: CountingSource, path: str
) -> None:
    c = app_client(source, operator_credentials="")  # none configured
    for headers in ({}, AUTH):
        r = c.get(path, headers=headers)
        assert r.status_code == 404
        assert r.mimetype == "application/problem+json"
        assert "set OPERATOR_CREDENTIALS" in r.get_json()["detail"]
    assert source.calls == {}  # nothing was collected for a refused request


def test_api_keys_neither_open_nor_block_the_operator_endpoints(source: CountingSource) -> None:
    c = app_client(source, api_keys="acme:k1", operator_credentials="ops:s3cret-ops")
    for path in OPERATOR_PATHS:
        assert c.get(path, headers={"Authorization": "Bearer k1"}).status_code == 401, path
        assert c.get(path, headers=AUTH).status_code == 200, path
    # and the payment endpoints still want the API key, not the operator's
    assert c.get("/payments", headers=AUTH).status_code == 401


# ----------------------------------------------------------------------------- /metrics


def scrape(client: FlaskClient) -> str:
    r = client.get("/metrics", headers=AUTH)
    assert r.status_code == 200
    return r.get_data(as_text=True)


def test_metrics_never_ask_the_database_or_kafka_on_a_scrape() -> None:
    source = CountingSource(down=("connector",))
    repo = RecordingRepository()
    client = app_client(source, repo, operator_credentials="ops:s3cret-ops")
    try:
        scrape(client)  # starts the background refresh
        wait_for(lambda: "ops_snapshot_age_seconds" in scrape(client), "the first snapshot")
        asked_before, repo.called[:] = dict(source.calls), []
        for _ in range(50):
            body = scrape(client)
        assert repo.called == []  # no query, no count per scrape
        assert source.calls == asked_before  # no Kafka, Connect or PostgreSQL call either
        # one refresh, of the gauges' sections only (not the page's topics, events, workers)
        assert asked_before == {"consumer_groups": 1, "connector": 1, "slots": 1, "replicas": 1}
    finally:
        for close in client.application.extensions["payments"].closers:
            close()
    assert 'kafka_consumergroup_lag{group="payments-worker",partition="0",topic="t"} 4.0' in body
    assert 'kafka_consumergroup_lag_sum{group="payments-worker"} 4.0' in body
    assert 'postgres_replication_slot_lag_bytes{slot="debezium_payments",type="logical"} 192.0' in (
        body
    )
    assert 'ops_section_up{section="connector"} 0.0' in body
    assert 'ops_section_up{section="slots"} 1.0' in body
    assert "payments_by_status" not in body


def test_metrics_before_the_first_snapshot_answer_without_ops_gauges() -> None:
    release = threading.Event()

    class Slow(CountingSource):
        def consumer_groups(self) -> list[dict[str, Any]]:
            release.wait(10)
            return super().consumer_groups()

    client = app_client(Slow(), operator_credentials="ops:s3cret-ops")
    try:
        body = scrape(client)
        assert "http_requests_total" in body
        assert "ops_snapshot_age_seconds" not in body and "ops_section_up" not in body
    finally:
        release.set()
        for close in client.application.extensions["payments"].closers:
            close()


def signed_event(event_id: str, kind: str, created: dict[str, Any], status: str) -> dict[str, Any]:
    body = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": kind,
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": created["provider_payment_id"],
                    "object": "payment_intent",
                    "status": status,
                    "amount": created["amount_minor"],
                    "currency": created["currency"],
                    "metadata": {"payment_id": created["id"]},
                }
            },
        }
    )
    ts = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "data": body,
        "headers": {"Stripe-Signature": f"t={ts},v1={mac}"},
        "content_type": "application/json",
    }


def test_metrics_count_what_the_api_did() -> None:
    client = app_client(None, operator_credentials="ops:s3cret-ops")

    def create(key: str) -> dict[str, Any]:
        r = client.post(
            "/payments",
            json={"amount_minor": 2500, "currency": "usd"},
            headers={"Idempotency-Key": key},
        )
        assert r.status_code == 201, r.get_json()
        body: dict[str, Any] = r.get_json()
        return body

    paid, canceled = create("k-1"), create("k-2")
    create("k-1")  # a replay stores nothing
    evt = signed_event("evt_1", "payment_intent.succeeded", paid, "succeeded")
    assert client.post("/webhooks/stripe", **evt).get_json()["outcome"] == "applied"
    assert client.post("/webhooks/stripe", **evt).get_json()["status"] == "duplicate"
    assert client.post(f"/payments/{canceled['id']}/cancel").status_code == 200
    assert client.post(f"/payments/{canceled['id']}/cancel").status_code == 200  # no-op
    late = signed_event("evt_2", "payment_intent.payment_failed", paid, "requires_payment_method")
    assert client.post("/webhooks/stripe", **late).get_json()["outcome"] == "refused"

    body = scrape(client)
    assert "payments_created_total 2.0" in body
    assert 'payments_transitions_total{source="webhook",to="succeeded"} 1.0' in body
    assert 'payments_transitions_total{source="api",to="canceled"} 1.0' in body
    assert 'to="failed"' not in body  # the refused transition was not applied
    assert 'stripe_webhooks_total{outcome="applied",type="payment_intent.succeeded"} 1.0' in body
    assert (
        'stripe_webhooks_total{outcome="refused",type="payment_intent.payment_failed"} 1.0' in body
    )
