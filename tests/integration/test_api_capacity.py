"""The API as ``make up`` runs it (gunicorn, ``gunicorn.conf.py``, ``api/pools.py``), with 4
threads and Stripe holding every call: the requests that call Stripe may take only some of the
threads, so webhooks, ``/metrics`` and reads are still answered while every Stripe call hangs, and
a Stripe-bound request beyond the slots is refused at once (503 busy, ``Retry-After``), nothing
stored. And with no thread of the intake pool left at all, the hooks pool still answers Stripe's
webhooks and the whole API's ``/metrics``."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import requests

from api.pools import HOOKS, INTAKE, Pool, command
from payments.settings import Settings
from tests import support_api

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
THREADS = 4  # gunicorn.conf.py keeps max(2, 4 // 8) = 2 of them from Stripe-bound requests
STRIPE_SLOTS = 2
BODY = {"amount_minor": 2500, "currency": "usd", "description": "capacity"}


@pytest.fixture(scope="module")
def held_stripe(s: Settings) -> Iterator[support_api.StripeProxy]:
    with support_api.StripeProxy(s.stripe_api_base) as proxy:
        yield proxy


@contextmanager
def serving(pool: Pool, env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """One of the API's pools under gunicorn as the stack starts it (``api.pools.command``,
    ``gunicorn.conf.py``), one worker: (base URL, master pid)."""
    port = support_api.free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command(pool, f"127.0.0.1:{port}", workers=1),
            cwd=ROOT,
            env={**env, "API_POOL": pool.name},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # as the stack starts it: API_NICE renices its session only
        )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return requests.get(f"{base}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        support_api.wait_for(healthy, timeout=60, what=f"the {pool.name} pool's /healthz")
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pool_env(
    s: Settings, held_stripe: support_api.StripeProxy, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The pools' environment: Stripe behind the gate, one metrics directory for all of them."""
    env = {
        **os.environ,
        "STRIPE_API_BASE": held_stripe.url,
        "STRIPE_TIMEOUT_SECONDS": "60",  # a held call is not given up on while the test runs
        "API_THREADS": str(THREADS),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("metrics")),
    }
    for name in ("API_STRIPE_SLOTS", "API_RESERVED_THREADS", "DB_POOL_MAX", "API_NICE"):
        env.pop(name, None)  # as gunicorn.conf.py derives them
    return env


@pytest.fixture(scope="module")
def api(pool_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(INTAKE, pool_env, tmp_path_factory.mktemp("intake") / "api.log") as (base, _):
        yield base


def stored(s: Settings, key: str) -> int:
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM payments WHERE idempotency_key = %s", (key,)
        ).fetchone()
        return int(row[0]) if row else 0


def send_succeeded(s: Settings, base: str, payment_id: uuid.UUID) -> requests.Response:
    """A signed ``payment_intent.succeeded`` for ``payment_id`` (unknown here: answered 200 and
    kept in the inbox) to the API at ``base``."""
    event = support_api.intent_event(
        f"evt_capacity_{uuid.uuid4().hex}",
        "payment_intent.succeeded",
        intent_id=f"pi_capacity_{uuid.uuid4().hex}",
        payment_id=str(payment_id),
        status="succeeded",
    )
    return requests.post(
        f"{base}/webhooks/stripe",
        data=event,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": support_api.sign(event, s.webhook_secrets[0]),
        },
        timeout=10,
    )


def test_webhooks_metrics_and_reads_are_answered_while_every_stripe_call_hangs(
    s: Settings, api: str, held_stripe: support_api.StripeProxy
) -> None:
    headers = support_api.auth(s)
    keys = [f"capacity-{uuid.uuid4()}" for _ in range(THREADS)]
    answers: dict[str, requests.Response] = {}

    def create(key: str) -> None:
        answers[key] = requests.post(
            f"{api}/payments", json=BODY, headers={**headers, "Idempotency-Key": key}, timeout=90
        )

    held_stripe.gate.clear()
    try:
        # As many creates as the process has threads: without a reserve all would be at Stripe,
        # and nothing else would be answered until Stripe came back.
        creators = [threading.Thread(target=create, args=(key,)) for key in keys]
        for t in creators:
            t.start()
        support_api.wait_for(
            lambda: (
                held_stripe.in_flight == STRIPE_SLOTS and len(answers) == THREADS - STRIPE_SLOTS
            ),
            timeout=30,
            what=f"{STRIPE_SLOTS} creates held at Stripe and the others answered",
        )
        busy_keys = list(answers)
        for key in busy_keys:
            refused = answers[key]
            assert refused.status_code == 503, refused.text
            assert refused.headers["Content-Type"] == "application/problem+json"
            assert refused.json()["type"] == "/problems/busy"
            assert refused.headers["Retry-After"] == "1"
            assert stored(s, key) == 0  # refused before anything was stored

        # Every kind of request that calls Stripe is refused while the slots are taken ...
        unknown = uuid.uuid4()
        for path, body in (
            (f"/payments/{unknown}/cancel", None),
            (f"/payments/{unknown}/confirm", {"payment_method": "pm_card_visa"}),
        ):
            r = requests.post(f"{api}{path}", json=body, headers=headers, timeout=10)
            assert r.status_code == 503 and r.json()["type"] == "/problems/busy", (path, r.text)

        # ... and everything else is served by the threads kept for it.
        login = support_api.operator_auth(s)
        assert login is not None
        metrics = requests.get(f"{api}/metrics", auth=login, timeout=10)
        assert metrics.status_code == 200
        assert 'payments_api_busy_total{endpoint="/payments"} 2.0' in metrics.text
        read = requests.get(f"{api}/payments/{unknown}", headers=headers, timeout=10)
        assert read.status_code == 404
        hook = send_succeeded(s, api, unknown)
        assert hook.status_code == 200, hook.text
        # All of that was answered while both creates were still held at Stripe.
        assert held_stripe.in_flight == STRIPE_SLOTS
        assert len(answers) == THREADS - STRIPE_SLOTS
    finally:
        held_stripe.gate.set()
    for t in creators:
        t.join(timeout=90)
    assert sorted(r.status_code for r in answers.values()) == [201] * STRIPE_SLOTS + [503] * (
        THREADS - STRIPE_SLOTS
    )
    for key in busy_keys:  # the same request again, now that the slots are free
        create(key)
        assert answers[key].status_code == 201, answers[key].text
    assert [stored(s, key) for key in keys] == [1] * THREADS


def nice_of_workers(master: int) -> set[int]:
    """The CPU priority (nice) of a gunicorn master's workers, as the kernel holds it."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert children, "the pool has no worker"
    return {
        int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) for pid in children
    }


def created_total(metrics_text: str) -> float:
    found = re.search(r"^payments_created_total (\S+)$", metrics_text, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_hooks_pool_answers_webhooks_and_the_whole_apis_metrics_while_intake_is_full(
    s: Settings,
    held_stripe: support_api.StripeProxy,
    pool_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    logs = tmp_path_factory.mktemp("pools")
    # An intake pool with no reserve: every one of its threads may wait on Stripe; and at a
    # lower CPU priority (API_NICE), as a host that must serve webhooks first may run it.
    full_env = {**pool_env, "API_RESERVED_THREADS": "0", "API_NICE": "3"}
    headers = support_api.auth(s)
    login = support_api.operator_auth(s)
    assert login is not None
    keys = [f"pools-{uuid.uuid4()}" for _ in range(THREADS)]
    answers: dict[str, requests.Response] = {}
    with (
        serving(INTAKE, full_env, logs / "intake.log") as (intake, intake_master),
        serving(HOOKS, pool_env, logs / "hooks.log") as (hooks, hooks_master),
    ):
        assert nice_of_workers(intake_master) == {3}
        assert nice_of_workers(hooks_master) == {0}
        before = created_total(requests.get(f"{hooks}/metrics", auth=login, timeout=10).text)

        def create(key: str) -> None:
            answers[key] = requests.post(
                f"{intake}/payments",
                json=BODY,
                headers={**headers, "Idempotency-Key": key},
                timeout=90,
            )

        held_stripe.gate.clear()
        try:
            creators = [threading.Thread(target=create, args=(key,)) for key in keys]
            for t in creators:
                t.start()
            support_api.wait_for(
                lambda: held_stripe.in_flight == THREADS,
                timeout=30,
                what=f"all {THREADS} threads of the intake pool held at Stripe",
            )
            # The intake pool has no thread left: it answers nothing, not even its health.
            with pytest.raises(requests.Timeout):
                requests.get(f"{intake}/healthz", timeout=2)

            hook = send_succeeded(s, hooks, uuid.uuid4())
            assert hook.status_code == 200, hook.text
            assert requests.get(f"{hooks}/metrics", auth=login, timeout=10).status_code == 200
            assert held_stripe.in_flight == THREADS and not answers  # all still held
        finally:
            held_stripe.gate.set()
        for t in creators:
            t.join(timeout=90)
        assert [answers[key].status_code for key in keys] == [201] * THREADS
        # The payments the intake pool stored are in the hooks pool's /metrics: one view.
        after = requests.get(f"{hooks}/metrics", auth=login, timeout=10).text
        assert created_total(after) == before + THREADS
    assert [stored(s, key) for key in keys] == [1] * THREADS
