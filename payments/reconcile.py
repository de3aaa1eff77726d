"""Reconciliation: find out from Stripe what happened to open payments, and write it down.

Open means not final: ``pending``, and ``failed`` (a customer may still pay on the same intent).
Two parts, each cheap in what it reads:

1. **Sweep** (once per interval for the whole deployment: the worker that owns partition 0
   leads it). Stripe's status events since a durable cursor, oldest first, page by page; the
   cursor is stored after each page, so a failure keeps the progress made. Every event whose
   intent is an open payment's own is applied. Then, where Stripe lists intents by creation
   time, every PaymentIntent whose age passed ``stale_after`` since the last sweep (a durable
   cursor of creation times, stored slice by slice), 100 per call: each that is an open
   payment's own is applied like a retrieved one (a guard against an event the event list did
   not show). Cost follows what was created and what changed at Stripe, not how much is open.
2. **Checks** of a worker's own partitions, read by age from its table (never a scan of
   everything): payments past the TTL are expired (their intent canceled at Stripe first,
   unless Stripe has a final status), payments with no intent yet get one, and, where Stripe
   cannot list intents by creation time (the local stand-in), each payment is retrieved once
   when its age passes ``stale_after``. A per-cycle budget of Stripe calls keeps a cycle within
   its interval; what does not fit, or fails, is retried later with a growing delay.

A cycle streams over the table: it holds at most a budget of due checks at a time, and its
report keeps counts and a bounded sample of ids. It runs off the event loop (the table is read
from the executor's thread, for the partitions owned when the cycle started).

Everything is written through the guarded transition (source ``reconciler`` or ``expiry``); the
change stream then drops resolved payments from the table and emits their status events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

from payments.domain.errors import (
    IdempotencyKeyConflict,
    PaymentsError,
    ProviderDeclined,
    ProviderObjectMissing,
    RetryableError,
)
from payments.domain.intents import EXPIRY_CANCELLATION_REASON
from payments.domain.status import Source, Status
from payments.logs import get_logger
from payments.ports import (
    Intent,
    OpenPayment,
    OpenPayments,
    PaymentGateway,
    PaymentRepository,
    ProviderEvent,
    Retry,
    StatusChange,
    TransitionOutcome,
)
from payments.service import PaymentService

log = get_logger("payments.reconcile")

SWEEP_CURSOR = "stripe-events"
# Creation time (epoch seconds) up to which Stripe's intents were listed for the stale look.
STALE_CURSOR = "stripe-intents-created"
# A payment this young without an intent is probably still being created by its API request.
CREATION_GRACE_SECONDS = 30.0
# A cycle gives up after this many infrastructure errors in a row (the database is down).
MAX_ERRORS_IN_A_ROW = 5
# A failed check whose payment has not come up again for this long is forgotten (it left the
# table: a webhook or the sweep settled it).
RETRIES_KEPT_SECONDS = 86_400
# Ids kept in a report, as a sample; the figures are counts.
SAMPLE = 20
# The stale listing walks creation times by slices this long, storing its cursor after each.
STALE_SLICE_SECONDS = 600
# Stale payments retrieved one by one are read from the table this many at a time.
STALE_CHUNK = 500
# Past the budget, candidates are counted (deferred) up to this many budgets, then no further.
DEFERRED_COUNT_CAP = 10
# A past-TTL payment whose intent Stripe answers 404 for (no such intent: another account, a
# stand-in reset) is expired once that definite answer came this many times in a row, over at
# least one more TTL, with the retry delay at its cap. Never on a timeout or a 5xx.
UNKNOWN_INTENT_ATTEMPTS = 3
# The failure code of a payment expired so.
INTENT_UNKNOWN_CODE = "intent_unknown_to_stripe"


class ForeignIntent(PaymentsError):
    """Stripe's intent for a payment is not the payment's own (another id, amount or currency):
    refused, counted, and the check tried again later."""


class IntentUnknown(PaymentsError):
    """Stripe has no such intent (a definite 404), not yet long enough to expire the payment."""

    def __init__(self, message: str, *, since: float, in_a_row: int) -> None:
        super().__init__(message)
        self.since = since
        self.in_a_row = in_a_row


@dataclass(frozen=True)
class ReconcilePolicy:
    """The timing rules of reconciliation (from the settings of the same names)."""

    interval_seconds: float = 600.0
    stale_after_seconds: float = 3_600.0
    ttl_seconds: float = 86_400.0
    # A check that failed waits this long, doubling per failure up to the TTL.
    retry_after_seconds: float = 60.0
    # Checks in flight at once: each waits on Stripe (a cancel, a retrieve) for most of its
    # time, so one at a time caps a cycle at 1/latency checks a second whatever the rate limit.
    concurrency: int = 8


class Check(StrEnum):
    EXPIRE = "expire"
    CREATE = "create"
    RETRIEVE = "retrieve"


@dataclass(frozen=True, slots=True)
class Due:
    check: Check
    payment_id: UUID
    status: Status
    created_at: float
    provider_payment_id: str | None


@dataclass
class SweepReport:
    started_at: float
    pages: int = 0
    events: int = 0
    applied: int = 0
    foreign: int = 0
    errors: int = 0
    complete: bool = True
    error: str | None = None
    # The stale look: intents listed (``intent_pages`` calls), open ones applied.
    intents_listed: int = 0
    intent_pages: int = 0
    stale_open: int = 0
    stale_applied: int = 0
    stale_listing: bool = True  # False where Stripe cannot list intents by creation time
    stripe_calls: int = 0
    duration_seconds: float = 0.0


@dataclass
class CycleReport:
    """The figures of one cycle (served by the worker's views and CLI): counts and a sample.
    ``stale``: payments whose age passed ``stale_after`` this cycle and are retrieved one by one
    (only where Stripe cannot list intents by creation time)."""

    started_at: float
    partitions: list[int]
    open: int = 0
    due: int = 0
    checked: int = 0
    resolved: int = 0
    stale: int = 0
    retrieved: int = 0
    created: int = 0
    expired: int = 0
    # Of ``expired``: payments whose intent Stripe does not know (``UNKNOWN_INTENT_ATTEMPTS``).
    expired_unknown_intent: int = 0
    # Intents refused as not the payment's own: by the sweep, the retrieves and the expiries.
    foreign: int = 0
    deferred: int = 0
    errors: int = 0
    waiting_retry: int = 0
    stripe_calls: int = 0
    duration_seconds: float = 0.0
    sample: list[str] = field(default_factory=list)
    sweep: SweepReport | None = None
    aborted: str | None = None

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """``due``: the creations, expiries and owed retrievals of this cycle (within the budget);
    ``stale_window``: the creation times whose payments passed ``stale_after`` since the last
    plan, read from the table while the checks run."""

    due: list[Due]
    deferred: int
    open: int
    partitions: list[int]
    started_at: float
    budget: int = 0
    stale_window: tuple[float, float] | None = None


class Reconciler:
    """Sweep, plan and check; no framework, injected adapters (real or fake)."""

    def __init__(
        self,
        repo: PaymentRepository,
        gateway: PaymentGateway,
        service: PaymentService,
        policy: ReconcilePolicy,
        *,
        calls: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = repo
        self.gateway = gateway
        self.service = service
        self.policy = policy
        self._calls = calls
        self._clock = clock
        # When the previous plan was made: the window in which ages crossed stale_after.
        self._previous_start: float | None = None
        # Retrievals that did not fit last cycle's budget: first in line next cycle.
        self._deferred_retrievals: dict[UUID, Due] = {}
        # Checks that failed, waiting with a growing delay (also shown on /ops).
        self.retries: dict[UUID, Retry] = {}
        self._lists_stale: bool | None = None
        self._in_a_row = 0

    def individual_budget(self, rps: float) -> int:
        """Stripe calls the checks of one cycle may spend: half the interval at this worker's
        share of the rate; the rest is headroom for the sweep, customers' calls and retries."""
        return max(1, int(rps * self.policy.interval_seconds * 0.5))

    # -- 1. event sweep (leader) -------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Apply Stripe's status events since the stored cursor, storing it page by page."""
        now = self._clock()
        calls_before = self._calls()
        report = SweepReport(started_at=now)
        since = int(now - self.policy.stale_after_seconds)
        try:
            for page in self.gateway.event_pages(self.repo.get_cursor(SWEEP_CURSOR), since=since):
                self._apply_events(page.events, report)
                self.repo.set_cursor(SWEEP_CURSOR, page.cursor)
                report.pages += 1
            self._list_stale(now, report)
        except Exception as exc:  # any failure: keep the pages done, try again next interval
            report.complete = False
            report.errors += 1
            report.error = f"{type(exc).__name__}: {exc}"
            log.warning("event sweep stopped; progress kept", error=report.error)
        report.stripe_calls = self._calls() - calls_before
        report.duration_seconds = round(self._clock() - now, 3)
        log.info("event sweep", **asdict(report))
        return report

    def _list_stale(self, now: float, report: SweepReport) -> None:
        """Every intent created between the stored cursor and ``now - stale_after``, slice by
        slice, the cursor stored after each; nothing where Stripe cannot list by creation time
        (the workers then retrieve their stale payments one by one)."""
        policy = self.policy
        end = int(now - policy.stale_after_seconds)
        stored = self.repo.get_cursor(STALE_CURSOR)
        start = int(float(stored)) if stored else end - int(policy.interval_seconds)
        start = max(start, int(now - policy.ttl_seconds))  # older ones have expired
        while start < end:
            stop = min(end, start + STALE_SLICE_SECONDS)
            pages = self.gateway.intent_pages(start, stop)
            if pages is None:
                report.stale_listing = False
                return
            for page in pages:
                report.intent_pages += 1
                report.intents_listed += len(page)
                self._apply_intents([(None, intent) for intent in page], report)
            self.repo.set_cursor(STALE_CURSOR, str(stop))
            start = stop

    def lists_stale(self) -> bool:
        """Whether the leader's sweep looks at every stale intent (Stripe lists intents by
        creation time): then the workers retrieve none one by one. Probed once."""
        if self._lists_stale is None:
            self._lists_stale = self.gateway.intent_pages(0, 1) is not None
        return self._lists_stale

    def _apply_events(self, events: Sequence[ProviderEvent], report: SweepReport) -> None:
        report.events += len(events)
        self._apply_intents([(e, e.intent) for e in events if e.intent is not None], report)

    def _apply_intents(
        self, found: Sequence[tuple[ProviderEvent | None, Intent]], report: SweepReport
    ) -> None:
        """Apply what Stripe says of each intent that is an open payment's own (or names an
        open payment without one); an event, when there is one, says which change it was."""
        named = {u for _, i in found if (u := i.payment_uuid) is not None}
        by_id = self.repo.open_payments(named) if named else {}
        by_intent = self.repo.open_payments_by_intent({i.id for _, i in found})
        for event, intent in found:
            named_id = intent.payment_uuid
            payment = by_intent.get(intent.id) or (by_id.get(named_id) if named_id else None)
            if payment is None:
                continue  # not open (or not ours): nothing to do
            if event is None:
                report.stale_open += 1
            result = self.service.apply_intent(payment.id, intent, Source.RECONCILER, event)
            if result.outcome is TransitionOutcome.APPLIED:
                report.applied += 1
                if event is None:
                    report.stale_applied += 1
            elif result.outcome is TransitionOutcome.FOREIGN_INTENT:
                report.foreign += 1

    # -- 2. one-by-one checks of owned partitions --------------------------------------------

    def plan(self, table: OpenPayments, partitions: Sequence[int], *, budget: int) -> Plan:
        """What this cycle checks, read by age from the table: creations (a customer waits),
        expiries and owed retrievals up to ``budget``, counted (not held) past it; the stale
        payments are only a window of creation times here, read by ``check``."""
        now = self._clock()
        policy = self.policy
        interval = policy.interval_seconds
        window = interval if self._previous_start is None else now - self._previous_start
        window = min(max(window, interval), policy.ttl_seconds)
        self._previous_start = now
        expired_before = now - policy.ttl_seconds
        stale_at = now - policy.stale_after_seconds

        self.retries = self._load_retries(now)

        def candidates() -> Iterator[Due]:
            # A customer waits on a creation (the API answered 202); an expiry is housekeeping.
            for entry in table.without_intent(now - CREATION_GRACE_SECONDS):
                if entry.status is Status.PENDING and entry.created_at >= expired_before:
                    yield _due(Check.CREATE, entry)
            for entry in table.created_between(0.0, expired_before):
                yield _due(Check.EXPIRE, entry)
            yield from self._deferred_retrievals.values()

        # First attempts come first; checks that failed before (an intent Stripe does not
        # know, one that cannot be canceled) take what is left, fewest failures first: old
        # payments that keep failing never starve the others of the budget.
        due: list[Due] = []
        again: list[tuple[int, Due]] = []
        considered: set[UUID] = set()
        deferred = 0
        for item in candidates():
            if item.payment_id in considered:
                continue
            considered.add(item.payment_id)
            retry = self.retries.get(item.payment_id)
            if retry is not None and retry.next_at > now:
                continue
            if retry is None and len(due) < budget:
                due.append(item)
            elif retry is not None and len(again) < DEFERRED_COUNT_CAP * budget:
                again.append((retry.attempts, item))
            else:
                deferred += 1
            if deferred >= DEFERRED_COUNT_CAP * budget:
                break  # a backlog: the rest waits for the next cycles, uncounted
        again.sort(key=lambda pair: pair[0])  # stable: oldest first among equals
        room = budget - len(due)
        due += [item for _, item in again[:room]]
        deferred += max(0, len(again) - room)
        seen = {item.payment_id for item in due}
        # Owed retrievals that did not fit stay owed (first in line next cycle).
        self._deferred_retrievals = {
            d.payment_id: d for d in self._deferred_retrievals.values() if d.payment_id not in seen
        }
        stale_window = (max(expired_before, stale_at - window), stale_at)
        return Plan(
            due,
            deferred,
            table.count(),
            sorted(partitions),
            now,
            budget=budget,
            stale_window=stale_window if stale_window[0] < stale_window[1] else None,
        )

    def check(self, plan: Plan, table: OpenPayments | None = None) -> CycleReport:
        """Run the plan's checks against Stripe and the database, then look at the stale
        payments of its window (read from ``table``) within what is left of the budget
        (blocking: run it off the event loop). Failures are counted, logged and retried later;
        the cycle never raises."""
        calls_before = self._calls()
        report = CycleReport(
            started_at=plan.started_at,
            partitions=plan.partitions,
            open=plan.open,
            due=len(plan.due),
            deferred=plan.deferred,
        )
        self._in_a_row = 0
        self._run_checks(plan.due, report)
        if table is not None and plan.stale_window is not None and report.aborted is None:
            spent = self._calls() - calls_before
            self._check_stale(table, plan.stale_window, max(0, plan.budget - spent), report)
        report.waiting_retry = len(self.retries)
        report.stripe_calls = self._calls() - calls_before
        report.duration_seconds = round(self._clock() - plan.started_at, 3)
        summary = report.summary()
        summary.pop("sample")
        log.info("reconciliation cycle", **summary)
        return report

    def _run_checks(self, items: Sequence[Due], report: CycleReport) -> None:
        """Run ``items`` (``policy.concurrency`` at a time, each on its own payment) and count
        their outcomes here, in order; stop after ``MAX_ERRORS_IN_A_ROW`` infrastructure
        errors in a row."""

        def one(item: Due) -> tuple[Due, tuple[str, ...], BaseException | None]:
            try:
                return item, self._check(item), None
            except Exception as exc:
                return item, (), exc

        workers = max(1, min(self.policy.concurrency, len(items)))
        window = 4 * workers
        with ThreadPoolExecutor(workers, thread_name_prefix="reconcile-check") as pool:
            for start in range(0, len(items), window):
                for item, counted, exc in pool.map(one, items[start : start + window]):
                    self._count(item, counted, exc, report)
                    if report.aborted is not None:
                        return

    def _count(
        self, item: Due, counted: tuple[str, ...], exc: BaseException | None, report: CycleReport
    ) -> None:
        if len(report.sample) < SAMPLE:
            report.sample.append(str(item.payment_id))
        report.checked += 1
        if exc is None:
            for name in counted:
                setattr(report, name, getattr(report, name) + 1)
            if self.retries.pop(item.payment_id, None) is not None:
                self._remember(self.repo.drop_retry, item.payment_id)
            self._in_a_row = 0
            return
        report.errors += 1
        if isinstance(exc, ForeignIntent):
            report.foreign += 1
        self._retry_later(item, exc)
        if isinstance(exc, PaymentsError):
            return
        # database or pool errors: count, log, stop if persistent
        self._in_a_row += 1
        if self._in_a_row >= MAX_ERRORS_IN_A_ROW:
            report.aborted = f"{self._in_a_row} errors in a row, last: {type(exc).__name__}: {exc}"
            log.error("reconciliation cycle aborted", reason=report.aborted)

    def _check_stale(
        self,
        table: OpenPayments,
        window: tuple[float, float],
        budget: int,
        report: CycleReport,
    ) -> None:
        """Where Stripe cannot list intents by creation time, each payment created within
        ``window`` (its age passed ``stale_after`` since the last plan) is retrieved once, as the
        table streams by; those past the budget are owed to the next cycles (first in line)."""
        if self.lists_stale():
            return  # the leader's sweep lists every stale intent, of every partition
        now = self._clock()
        calls_at_start = self._calls()
        chunk: list[Due] = []

        def flush() -> None:
            left = max(0, budget - (self._calls() - calls_at_start))
            fits, owed = chunk[:left], chunk[left:]
            report.due += len(fits)
            self._run_checks(fits, report)
            report.deferred += len(owed)
            for item in owed:
                if len(self._deferred_retrievals) < DEFERRED_COUNT_CAP * max(1, budget):
                    self._deferred_retrievals[item.payment_id] = item
            chunk.clear()

        for entry in table.created_between(*window):
            if entry.provider_payment_id is None:
                continue
            retry = self.retries.get(entry.payment_id)
            if retry is not None and retry.next_at > now:
                continue
            report.stale += 1
            chunk.append(_due(Check.RETRIEVE, entry))
            if len(chunk) >= STALE_CHUNK:
                flush()
                if report.aborted is not None:
                    return
        if chunk:
            flush()

    def run(
        self,
        table: OpenPayments,
        partitions: Sequence[int],
        *,
        rps: float,
        lead_sweep: bool = True,
    ) -> CycleReport:
        """Sweep (when this worker leads it), plan and check: one whole cycle, blocking."""
        sweep = self.sweep() if lead_sweep else None
        plan = self.plan(table, partitions, budget=self.individual_budget(rps))
        report = self.check(plan, table)
        report.sweep = sweep
        if sweep is not None:
            report.stripe_calls += sweep.stripe_calls
            report.resolved += sweep.applied
            report.foreign += sweep.foreign
        return report

    def _retry_delay(self, attempts: int) -> float:
        """The wait after ``attempts`` failures: doubling from ``retry_after``, capped at the
        TTL."""
        delay = self.policy.retry_after_seconds * 2.0 ** (attempts - 1)
        return min(delay, self.policy.ttl_seconds)

    def _retry_later(self, item: Due, exc: BaseException) -> None:
        previous = self.retries.get(item.payment_id)
        attempts = (previous.attempts if previous else 0) + 1
        delay = self._retry_delay(attempts)
        unknown = exc if isinstance(exc, IntentUnknown) else None
        retry = Retry(
            attempts,
            self._clock() + delay,
            str(exc)[:300],
            unknown_since=unknown.since if unknown else None,
            unknown_attempts=unknown.in_a_row if unknown else 0,
        )
        self.retries[item.payment_id] = retry
        self._remember(self.repo.save_retry, item.payment_id, retry)
        log.warning(
            "reconciliation check failed; retried later",
            payment_id=str(item.payment_id),
            check=item.check.value,
            attempts=attempts,
            retry_in_seconds=round(delay),
            error=str(exc),
        )

    def _load_retries(self, now: float) -> dict[UUID, Retry]:
        """The failed checks as the database has them (every worker's, across restarts and
        rebalances); what this worker knows when the database cannot say."""
        try:
            return self.repo.load_retries(forget_before=now - RETRIES_KEPT_SECONDS)
        except Exception as exc:
            log.warning("failed checks not readable; using this worker's own", error=str(exc))
            return self.retries

    def _remember(self, write: Callable[..., None], *args: Any) -> None:
        """Store a failed check (or that it passed); a database error only costs the order of
        the next cycles, never the cycle."""
        try:
            write(*args)
        except Exception as exc:
            log.warning("failed check not stored", error=str(exc))

    def _check(self, item: Due) -> tuple[str, ...]:
        """One check (in a pool thread); the report's counters it adds to."""
        if item.check is Check.EXPIRE:
            return self._expire(item)
        if item.check is Check.CREATE:
            self.service.finish_creation(item.payment_id)
            return ("created",)
        assert item.provider_payment_id is not None
        intent = self.gateway.retrieve_intent(item.provider_payment_id)
        result = self.service.apply_intent(item.payment_id, intent, Source.RECONCILER)
        if result.outcome is TransitionOutcome.APPLIED:
            return ("retrieved", "resolved")
        if result.outcome is TransitionOutcome.FOREIGN_INTENT:
            return ("retrieved", "foreign")
        return ("retrieved",)

    def _expire(self, item: Due) -> tuple[str, ...]:
        """Past the TTL: cancel the intent at Stripe, then ``expired``; unless Stripe has a
        final status, which is taken instead. The report's counters it adds to."""
        pid = item.payment_id
        intent_id = item.provider_payment_id
        if intent_id is None and item.status is Status.PENDING:
            # Hold the creation so no intent appears for an expired payment, and get back the
            # one an earlier create may have made (its answer lost), to cancel it below.
            claimed = self.repo.claim_creation(
                pid, lease_seconds=self.service.creation_lease_seconds
            )
            if claimed is not None:
                recovered = self.service.recover_intent(claimed)  # None: Stripe made none
                intent_id = recovered.provider_payment_id if recovered else None
            else:
                latest = self.repo.get(pid)
                if latest is None or not latest.is_open:
                    return ("resolved",)
                if latest.provider_payment_id is None:
                    raise RetryableError(
                        f"payment {pid} is being created at Stripe; expiring later"
                    )
                intent_id = latest.provider_payment_id
        if intent_id is None:  # Stripe refused the creation: no intent, nothing can be charged
            return self._write_expired(pid, None)
        # Each attempt is a new decision to cancel (a new idempotency key): Stripe replays the
        # answer of a key it has seen, a refusal included, for 24 hours.
        earlier = self.retries.get(pid)
        try:
            intent = self.gateway.cancel_intent(
                intent_id,
                payment_id=pid,
                reason=EXPIRY_CANCELLATION_REASON,
                decision=(earlier.attempts if earlier else 0) + 1,
            )
        except (ProviderDeclined, IdempotencyKeyConflict):
            # Stripe would not cancel (the intent already succeeded, is processing, or is
            # gone), or holds the key for a cancel still in flight: take what it says now.
            try:
                intent = self.gateway.retrieve_intent(intent_id)
            except ProviderObjectMissing:
                return self._expire_unknown(pid, intent_id)
            return self._take_final(pid, intent)
        return self._write_expired(pid, intent)

    def _expire_unknown(self, pid: UUID, intent_id: str) -> tuple[str, ...]:
        """Stripe answered 404 for the intent of a past-TTL payment. Nothing can be charged on
        an intent Stripe does not have, but a wrong account or a stand-in reset look the same
        for a while: expire only once the answer held ``UNKNOWN_INTENT_ATTEMPTS`` times in a
        row, over at least one more TTL, with the retry delay at its cap."""
        now = self._clock()
        earlier = self.retries.get(pid)
        in_a_row = (earlier.unknown_attempts if earlier else 0) + 1
        since = earlier.unknown_since if earlier and earlier.unknown_since else now
        ttl = self.policy.ttl_seconds
        capped = earlier is not None and self._retry_delay(earlier.attempts) >= ttl
        if capped and in_a_row >= UNKNOWN_INTENT_ATTEMPTS and now - since >= ttl:
            log.warning(
                "payment expired: Stripe does not know its intent",
                payment_id=str(pid),
                intent_id=intent_id,
                answers_in_a_row=in_a_row,
                unknown_for_seconds=round(now - since),
            )
            counted = self._write_expired(
                pid,
                None,
                failure_code=INTENT_UNKNOWN_CODE,
                failure_message=f"Stripe has no PaymentIntent {intent_id} (404 on "
                f"{in_a_row} attempts over {round(now - since)} s)",
            )
            if counted == ("expired",):
                return ("expired", "expired_unknown_intent")
            return counted
        raise IntentUnknown(
            f"payment {pid} is past its TTL but Stripe has no PaymentIntent {intent_id} "
            f"({in_a_row} answers in a row); expiring once that holds",
            since=since,
            in_a_row=in_a_row,
        )

    def _take_final(self, pid: UUID, intent: Intent) -> tuple[str, ...]:
        outcome = intent.outcome()
        if outcome is None:
            raise RetryableError(
                f"payment {pid} is past its TTL but intent {intent.id} is {intent.status} at "
                "Stripe and cannot be canceled yet"
            )
        # Canceled by our expiry (reason `abandoned`) is `expired`; any other reason, or none
        # (a cancel from the dashboard), is `canceled` (payments.domain.intents).
        result = self.service.apply_intent(pid, intent, Source.RECONCILER)
        if result.outcome is TransitionOutcome.FOREIGN_INTENT:
            raise ForeignIntent(
                f"payment {pid} not resolved by intent {intent.id}: {result.reason}"
            )
        if result.outcome is TransitionOutcome.APPLIED and outcome is Status.EXPIRED:
            return ("expired",)
        return ("resolved",)

    def _write_expired(
        self,
        pid: UUID,
        intent: Intent | None,
        *,
        failure_code: str | None = None,
        failure_message: str | None = None,
    ) -> tuple[str, ...]:
        change = StatusChange(
            Status.EXPIRED,
            Source.EXPIRY,
            intent,
            failure_code=failure_code,
            failure_message=failure_message,
        )
        result = self.repo.transition(pid, change)
        if result.outcome is TransitionOutcome.FOREIGN_INTENT:
            raise ForeignIntent(f"payment {pid} not expired: {result.reason}")
        if result.outcome is TransitionOutcome.APPLIED:
            log.info("payment expired", payment_id=str(pid))
            return ("expired",)
        return ("resolved",)


def _due(check: Check, entry: OpenPayment) -> Due:
    return Due(check, entry.payment_id, entry.status, entry.created_at, entry.provider_payment_id)
