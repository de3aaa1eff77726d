"""The fault suite's oracle: what each payment must end as, from Stripe's side of the story,
and the comparison of the database, the audit trail, the change stream and the status events
with it.

Nothing here comes from the code under test: the meaning of a PaymentIntent, the statuses that
are final and the shape of an event are written down below, from Stripe's documentation and
the README's status rules. A wrong rule in the product makes this disagree.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Our statuses that are never left (README, Statuses: succeeded, canceled, expired are final).
FINAL = frozenset({"succeeded", "canceled", "expired"})
STATUSES = frozenset({"pending", "succeeded", "failed", "canceled", "expired"})
# Intent statuses in which Stripe still waits for the customer (or the bank).
IN_FLIGHT = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action", "processing"}
)
# The reason our expiry gives Stripe when it cancels an abandoned payment's intent.
EXPIRY_REASON = "abandoned"


def expected_status(intent: Mapping[str, Any] | None) -> str:
    """What the payment of ``intent`` must say, from what Stripe says about the intent.

    | Stripe's intent                                        | our payment |
    |--------------------------------------------------------|-------------|
    | ``succeeded``                                          | succeeded   |
    | ``canceled``, ``cancellation_reason`` ``abandoned``    | expired     |
    | ``canceled``, any other reason (or none)               | canceled    |
    | ``requires_payment_method`` with a last_payment_error  | failed      |
    | still waiting for the customer (no error)              | pending     |
    | no intent at all (Stripe never heard of the payment)   | expired     |

    The last row: nobody could ever pay such a payment, so once its TTL has passed it must be
    expired (the suite waits past every payment's TTL before judging).
    """
    if intent is None:
        return "expired"
    status = intent["status"]
    if status == "succeeded":
        return "succeeded"
    if status == "canceled":
        return "expired" if intent.get("cancellation_reason") == EXPIRY_REASON else "canceled"
    if status == "requires_payment_method" and intent.get("last_payment_error"):
        return "failed"
    if status in IN_FLIGHT:
        return "pending"
    raise AssertionError(f"intent {intent['id']} is {status!r}: the suite has no story for it")


@dataclass(frozen=True)
class Row:
    """A payment as the primary holds it at the end."""

    id: str
    key: str
    status: str
    amount_minor: int
    currency: str
    provider_payment_id: str | None
    age_seconds: float


@dataclass(frozen=True)
class Audit:
    """One ``payment_events`` row."""

    payment_id: str
    from_status: str | None
    to_status: str
    source: str
    version: int


@dataclass(frozen=True)
class Change:
    """A status change as Debezium saw it in the WAL (``before`` and ``after`` of an update)."""

    payment_id: str
    version: int
    before: str
    after: str


@dataclass(frozen=True)
class Event:
    """One record on ``payment-status-update`` (a duplicate is a second ``Event``)."""

    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @property
    def body(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.value)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    @property
    def event_id(self) -> str:
        return str(self.body.get("event_id"))

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace")
        return None


def cdc_changes(records: Iterable[Any], ids: set[str]) -> dict[tuple[str, int], Change]:
    """Status changes of ``ids`` on the change topic, one per (payment, version) whatever the
    replays."""
    found: dict[tuple[str, int], Change] = {}
    for record in records:
        try:
            envelope = json.loads(record.value)
            before, after = envelope.get("before") or {}, envelope.get("after") or {}
            pid = str(after.get("id"))
            if pid not in ids or envelope.get("op") != "u":
                continue
            if before.get("status") == after.get("status"):
                continue
            change = Change(pid, int(after["version"]), str(before["status"]), str(after["status"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not a Debezium envelope (the suite's malformed record, for one)
        found[(change.payment_id, change.version)] = change
    return found


@dataclass
class Verdict:
    """Everything the suite found, by kind; each list names the payments or events at fault."""

    expected: dict[str, str] = field(default_factory=dict)  # payment id -> expected status
    intents_of: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    wrong_status: list[str] = field(default_factory=list)
    wrong_money: list[str] = field(default_factory=list)
    orphan_intents: list[str] = field(default_factory=list)
    duplicate_intents: list[str] = field(default_factory=list)
    no_intent: list[str] = field(default_factory=list)
    open_past_ttl: list[str] = field(default_factory=list)
    audit_wrong: list[str] = field(default_factory=list)
    illegal: list[str] = field(default_factory=list)
    writes_without_audit: list[str] = field(default_factory=list)
    lost_events: list[str] = field(default_factory=list)
    wrong_events: list[str] = field(default_factory=list)
    wrong_headers: list[str] = field(default_factory=list)
    events_without_change: list[str] = field(default_factory=list)
    duplicate_events: int = 0
    inconsistent_duplicates: list[str] = field(default_factory=list)
    status_changes: int = 0
    events_seen: int = 0


def judge(
    rows: Mapping[str, Row],
    intents: Iterable[Mapping[str, Any]],
    audit: Iterable[Audit],
    changes: Mapping[tuple[str, int], Change],
    events: Iterable[Event],
    *,
    asked: Mapping[str, tuple[int, str]],
    ttl_seconds: float,
    tenant: str | None,
) -> Verdict:
    """Compare every payment of the run (``rows``, by payment id) with Stripe.

    ``intents``: every intent the stand-in made during the run (metadata or not);
    ``asked``: idempotency key -> (amount, currency) the customer asked for;
    ``tenant``: the tenant the suite's API key belongs to (None: the API has no keys).
    """
    v = Verdict()
    by_intent = {r.provider_payment_id: r for r in rows.values() if r.provider_payment_id}
    intents_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for intent in intents:
        named = (intent.get("metadata") or {}).get("payment_id")
        row = rows.get(str(named)) if named else None
        row = row or by_intent.get(intent["id"])
        if row is None:
            v.orphan_intents.append(intent["id"])
        else:
            intents_of[row.id].append(dict(intent))
    v.intents_of = dict(intents_of)

    # The database, against Stripe.
    for row in rows.values():
        found = intents_of.get(row.id, [])
        if len(found) > 1:
            v.duplicate_intents.append(row.id)
        own = next((i for i in found if i["id"] == row.provider_payment_id), None)
        if own is None and found:
            own = found[0]
        if own is None:
            v.no_intent.append(row.id)
        expected = expected_status(own)
        v.expected[row.id] = expected
        if row.status != expected:
            v.wrong_status.append(f"{row.id} is {row.status}, Stripe says {expected}")
        if own is not None and (
            row.amount_minor != own["amount"]
            or row.currency != own["currency"]
            or row.provider_payment_id != own["id"]
        ):
            v.wrong_money.append(
                f"{row.id}: {row.amount_minor} {row.currency} {row.provider_payment_id} stored, "
                f"{own['amount']} {own['currency']} {own['id']} at Stripe"
            )
        if row.key in asked and asked[row.key] != (row.amount_minor, row.currency):
            v.wrong_money.append(f"{row.id}: customer asked {asked[row.key]}, stored {row}")
        if row.status not in FINAL and row.age_seconds > ttl_seconds:
            v.open_past_ttl.append(f"{row.id} still {row.status} at {row.age_seconds:.0f} s")

    # The audit trail: a chain from pending to the expected status, never leaving a final one.
    trail: dict[str, list[Audit]] = defaultdict(list)
    for a in audit:
        trail[a.payment_id].append(a)
    for pid, steps in trail.items():
        v.illegal += [
            f"{pid} v{a.version}: {a.from_status} -> {a.to_status}"
            for a in steps
            if a.from_status in FINAL and a.from_status != a.to_status
        ]
    for pid, expected in v.expected.items():
        steps = trail.get(pid, [])
        path = ["pending"] + [a.to_status for a in steps]
        chained = all(a.from_status == prev for a, prev in zip(steps, path, strict=False))
        if not chained or path[-1] != expected:
            v.audit_wrong.append(f"{pid}: audit {_trail(steps)}, Stripe says {expected}")
    audited = {(a.payment_id, a.version): a.to_status for steps in trail.values() for a in steps}

    # The change stream: each status change of the database has its audit row.
    v.status_changes = len(changes)
    for (pid, version), change in changes.items():
        if audited.get((pid, version)) != change.after:
            v.writes_without_audit.append(f"{pid} v{version} {change.before} -> {change.after}")

    # The events: exactly one per change (payment, version), each matching the intent.
    copies: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.key in rows:
            copies[event.event_id].append(event)
    v.events_seen = sum(len(c) for c in copies.values())
    v.duplicate_events = sum(len(c) - 1 for c in copies.values())
    v.inconsistent_duplicates = [
        eid for eid, c in copies.items() if len({(e.value, e.headers) for e in c}) > 1
    ]
    emitted: dict[tuple[str, int], Event] = {}
    for eid, c in copies.items():
        body = c[0].body
        try:
            emitted[(str(body["payment_id"]), int(body["version"]))] = c[0]
        except (KeyError, TypeError, ValueError):
            v.wrong_events.append(f"{eid}: not an event ({c[0].value[:200]!r})")
    wanted = set(changes) | set(audited)
    v.lost_events = [f"{pid} v{version}" for pid, version in sorted(wanted - set(emitted))]
    v.events_without_change = [
        f"{pid} v{version}" for pid, version in sorted(set(emitted) - wanted)
    ]
    chains: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (pid, _version), event in sorted(emitted.items()):
        chains[pid].append(event.body)
        problem = _event_problem(event, rows[pid], intents_of.get(pid, []), tenant)
        if problem:
            v.wrong_events.append(f"{event.event_id}: {problem}")
        headers = _header_problem(event)
        if headers:
            v.wrong_headers.append(f"{event.event_id}: {headers}")
    for pid, expected in v.expected.items():
        chain = chains.get(pid, [])
        went = ["pending"] + [str(e.get("status")) for e in chain]
        chained = all(
            e.get("previous_status") == prev for e, prev in zip(chain, went, strict=False)
        )
        if not chained or went[-1] != expected:
            hops = " ".join(f"{e.get('previous_status')}->{e.get('status')}" for e in chain)
            v.wrong_events.append(f"{pid}: events [{hops}], Stripe says {expected}")
    return v


def _trail(steps: list[Audit]) -> str:
    return "[" + " ".join(f"{a.from_status}->{a.to_status}" for a in steps) + "]"


def _event_problem(
    event: Event, row: Row, intents: list[dict[str, Any]], tenant: str | None
) -> str | None:
    body = event.body
    pid, version = body.get("payment_id"), body.get("version")
    if event.event_id != f"{pid}:{version}" or event.key != pid:
        return f"event_id {event.event_id!r} / key {event.key!r} do not name {pid}:{version}"
    if body.get("status") not in STATUSES or body.get("previous_status") not in STATUSES:
        return f"statuses {body.get('previous_status')!r} -> {body.get('status')!r}"
    own = next((i for i in intents if i["id"] == row.provider_payment_id), None)
    said = (body.get("amount_minor"), body.get("currency"), body.get("provider_payment_id"))
    if own is not None and said != (own["amount"], own["currency"], own["id"]):
        return f"says {said}, Stripe's intent is {(own['amount'], own['currency'], own['id'])}"
    if "tenant_id" not in body:
        return "no tenant_id"
    if tenant is not None and body["tenant_id"] != tenant:
        return f"tenant_id {body['tenant_id']!r}, the payment's tenant is {tenant!r}"
    return None


def _header_problem(event: Event) -> str | None:
    """CloudEvents binary mode on Kafka: ``ce_id`` = event_id, ``ce_type`` names the status,
    ``ce_subject`` the payment."""
    body = event.body
    wanted = {
        "ce_id": event.event_id,
        "ce_type": f"payments.payment.{body.get('status')}",
        "ce_subject": str(body.get("payment_id")),
    }
    wrong = {
        name: event.header(name) for name, value in wanted.items() if event.header(name) != value
    }
    return f"headers {wrong}, want {wanted}" if wrong else None
