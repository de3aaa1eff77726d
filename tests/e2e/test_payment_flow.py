"""A payment through the running API (gunicorn on :8000), paid on localstripe, settled by
localstripe's real signed webhook. Needs the whole stack (`scripts/stack up`)."""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID, uuid4

import pytest
import requests

from payments.adapters.postgres.repository import PostgresRepository
from payments.domain.status import Source, Status
from payments.settings import Settings
from tests import support_api
from tests.stack_support import CdcTail

pytestmark = pytest.mark.e2e
API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
SUCCEEDS = "4242424242424242"
DECLINED_WHEN_CHARGED = "4000000000000341"


@pytest.fixture(scope="module")
def api(s: Settings) -> requests.Session:
    session = requests.Session()
    session.headers.update(support_api.auth(s))
    ready = session.get(f"{API}/readyz", timeout=10)
    assert ready.status_code == 200, f"API at {API} not ready: {ready.text}"
    return session


def create(api: requests.Session, amount: int) -> dict[str, Any]:
    r = api.post(
        f"{API}/payments",
        timeout=30,
        headers={"Idempotency-Key": f"e2e-{uuid4()}"},
        json={"amount_minor": amount, "currency": "usd", "metadata": {"e2e": "yes"}},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert body["client_secret"] and body["provider_payment_id"]
    return body


def status_of(api: requests.Session, payment_id: str) -> str:
    r = api.get(f"{API}/payments/{payment_id}", timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def test_test_card_payment_succeeds_through_the_real_webhook(
    api: requests.Session, s: Settings, repo: PostgresRepository
) -> None:
    tail = CdcTail(s, topic=s.status_topic)
    try:
        payment = create(api, 2000)
        status, intent = support_api.LocalStripe(s).pay(payment["provider_payment_id"], SUCCEEDS)
        assert status == 200, intent
        assert intent["status"] == "succeeded"
        support_api.wait_for(lambda: status_of(api, payment["id"]) == "succeeded", timeout=60)
        emitted = tail.events_for(payment["id"], timeout=60)
    finally:
        tail.close()
    (event,) = repo.events(UUID(payment["id"]))
    assert (event.from_status, event.to_status, event.source) == (
        Status.PENDING,
        Status.SUCCEEDED,
        Source.WEBHOOK,
    )
    assert event.provider_event_id and event.provider_event_id.startswith("evt_")
    # The status event names the tenant whose key made the payment (the key this test sends).
    tenant = support_api.tenants(s)[0] if not s.api_auth_disabled else "dev"
    assert [(e["status"], e["tenant_id"], e["amount_minor"]) for e in emitted] == [
        ("succeeded", tenant, 2000)
    ]


def test_declining_card_ends_failed(
    api: requests.Session, s: Settings, repo: PostgresRepository
) -> None:
    payment = create(api, 3000)
    status, error = support_api.LocalStripe(s).pay(
        payment["provider_payment_id"], DECLINED_WHEN_CHARGED
    )
    assert status == 402, error
    support_api.wait_for(lambda: status_of(api, payment["id"]) == "failed", timeout=60)
    got = api.get(f"{API}/payments/{payment['id']}", timeout=10).json()
    assert got["failure_code"]
    (event,) = repo.events(UUID(payment["id"]))
    assert (event.to_status, event.source) == (Status.FAILED, Source.WEBHOOK)


def test_200_concurrent_posts_to_the_live_api_make_one_payment(
    api: requests.Session, s: Settings, repo: PostgresRepository
) -> None:
    import threading

    key = f"e2e-burst-{uuid4()}"
    body = {"amount_minor": 1234, "currency": "usd"}
    answers: list[tuple[int, str | None, bool]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(200)

    def post() -> None:
        barrier.wait()
        r = requests.post(
            f"{API}/payments",
            json=body,
            timeout=120,
            headers={"Idempotency-Key": key, **api.headers},
        )
        with lock:
            answers.append(
                (r.status_code, r.json().get("id"), r.headers.get("Idempotent-Replayed") == "true")
            )

    threads = [threading.Thread(target=post) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = [a[0] for a in answers]
    assert len(codes) == 200 and set(codes) <= {201, 409}, codes
    created = [a for a in answers if a[0] == 201]
    assert len({a[1] for a in created}) == 1
    assert sum(1 for a in created if not a[2]) == 1
    (payment_id,) = {a[1] for a in created}
    stored = repo.get(UUID(str(payment_id)))
    assert stored is not None and stored.idempotency_key == key
    assert len(support_api.LocalStripe(s).intents_for(str(payment_id))) == 1
