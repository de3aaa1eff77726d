"""The reconciler's place in Stripe's event list, against the real stack.

The workers run with a short reconciliation interval and call Stripe through a recording proxy
(``tests.stripe_proxy``); Stripe's webhooks are lost for the whole module, so only the sweep can
tell the API what happened at Stripe. The timer's sweep stores its cursor in
``reconcile_cursors``; after every worker is SIGKILLed and started again, the first
``events.list`` reads from that cursor, two minutes before it (the overlap the README
documents), every event stream goes on after the event the cursor names, and the payments paid
at Stripe meanwhile are resolved. An event that sits before the cursor but within the overlap
(Stripe's list is eventually consistent: it may show an event after a newer one) is still
applied.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import requests

from payments.settings import Settings
from tests import support_api
from tests.faults.chaos import WebhookSink, worker_names
from tests.faults.standin import StandIn
from tests.stack_support import stack
from tests.stripe_proxy import RecordingProxy

pytestmark = pytest.mark.integration

API = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
# README ("The worker and reconciliation"): each sweep first re-reads the two minutes before its
# cursor.
OVERLAP_SECONDS = 120
INTERVAL_SECONDS = 3
SUCCEEDED = "payment_intent.succeeded"


def start_workers(
    settings: Settings, proxy: RecordingProxy | None, lost: WebhookSink | None = None
) -> None:
    """(Re)start every worker of the layout: reconciling every few seconds through ``proxy``,
    with Stripe's webhooks sent to ``lost``, or as the stack runs them (None)."""
    env = dict(os.environ)
    if proxy is not None:
        env |= {"STRIPE_API_BASE": proxy.url, "RECONCILE_INTERVAL_SECONDS": str(INTERVAL_SECONDS)}
    for name in worker_names(settings):
        stack("stop", name)
        stack("start", name, env=env)
    # After the start: `scripts/stack start` registers the API's endpoint again (a worker needs
    # the stand-in).
    standin = StandIn.of_stack(settings.stripe_api_base, API, settings.webhook_secrets[0])
    standin.register_webhook(lost.url if proxy is not None and lost is not None else None)


@pytest.fixture(scope="module")
def lost() -> Iterator[WebhookSink]:
    """Where the stand-in's webhooks go for the whole module: none reaches the API."""
    with WebhookSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def proxy(settings: Settings, lost: WebhookSink) -> Iterator[RecordingProxy]:
    """Every worker reconciling every few seconds through the proxy; webhooks lost."""
    with RecordingProxy(settings.stripe_api_base) as recording:
        try:
            start_workers(settings, recording, lost)
            yield recording
        finally:
            start_workers(settings, None)


def paid_at_stripe(settings: Settings, lost: WebhookSink) -> dict[str, Any]:
    """A payment made through the API and paid at Stripe, once its webhook is lost: the
    stand-in sends a webhook a second after the event, to the endpoint registered then, and
    ``scripts/stack start`` registers the API's again; so the payment is returned only once
    ``lost`` has swallowed its webhook."""
    r = requests.post(
        f"{API}/payments",
        json={"amount_minor": 4200, "currency": "eur"},
        headers={**support_api.auth(settings), "Idempotency-Key": f"cursor-{uuid.uuid4()}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    payment = dict(r.json())
    status, intent = support_api.LocalStripe(settings).pay(
        payment["provider_payment_id"], "4242424242424242"
    )
    assert (status, intent["status"]) == (200, "succeeded"), intent
    support_api.wait_for(
        lambda: payment["provider_payment_id"] in lost.lost_intents(SUCCEEDED),
        timeout=30,
        what=f"the webhook of {payment['provider_payment_id']} to be lost",
    )
    return payment


def succeeded_event(settings: Settings, intent_id: str) -> dict[str, Any]:
    """The stand-in's ``payment_intent.succeeded`` event of the intent."""
    stripe = support_api.LocalStripe(settings)

    def find() -> dict[str, Any] | None:
        events = stripe.events(SUCCEEDED, created_after=int(time.time()) - 60)
        return next((e for e in events if e["data"]["object"]["id"] == intent_id), None)

    found: dict[str, Any] = support_api.wait_for(find, timeout=30, what=f"{intent_id}'s event")
    return found


def resolved_by_reconciler(settings: Settings, payment_id: str) -> bool:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT p.status::text, e.source::text FROM payments p "
            "JOIN payment_events e ON e.payment_id = p.id WHERE p.id = %s ORDER BY e.id",
            (payment_id,),
        ).fetchall()
    return bool(rows) and rows[-1] == ("succeeded", "reconciler")


def wait_resolved(settings: Settings, payment_id: str) -> None:
    support_api.wait_for(
        lambda: resolved_by_reconciler(settings, payment_id),
        timeout=120,
        interval=0.5,
        what=f"payment {payment_id} succeeded by the reconciler",
    )


def stored_cursor(settings: Settings) -> dict[str, Any]:
    """The sweep's cursor as the worker stored it: the last event id per stream, the newest
    ``created`` seen."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT value FROM reconcile_cursors WHERE name = 'stripe-events'"
        ).fetchone()
    assert row is not None, "no sweep cursor stored"
    return dict(json.loads(row[0]))


def kill_workers(settings: Settings) -> None:
    for name in worker_names(settings):
        result = stack("kill", name)
        assert f"{name}: killed" in result.stdout, result.stdout


def event_lists_since(proxy: RecordingProxy, mark: int) -> list[dict[str, str]]:
    """The worker's ``events.list`` calls after the first ``mark`` requests, each as its query
    (the capability probe, which asks for several ``types`` at once, left out)."""
    with proxy.lock:
        seen = proxy.seen[mark:]
    calls = []
    for s in seen:
        url = urlsplit(s.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/v1/events" and not any(k.startswith("types") for k in query):
            calls.append(query)
    return calls


def resumed_calls(proxy: RecordingProxy, mark: int, cursor: dict[str, Any]) -> list[dict[str, str]]:
    """The ``events.list`` calls since ``mark``, once the sweep went on past the overlap's
    re-read to every stream the cursor names (the re-read alone can resolve a payment)."""

    def every_stream_went_on() -> list[dict[str, str]] | None:
        calls = event_lists_since(proxy, mark)
        went_on = {c.get("type") for c in calls if "starting_after" in c}
        return calls if set(cursor["after"]) <= went_on else None

    found: list[dict[str, str]] = support_api.wait_for(
        every_stream_went_on, timeout=60, what="the sweep to read on past the overlap"
    )
    return found


def assert_resumed_from(cursor: dict[str, Any], calls: list[dict[str, str]]) -> None:
    """The sweep read on from ``cursor``: first the two minutes before it, then each stream it
    names after that stream's stored event, and no stream from further back than the overlap."""
    assert calls, "the restarted workers listed no events"
    assert calls[0].get("created[gt]") == str(cursor["newest"] - OVERLAP_SECONDS), calls[0]
    for stream, last in cursor["after"].items():
        resumed = [c for c in calls if c.get("type") == stream and c.get("starting_after") == last]
        assert resumed, (stream, last, calls)
        earliest = [
            int(c["created[gt]"]) for c in calls if "created[gt]" in c and c["type"] == stream
        ]
        assert min(earliest) >= cursor["newest"] - OVERLAP_SECONDS, (stream, calls)


def test_the_cursor_survives_a_sigkill_and_the_next_sweep_starts_from_it(
    proxy: RecordingProxy, lost: WebhookSink, settings: Settings
) -> None:
    # The timer's sweep (nobody asks for it) resolves a payment whose webhook was lost.
    before = paid_at_stripe(settings, lost)
    wait_resolved(settings, before["id"])
    event = succeeded_event(settings, before["provider_payment_id"])
    support_api.wait_for(
        lambda: stored_cursor(settings)["newest"] >= event["created"],
        what="the sweep's cursor to be stored past the event it applied",
    )

    kill_workers(settings)
    cursor = stored_cursor(settings)  # nothing writes it while the workers are down
    assert cursor["newest"] >= event["created"] and cursor["after"].get(SUCCEEDED), cursor
    meanwhile = paid_at_stripe(settings, lost)
    mark = len(proxy.seen)
    start_workers(settings, proxy, lost)

    wait_resolved(settings, meanwhile["id"])
    assert_resumed_from(cursor, resumed_calls(proxy, mark, cursor))


def test_an_event_before_the_cursor_but_within_the_overlap_is_applied(
    proxy: RecordingProxy, lost: WebhookSink, settings: Settings
) -> None:
    kill_workers(settings)
    late = paid_at_stripe(settings, lost)
    event = succeeded_event(settings, late["provider_payment_id"])
    # As if the last sweep had listed past this event before the list showed it: the cursor
    # (as the worker stores it) names it as the last one seen of its stream.
    cursor = stored_cursor(settings)
    cursor["after"][SUCCEEDED] = event["id"]
    cursor["newest"] = event["created"]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE reconcile_cursors SET value = %s WHERE name = 'stripe-events'",
            (json.dumps(cursor),),
        )
    mark = len(proxy.seen)
    start_workers(settings, proxy, lost)

    # Only the re-read of the two minutes before the cursor can find it.
    wait_resolved(settings, late["id"])
    assert_resumed_from(cursor, resumed_calls(proxy, mark, cursor))
