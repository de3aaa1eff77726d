"""Stripe behind one small class: PaymentIntents and events, with timeouts, retries, a rate budget.

Every HTTP attempt takes a token from the deployment's rate budget, has a timeout, and is retried
by error kind: connection errors, 409 (a concurrent request with the same idempotency key), 429
and 5xx with exponential backoff and jitter, honouring ``Stripe-Should-Retry`` and
``Retry-After``; a decline or an invalid request never. Every write carries an idempotency key
derived from our own ids (``pi-create-<payment id>``, ``pi-cancel-<payment id>-<reason>-<n>``),
never a client's key: Stripe's keys are account-wide.

Stripe errors are translated here, once, into ``payments.domain.errors``:
rate limit, connection, 5xx, auth -> ``RetryableError`` (the payment stays as it is; retry later);
card or invalid request -> ``ProviderDeclined`` (the caller must change something), a 404
-> ``ProviderObjectMissing`` (the object does not exist: a definite answer);
an idempotency key reused with other parameters -> ``IdempotencyKeyConflict``.

Stripe's answers are read as plain JSON (``StripeClient.raw_request``: the same requests, the
same typed errors), not as stripe-python's objects: building those costs about 30 times the
JSON parse (32 ms against 1.1 ms for a page of 100 intents). The HTTP client is urllib3's
connection pool, not requests (``_BudgetedClient``); the proxy for Stripe's address is read from
the environment once, when the gateway is made.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote_plus, urlsplit
from urllib.request import getproxies_environment, proxy_bypass
from uuid import UUID

import stripe
import urllib3

from payments.domain.errors import (
    IdempotencyKeyConflict,
    InvalidRequest,
    PaymentsError,
    ProviderDeclined,
    ProviderObjectMissing,
    RetryableError,
)
from payments.domain.intents import STATUS_EVENT_TYPES
from payments.domain.payment import Payment
from payments.logs import get_logger
from payments.ports import EventPage, Intent, ProviderEvent
from payments.settings import Settings

log = get_logger(__name__)

# Stripe's event list is eventually consistent: an event may become visible a little after a
# newer one. Each sweep re-reads this much before its cursor (applying an event twice is a no-op).
CURSOR_OVERLAP_SECONDS = 120
PAGE_SIZE = 100
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0
RETRYABLE_STATUSES = frozenset({409, 429}) | frozenset(range(500, 600))
# Connections to Stripe kept open per process: as many as the API's request threads or the
# reconciler's checks in flight at once (more are opened when needed, then closed).
CONNECTIONS_KEPT = 64


def environ_proxy(url: str) -> str | None:
    """The proxy the environment gives for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``/
    ``ALL_PROXY``, unless ``NO_PROXY`` names its host), read once when a gateway is made."""
    parts = urlsplit(url)
    proxies = getproxies_environment()
    if not proxies or proxy_bypass(parts.hostname or ""):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


class RateBudget(Protocol):
    """A token per HTTP attempt (``PostgresRateBudget`` shared, ``RateLimiter`` in-process)."""

    def acquire(self, *, timeout: float) -> bool: ...


def translate_error(exc: stripe.StripeError, action: str) -> PaymentsError:
    """One mapping from stripe-python's errors to ours, with a message naming the action."""
    status = exc.http_status
    detail = exc.user_message or str(exc) or type(exc).__name__
    if isinstance(exc, stripe.CardError):
        return ProviderDeclined(
            f"{action}: card declined: {detail}", code=exc.code, field=exc.param
        )
    if isinstance(exc, stripe.IdempotencyError):
        return IdempotencyKeyConflict(f"{action}: Stripe refused the idempotency key: {detail}")
    if isinstance(exc, (stripe.RateLimitError, stripe.APIConnectionError)):
        return RetryableError(f"{action}: Stripe unreachable or rate-limited: {detail}")
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        return RetryableError(
            f"{action}: Stripe refused the API key ({status}); check STRIPE_SECRET_KEY: {detail}"
        )
    if isinstance(exc, stripe.InvalidRequestError) and status == 404:
        return ProviderObjectMissing(
            f"{action}: Stripe has no such object: {detail}", code=exc.code, field=exc.param
        )
    if isinstance(exc, stripe.InvalidRequestError) and status is not None and status < 500:
        return ProviderDeclined(
            f"{action}: Stripe rejected the request: {detail}", code=exc.code, field=exc.param
        )
    if status is not None and 400 <= status < 500 and status not in (408, 409, 429):
        return ProviderDeclined(f"{action}: Stripe answered {status}: {detail}", code=exc.code)
    return RetryableError(f"{action}: Stripe failed ({status}): {detail}")


def retry_delay(attempt: int, headers: Mapping[str, str] | None) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): ``Retry-After`` when Stripe sends one,
    else exponential backoff with full jitter, capped."""
    if headers is not None:
        raw = headers.get("retry-after") or headers.get("Retry-After")
        if raw:
            try:
                return min(max(0.0, float(raw)), RETRY_MAX_SECONDS)
            except ValueError:
                pass
    ceiling = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def should_retry(status: int, headers: Mapping[str, str] | None) -> bool:
    """Retry by kind: Stripe's own advice first, then 409/429/5xx. Never a decline (402) or an
    invalid request (400/404)."""
    advice = (headers or {}).get("stripe-should-retry") or (headers or {}).get(
        "Stripe-Should-Retry"
    )
    if advice == "false":
        return False
    if advice == "true":
        return True
    return status in RETRYABLE_STATUSES


class _BudgetedClient(stripe.HTTPClient):
    """stripe-python's HTTP client on urllib3 (one thread-safe pool of kept-alive connections per
    host, shared by every thread), with our retry rule, a rate-budget token per attempt, and a
    count of attempts. stripe-python's own retries are off (``max_network_retries=0``).

    Not stripe-python's ``RequestsClient``: requests prepares, merges and re-validates every
    call (settings, hooks, cookies, headers), about a third of the CPU an expiry check spent
    on this machine, for nothing a Stripe call needs."""

    name = "urllib3"

    def __init__(
        self,
        *,
        timeout: float,
        budget: RateBudget,
        retries: int,
        proxy: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        pools: dict[str, Any] = {
            "maxsize": CONNECTIONS_KEPT,
            "block": False,  # a thread past the kept connections opens one of its own
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": stripe.ca_bundle_path,
            # Connect, and each read, within the timeout (as requests applied it); no retries
            # or redirects of urllib3's own: ours are below, and Stripe does not redirect.
            "timeout": urllib3.Timeout(connect=timeout, read=timeout),
            "retries": False,
        }
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **pools) if proxy else urllib3.PoolManager(**pools)
        )
        self._budget = budget
        self._budget_timeout = timeout
        self._retries = retries
        self._sleep = sleep
        self._count_lock = threading.Lock()
        self.calls = 0

    def close(self) -> None:
        self._pool.clear()

    def _attempt(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            granted = self._budget.acquire(timeout=self._budget_timeout)
        except Exception as exc:  # the shared budget's database is unreachable
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                f"Stripe rate budget unavailable: {exc}"
            ) from exc
        if not granted:
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                f"Stripe rate budget: no token within {self._budget_timeout}s for "
                f"{method.upper()} {url}"
            )
        with self._count_lock:
            self.calls += 1
        try:
            response = self._pool.request(
                method.upper(), url, body=post_data, headers=headers, redirect=False
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # refused, reset, timed out, TLS
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                f"Stripe unreachable on {method.upper()} {url}: {type(exc).__name__}: {exc}"
            ) from exc
        return response.data, response.status, response.headers

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        **kwargs: Any,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        attempt = 0
        while True:
            attempt += 1
            try:
                body, status, rheaders = self._attempt(method, url, headers, post_data)
            except stripe.APIConnectionError:
                if attempt > self._retries:
                    raise
                self._sleep(retry_delay(attempt, None))
                continue
            if status < 400 or attempt > self._retries or not should_retry(status, rheaders):
                return body, status, rheaders
            delay = retry_delay(attempt, rheaders)
            log.info("stripe call retried", method=method.upper(), status=status, delay=delay)
            self._sleep(delay)


class StripeGateway:
    """PaymentIntents and events on Stripe (or a stand-in at ``settings.stripe_api_base``)."""

    def __init__(
        self,
        settings: Settings,
        budget: RateBudget,
        *,
        observer: Callable[[str, str], None] | None = None,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
    ) -> None:
        """``timeout_seconds``/``max_retries`` override the settings for callers with a tighter
        deadline (an HTTP request must finish before gunicorn's worker timeout)."""
        timeout = settings.stripe_timeout_seconds if timeout_seconds is None else timeout_seconds
        retries = settings.stripe_max_retries if max_retries is None else max_retries
        # observer(operation, outcome) after each call: outcome is "ok" or the error kind.
        self.observer = observer
        options: dict[str, Any] = {}
        if settings.stripe_api_base:
            options["base_addresses"] = {"api": settings.stripe_api_base.rstrip("/")}
        api_base = settings.stripe_api_base or stripe.DEFAULT_API_BASE
        self._http = _BudgetedClient(
            timeout=timeout,
            budget=budget,
            retries=retries,
            proxy=environ_proxy(api_base),
        )
        self.client = stripe.StripeClient(
            settings.stripe_secret_key, max_network_retries=0, http_client=self._http, **options
        )
        # Whether Stripe takes `types[]` and `ending_before` on events.list (real Stripe does,
        # the local stand-in does not: it lists each type on its own, oldest first).
        self._typed_events: bool | None = None
        # Whether Stripe takes a cancellation_reason (the stand-in does not).
        self._cancel_reasons: bool | None = None
        # Whether Stripe lists intents by creation time (real Stripe does, the stand-in not).
        self._intents_by_created: bool | None = None

    @property
    def calls(self) -> int:
        """HTTP attempts made so far (retries included)."""
        return self._http.calls

    def _fail(self, operation: str, exc: stripe.StripeError, action: str) -> PaymentsError:
        error = translate_error(exc, action)
        self._observe(operation, _error_kind(error))
        log.warning(
            "stripe call failed", operation=operation, error=str(error), http_status=exc.http_status
        )
        return error

    def _observe(self, operation: str, outcome: str) -> None:
        if self.observer is not None:
            self.observer(operation, outcome)

    def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One Stripe request (retried, budgeted: ``_BudgetedClient``); its JSON answer. Raises
        stripe-python's typed errors, as its resource methods do."""
        options = {"idempotency_key": idempotency_key} if idempotency_key else {}
        answer: dict[str, Any] = self.client.raw_request(
            method, path, **(params or {}), **options
        ).data
        return answer

    def _call(
        self, operation: str, action: str, call: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """One Stripe operation: its errors translated once, its outcome observed."""
        try:
            result = call()
        except stripe.StripeError as exc:
            raise self._fail(operation, exc, action) from exc
        self._observe(operation, "ok")
        return result

    def _intent(self, operation: str, action: str, call: Callable[[], dict[str, Any]]) -> Intent:
        intent = Intent.from_dict(self._call(operation, action, call))
        if operation != "retrieve_intent":
            log.info(
                f"stripe {operation}",
                payment_id=intent.payment_id,
                intent_id=intent.id,
                provider_status=intent.status,
            )
        return intent

    # -- PaymentIntents ---------------------------------------------------------------------

    def create_intent(self, payment: Payment) -> Intent:
        """Create the payment's intent, idempotent on our payment id (``pi-create-<id>``)."""
        params = {
            "amount": payment.money.amount_minor,
            "currency": payment.money.currency,
            "metadata": {**payment.metadata, "payment_id": str(payment.id)},
            "payment_method_types": ["card"],
        }
        return self._intent(
            "create_intent",
            f"creating the PaymentIntent of payment {payment.id}",
            lambda: self._request(
                "post", "/v1/payment_intents", params, idempotency_key=creation_key(payment)
            ),
        )

    def retrieve_intent(self, intent_id: str) -> Intent:
        return self._intent(
            "retrieve_intent",
            f"retrieving PaymentIntent {intent_id}",
            lambda: self._request("get", _intent_path(intent_id)),
        )

    def cancel_intent(
        self, intent_id: str, *, payment_id: UUID, reason: str, decision: int
    ) -> Intent:
        """Cancel with Stripe's ``cancellation_reason`` (``abandoned`` for our expiry). The
        local stand-in takes no reason (and keeps none): it is then canceled without one.
        Idempotent per decision to cancel (``cancel_key``): the retries of this call send the
        same key; a later decision, or another reason, sends another."""
        key = cancel_key(payment_id, reason, decision)
        path = _intent_path(intent_id, "/cancel")

        def cancel() -> dict[str, Any]:
            if self._cancel_reasons is not False:
                try:
                    return self._request(
                        "post", path, {"cancellation_reason": reason}, idempotency_key=key
                    )
                except stripe.InvalidRequestError as exc:
                    if "cancellation_reason" not in str(exc):
                        raise
                    self._cancel_reasons = False
            return self._request("post", path, idempotency_key=key)

        return self._intent("cancel_intent", f"canceling PaymentIntent {intent_id}", cancel)

    def confirm_intent(
        self, intent_id: str, payment_method: str, *, idempotency_key: str
    ) -> Intent:
        """Attach ``payment_method`` to the intent and confirm it (server-side confirmation).

        Two calls (update, then confirm) because the local stand-in does not take a payment
        method on confirm; Stripe accepts both forms. ``idempotency_key`` makes a retried
        confirmation return Stripe's first answer. A declined card raises ``ProviderDeclined``.
        """

        def confirm() -> dict[str, Any]:
            self._request(
                "post",
                _intent_path(intent_id),
                {"payment_method": payment_method},
                idempotency_key=f"{idempotency_key}-attach",
            )
            return self._request(
                "post",
                _intent_path(intent_id, "/confirm"),
                idempotency_key=f"{idempotency_key}-confirm",
            )

        action = f"confirming PaymentIntent {intent_id} with {payment_method}"
        return self._intent("confirm_intent", action, confirm)

    # -- events -----------------------------------------------------------------------------

    def _list(
        self, operation: str, path: str, params: dict[str, Any], action: str
    ) -> dict[str, Any]:
        """One page of a Stripe list (``data``, ``has_more``)."""
        return self._call(operation, action, lambda: self._request("get", path, params))

    def _list_events(self, params: dict[str, Any], action: str) -> dict[str, Any]:
        return self._list("list_events", "/v1/events", params, action)

    def _probe(self, call: Callable[[], object], operation: str, api: str, refused: str) -> bool:
        """Whether Stripe takes a request of ``api`` that the local stand-in refuses: True when
        ``call`` passes, False on an invalid-request answer (logged as ``refused``)."""
        try:
            call()
        except stripe.InvalidRequestError:
            log.info(refused)
            return False
        except stripe.StripeError as exc:
            raise self._fail(operation, exc, f"probing {api}") from exc
        return True

    def _typed(self) -> bool:
        """Probe once whether Stripe lists several types in one call (``types[]``)."""
        if self._typed_events is None:
            self._typed_events = self._probe(
                lambda: self._request(
                    "get", "/v1/events", {"types": list(STATUS_EVENT_TYPES), "limit": 1}
                ),
                "list_events",
                "events.list",
                "events.list takes one type per call here (local stand-in)",
            )
        return self._typed_events

    def event_pages(self, cursor: str | None, *, since: int) -> Iterator[EventPage]:
        """Status events after the cursor (or created after ``since`` without one), page by
        page, each with the cursor to store once it is applied: a failure midway keeps the
        pages done. The cursor is the last event id per stream plus the newest ``created``
        seen; each sweep first re-reads ``CURSOR_OVERLAP_SECONDS`` before it. Oldest first,
        but for the first read of a window on real Stripe (``_backfill_pages``)."""
        state = _SweepCursor.parse(cursor)
        typed = self._typed()
        streams = (
            {"all": list(STATUS_EVENT_TYPES)} if typed else {t: [t] for t in STATUS_EVENT_TYPES}
        )
        if state.newest:
            overlap = [e for e in self.recent_events(since=state.newest - CURSOR_OVERLAP_SECONDS)]
            if overlap:
                yield EventPage(overlap, state.dump())
        for stream, types in streams.items():
            if typed and (stream in state.backfill or stream not in state.after):
                for events in self._backfill_pages(types, stream, state, since):
                    yield EventPage(events, state.dump())
                if stream not in state.after:
                    continue  # nothing in the window yet
            for events in self._stream_pages(types, state.after.get(stream), since):
                state.after[stream] = events[-1].id
                state.newest = max(state.newest, max(e.created for e in events))
                yield EventPage(events, state.dump())

    def _backfill_pages(
        self, types: list[str], stream: str, state: _SweepCursor, since: int
    ) -> Iterator[list[ProviderEvent]]:
        """The first read of a stream on real Stripe, which lists newest first and has no
        anchor to walk from yet: the window (created after ``since``) newest first, page by
        page, each page handed out oldest first. ``state`` is updated before each page: its
        newest event becomes the anchor of later sweeps (``ending_before``), and the backfill
        keeps where it is (``starting_after``) until the window is read to its end, so a
        sweep stopped midway resumes it. Order across pages does not matter for what the
        events mean: a status write is guarded, and a final status never moves."""
        job = state.backfill.get(stream) or {"since": since}
        params: dict[str, Any] = {"limit": PAGE_SIZE, "created": {"gt": int(job["since"])}}
        params.update({"types": types} if len(types) > 1 else {"type": types[0]})
        if "before" in job:
            params["starting_after"] = job["before"]
        action = f"listing {', '.join(types)} events (first read, newest first)"
        while True:
            page = self._list_events(params, action)
            events = [ProviderEvent.from_dict(e) for e in page["data"]]
            if events:
                state.after.setdefault(stream, events[0].id)
                state.newest = max(state.newest, max(e.created for e in events))
            if page["has_more"] and events:
                state.backfill[stream] = {"since": int(job["since"]), "before": events[-1].id}
            else:
                state.backfill.pop(stream, None)
            yield events[::-1]
            if not page["has_more"] or not events:
                return
            params = {**params, "starting_after": events[-1].id}

    def _stream_pages(
        self, types: list[str], after: str | None, since: int
    ) -> Iterator[list[ProviderEvent]]:
        """Pages oldest first, in the list's own order (``created`` has one-second resolution:
        never re-sort by it). Real Stripe lists newest first: walk towards newer events with
        ``ending_before`` from the anchor and reverse each page; the stand-in lists oldest
        first (insertion order): walk with ``starting_after``."""
        action = f"listing {', '.join(types)} events"
        base: dict[str, Any] = {"limit": PAGE_SIZE}
        base.update({"types": types} if len(types) > 1 else {"type": types[0]})
        key = "ending_before" if self._typed_events else "starting_after"
        params = dict(base)
        if after is not None:
            params[key] = after
        else:
            params["created"] = {"gt": since}
        while True:
            page = self._list_events(params, action)
            events = [ProviderEvent.from_dict(e) for e in page["data"]]
            if self._typed_events:
                events.reverse()  # Stripe lists newest first, even walking towards newer
            if events:
                yield events
            if not page["has_more"] or not events:
                return
            params = {**base, key: events[-1].id}

    def recent_events(self, *, since: int) -> Iterator[ProviderEvent]:
        """Every status event created after ``since`` (all pages; order not guaranteed)."""
        type_groups = (
            [list(STATUS_EVENT_TYPES)] if self._typed() else [[t] for t in STATUS_EVENT_TYPES]
        )
        for types in type_groups:
            params: dict[str, Any] = {"limit": PAGE_SIZE, "created": {"gt": since}}
            params.update({"types": types} if len(types) > 1 else {"type": types[0]})
            while True:
                page = self._list_events(params, f"re-reading {', '.join(types)} events")
                for event in page["data"]:
                    yield ProviderEvent.from_dict(event)
                if not page["has_more"] or not page["data"]:
                    break
                params = {**params, "starting_after": page["data"][-1]["id"]}

    def intent_pages(self, created_from: int, created_to: int) -> Iterator[list[Intent]] | None:
        """PaymentIntents created in ``[created_from, created_to)``, ``PAGE_SIZE`` a call
        (Stripe's order: newest first). None where Stripe cannot filter by ``created`` (the
        local stand-in refuses the parameter; probed once)."""
        if self._intents_by_created is None:
            self._intents_by_created = self._probe(
                lambda: self._request(
                    "get",
                    "/v1/payment_intents",
                    {"limit": 1, "created": {"gte": created_from, "lt": created_to}},
                ),
                "list_intents",
                "payment_intents.list",
                "payment_intents.list takes no created filter here (local stand-in)",
            )
        if not self._intents_by_created:
            return None
        return self._intent_pages(created_from, created_to)

    def _intent_pages(self, created_from: int, created_to: int) -> Iterator[list[Intent]]:
        params: dict[str, Any] = {
            "limit": PAGE_SIZE,
            "created": {"gte": created_from, "lt": created_to},
        }
        action = f"listing PaymentIntents created in [{created_from}, {created_to})"
        while True:
            page = self._list("list_intents", "/v1/payment_intents", params, action)
            intents = [Intent.from_dict(i) for i in page["data"]]
            if intents:
                yield intents
            if not page["has_more"] or not intents:
                return
            params = {**params, "starting_after": intents[-1].id}


class _SweepCursor:
    """The sweep's durable position: the last event id per stream, the newest ``created``, and
    a first read of a window not finished yet (stream -> the window's ``since`` and the oldest
    event read so far, ``before``)."""

    def __init__(
        self, after: dict[str, str], newest: int, backfill: dict[str, dict[str, Any]]
    ) -> None:
        self.after = after
        self.newest = newest
        self.backfill = backfill

    @classmethod
    def parse(cls, raw: str | None) -> _SweepCursor:
        if not raw:
            return cls({}, 0, {})
        try:
            doc = json.loads(raw)
            backfill = {
                str(k): {"since": int(v["since"]), "before": str(v["before"])}
                for k, v in (doc.get("backfill") or {}).items()
            }
            after = {str(k): str(v) for k, v in doc["after"].items()}
            return cls(after, int(doc["newest"]), backfill)
        except (ValueError, KeyError, TypeError, AttributeError):
            # An old or foreign cursor: start again from the time window (re-applying is safe).
            return cls({}, 0, {})

    def dump(self) -> str:
        doc: dict[str, Any] = {"after": self.after, "newest": self.newest}
        if self.backfill:
            doc["backfill"] = self.backfill
        return json.dumps(doc, sort_keys=True)


def _intent_path(intent_id: str, action: str = "") -> str:
    """``/v1/payment_intents/<id><action>``, the id quoted as stripe-python quotes it."""
    return f"/v1/payment_intents/{quote_plus(intent_id)}{action}"


def creation_key(payment: Payment) -> str:
    """Stripe's idempotency key of a payment's intent creation: ours, never the client's."""
    return f"pi-create-{payment.id}"


def cancel_key(payment_id: UUID, reason: str, decision: int) -> str:
    """Stripe's idempotency key of a cancel: our payment id, the reason, and which decision to
    cancel it is (the API's: the payment's version; the expiry's: its attempt number). Stripe
    answers a key it has seen with its first answer, a refusal included, for 24 hours: the
    customer's cancel and our expiry, or a retry after a refusal, must not share one."""
    return f"pi-cancel-{payment_id}-{reason}-{decision}"


def _error_kind(error: PaymentsError) -> str:
    if isinstance(error, RetryableError):
        return "retryable"
    if isinstance(error, ProviderDeclined):
        return "declined"
    return "conflict"


def verify_webhook(
    payload: bytes,
    signature_header: str | None,
    *,
    secrets: Sequence[str],
    tolerance_seconds: int,
) -> tuple[ProviderEvent, dict[str, Any]]:
    """Check Stripe's signature over the raw body against every secret in ``secrets`` (several
    during a rotation: the old and the new are both accepted until the old is dropped); return
    the event and its JSON.

    Raises ``InvalidRequest`` (field ``Stripe-Signature``) on a missing, bad or stale signature,
    and (field ``body``) on a correctly signed body that is not a Stripe event. Never call it
    without a secret: there is no default, and an unverified event is never accepted.
    """
    if not secrets:
        raise ValueError("verify_webhook needs at least one webhook secret")
    if not signature_header:
        raise InvalidRequest("missing Stripe-Signature header", field="Stripe-Signature")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            "webhook signature rejected: the body is not UTF-8, so Stripe did not sign it",
            field="Stripe-Signature",
        ) from None
    matched: str | None = None
    for secret in secrets:
        try:
            # Signature only (no tolerance): which secret signed it, if any.
            stripe.WebhookSignature.verify_header(text, signature_header, secret)
        except stripe.SignatureVerificationError:
            continue
        matched = secret
        break
    if matched is None:
        raise InvalidRequest(
            f"webhook signature rejected: no signature matches any of the {len(secrets)} "
            "configured webhook secret(s)",
            field="Stripe-Signature",
        )
    try:
        stripe.WebhookSignature.verify_header(
            text, signature_header, matched, tolerance=tolerance_seconds
        )
    except stripe.SignatureVerificationError as exc:  # signed with our secret, but too old
        raise InvalidRequest(
            f"webhook signature rejected: {exc.user_message or exc}", field="Stripe-Signature"
        ) from exc
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or "id" not in data:
            raise ValueError("not a JSON object with an id")
        return ProviderEvent.from_dict(data), data
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidRequest(f"webhook body is not a Stripe event: {exc}", field="body") from exc
