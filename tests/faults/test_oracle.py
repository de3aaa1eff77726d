"""The fault suite's oracle on made-up evidence: it must say nothing about a faithful run and
name every kind of fault it is meant to catch (a suite that cannot fail proves nothing)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from tests.faults import oracle

PID = "11111111-1111-1111-1111-111111111111"


@pytest.fixture
def stack_up() -> None:
    """No server here: these tests read made-up evidence (the suite's conftest asks every
    test under tests/faults for the running stack)."""


INTENT = "pi_own"


def intent(status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "id": INTENT,
        "status": status,
        "amount": 1999,
        "currency": "eur",
        "metadata": {"payment_id": PID},
        "cancellation_reason": None,
        "last_payment_error": None,
        **extra,
    }


def row(status: str = "succeeded", **extra: Any) -> oracle.Row:
    fields: dict[str, Any] = {
        "id": PID,
        "key": "k-1",
        "status": status,
        "amount_minor": 1999,
        "currency": "eur",
        "provider_payment_id": INTENT,
        "age_seconds": 500.0,
        **extra,
    }
    return oracle.Row(**fields)


def event(version: int, before: str, after: str, **extra: Any) -> oracle.Event:
    body = {
        "event_id": f"{PID}:{version}",
        "payment_id": PID,
        "tenant_id": "t1",
        "status": after,
        "previous_status": before,
        "amount_minor": 1999,
        "currency": "eur",
        "provider_payment_id": INTENT,
        "source": "webhook",
        "version": version,
        **extra,
    }
    headers = (
        ("ce_id", f"{PID}:{version}".encode()),
        ("ce_type", f"payments.payment.{after}".encode()),
        ("ce_subject", PID.encode()),
    )
    return oracle.Event(PID, json.dumps(body).encode(), headers)


def judge(
    rows: list[oracle.Row],
    intents: list[dict[str, Any]],
    audit: list[oracle.Audit],
    changes: list[oracle.Change],
    events: list[oracle.Event],
) -> oracle.Verdict:
    return oracle.judge(
        {r.id: r for r in rows},
        intents,
        audit,
        {(c.payment_id, c.version): c for c in changes},
        events,
        asked={"k-1": (1999, "eur")},
        ttl_seconds=180,
        tenant="t1",
    )


PAID = (
    [oracle.Audit(PID, "pending", "succeeded", "webhook", 3)],
    [oracle.Change(PID, 3, "pending", "succeeded")],
    [event(3, "pending", "succeeded")],
)


def findings(v: oracle.Verdict) -> dict[str, Any]:
    kinds = [
        "wrong_status",
        "wrong_money",
        "orphan_intents",
        "duplicate_intents",
        "no_intent",
        "open_past_ttl",
        "audit_wrong",
        "illegal",
        "writes_without_audit",
        "lost_events",
        "wrong_events",
        "wrong_headers",
        "events_without_change",
        "inconsistent_duplicates",
    ]
    found = {k: getattr(v, k) for k in kinds if getattr(v, k)}
    if v.duplicate_events:
        found["duplicate_events"] = v.duplicate_events
    return found


@pytest.mark.parametrize(
    ("stripe", "ours"),
    [
        (intent("succeeded"), "succeeded"),
        (intent("canceled", cancellation_reason="abandoned"), "expired"),
        (intent("canceled", cancellation_reason="requested_by_customer"), "canceled"),
        (intent("canceled"), "canceled"),
        (intent("requires_payment_method", last_payment_error={"code": "x"}), "failed"),
        (intent("requires_payment_method"), "pending"),
        (intent("requires_action"), "pending"),
        (None, "expired"),
    ],
)
def test_stripes_story_in_our_words(stripe: dict[str, Any] | None, ours: str) -> None:
    assert oracle.expected_status(stripe) == ours


def test_a_faithful_run_has_no_findings() -> None:
    assert findings(judge([row()], [intent()], *PAID)) == {}


def test_a_wrong_mapping_is_a_wrong_final_state() -> None:
    """Expired in the database, but Stripe's intent was canceled by the customer."""
    audit = [oracle.Audit(PID, "pending", "expired", "expiry", 3)]
    changes = [oracle.Change(PID, 3, "pending", "expired")]
    events = [event(3, "pending", "expired")]
    stripe = intent("canceled", cancellation_reason="requested_by_customer")
    found = findings(judge([row("expired")], [stripe], audit, changes, events))
    assert set(found) == {"wrong_status", "audit_wrong", "wrong_events"}


def test_money_and_intent_are_compared_with_stripes() -> None:
    found = findings(judge([row(amount_minor=1998)], [intent()], *PAID))
    assert set(found) == {"wrong_money"}
    found = findings(
        judge(
            [row()],
            [intent()],
            PAID[0],
            PAID[1],
            [event(3, "pending", "succeeded", amount_minor=5)],
        )
    )
    assert set(found) == {"wrong_events"}


def test_every_intent_counts_metadata_or_not() -> None:
    no_metadata = {**intent(), "metadata": {}}
    assert findings(judge([row()], [no_metadata], *PAID)) == {}
    stray = {**intent(), "id": "pi_stray", "metadata": {}}
    found = findings(judge([row()], [intent(), stray], *PAID))
    assert found == {"orphan_intents": ["pi_stray"]}
    second = {**intent(), "id": "pi_second"}
    assert set(findings(judge([row()], [intent(), second], *PAID))) == {"duplicate_intents"}


def test_a_lost_event_is_counted() -> None:
    found = findings(judge([row()], [intent()], PAID[0], PAID[1], []))
    assert found["lost_events"] == [f"{PID} v3"]


def test_an_event_with_no_change_behind_it_is_counted() -> None:
    extra = event(5, "succeeded", "failed")
    found = findings(judge([row()], [intent()], PAID[0], PAID[1], [*PAID[2], extra]))
    assert found["events_without_change"] == [f"{PID} v5"]


def test_a_status_write_without_its_audit_row_is_seen() -> None:
    found = findings(judge([row()], [intent()], [], PAID[1], PAID[2]))
    assert found["writes_without_audit"] == [f"{PID} v3 pending -> succeeded"]
    assert "audit_wrong" in found


def test_duplicates_are_counted_and_must_be_the_same_event() -> None:
    same = findings(judge([row()], [intent()], PAID[0], PAID[1], [*PAID[2], PAID[2][0]]))
    assert same == {"duplicate_events": 1}
    other = event(3, "pending", "succeeded", source="reconciler")
    differ = findings(judge([row()], [intent()], PAID[0], PAID[1], [*PAID[2], other]))
    assert differ["inconsistent_duplicates"] == [f"{PID}:3"]


def test_a_broken_chain_of_events_is_wrong() -> None:
    """failed -> succeeded without the pending -> failed before it: an event went missing."""
    audit = [
        oracle.Audit(PID, "pending", "failed", "webhook", 2),
        oracle.Audit(PID, "failed", "succeeded", "reconciler", 4),
    ]
    changes = [
        oracle.Change(PID, 2, "pending", "failed"),
        oracle.Change(PID, 4, "failed", "succeeded"),
    ]
    found = findings(judge([row()], [intent()], audit, changes, [event(4, "failed", "succeeded")]))
    assert set(found) == {"lost_events", "wrong_events"}


def test_leaving_a_final_status_is_illegal() -> None:
    audit = [
        oracle.Audit(PID, "pending", "canceled", "api", 2),
        oracle.Audit(PID, "canceled", "succeeded", "webhook", 3),
    ]
    changes = [
        oracle.Change(PID, 2, "pending", "canceled"),
        oracle.Change(PID, 3, "canceled", "succeeded"),
    ]
    events = [event(2, "pending", "canceled"), event(3, "canceled", "succeeded")]
    found = findings(judge([row()], [intent()], audit, changes, events))
    assert set(found) == {"illegal"}


def test_missing_headers_and_tenant_are_wrong() -> None:
    bare = replace(PAID[2][0], headers=())
    assert set(findings(judge([row()], [intent()], PAID[0], PAID[1], [bare]))) == {"wrong_headers"}
    body = json.loads(PAID[2][0].value)
    del body["tenant_id"]
    untenanted = replace(PAID[2][0], value=json.dumps(body).encode())
    assert set(findings(judge([row()], [intent()], PAID[0], PAID[1], [untenanted]))) == {
        "wrong_events"
    }


def test_an_open_payment_past_its_ttl_is_counted() -> None:
    waiting = intent("requires_payment_method")
    found = findings(judge([row("pending")], [waiting], [], [], []))
    assert set(found) == {"open_past_ttl"}
