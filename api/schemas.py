"""Request and response shapes of the HTTP API (pydantic); the OpenAPI document uses them too."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from payments.domain.money import (
    CURRENCIES,
    MAX_AMOUNT_MINOR,
    MIN_AMOUNT_MINOR,
    MINIMUM_CHARGE,
    THREE_DECIMAL,
    WHOLE_UNITS_ONLY,
)
from payments.domain.status import Status

# Stripe's metadata rules: 50 keys (one is ours: payment_id), key <= 40 chars without square
# brackets, value <= 500 chars. No text holds NUL (PostgreSQL refuses it). Character classes are
# spelled out (no \\s, \\w): the document's patterns must read the same in Python, in
# ECMAScript and in pydantic's Rust regex engine.
METADATA_MAX_KEYS = 49
NO_NUL = r"^[^\x00]*$"
MetadataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=40, pattern=r"^[^\[\]\x00]+$")
]
MetadataValue = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]
EMAIL_PATTERN = r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+\.[^@\x00-\x20\x7f]+$"
EmailText = Annotated[str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)]
# Lower case, or the same code in upper case (normalised to lower case).
CURRENCY_CODES: list[JsonValue] = [*sorted(CURRENCIES), *sorted(c.upper() for c in CURRENCIES)]


def _integral_amount(value: Any) -> Any:
    """JSON has one number type: 1999.0 is the integer 1999 (JSON Schema's "integer" says so
    too), so it is taken as exactly that; 19.99, booleans and strings are refused."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _strings(data: Any, where: str = "body") -> list[tuple[str, str]]:
    """Every string (keys too) inside a JSON value, with where it was found."""
    if isinstance(data, str):
        return [(where, data)]
    found: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{where}.{key!r}" if where != "body" else str(key)
            if isinstance(key, str):
                found.append((f"{path} (key)", key))
            found += _strings(value, path)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _strings(value, f"{where}[{i}]")
    return found


def _metadata_schema(schema: dict[str, Any]) -> None:
    """The metadata rules as JSON Schema: pydantic's own rendering (patternProperties) would
    let any key that misses the pattern through."""
    schema.pop("patternProperties", None)
    schema.update(
        {
            "maxProperties": METADATA_MAX_KEYS,
            "propertyNames": {
                "minLength": 1,
                "maxLength": 40,
                "pattern": r"^[^\[\]\x00]+$",
                "not": {"const": "payment_id"},
            },
            "additionalProperties": {"type": "string", "maxLength": 500, "pattern": NO_NUL},
        }
    )


def _spellings(currencies: Iterable[str]) -> list[JsonValue]:
    return [c for code in sorted(currencies) for c in (code, code.upper())]


def _when_currency(currencies: Iterable[str], amount_rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "if": {
            "properties": {"currency": {"enum": _spellings(currencies)}},
            "required": ["currency"],
        },
        "then": {"properties": {"amount_minor": amount_rule}},
    }


def chargeable_rules() -> list[dict[str, Any]]:
    """Stripe's charge rules per currency (``Money.check_chargeable``) as JSON Schema, so the
    document refuses exactly what the server refuses: the minimum charge, the last of three
    decimals 0, whole krónur."""
    by_minimum: dict[int, list[str]] = {}
    for currency, minimum in MINIMUM_CHARGE.items():
        by_minimum.setdefault(minimum, []).append(currency)
    rules = [_when_currency(codes, {"minimum": m}) for m, codes in sorted(by_minimum.items())]
    rules.append(_when_currency(THREE_DECIMAL, {"multipleOf": 10}))
    rules.append(_when_currency(WHOLE_UNITS_ONLY, {"multipleOf": 100}))
    return rules


def _create_payment_schema(schema: dict[str, Any]) -> None:
    schema["allOf"] = chargeable_rules()


class CreatePaymentBody(BaseModel):
    """Body of ``POST /payments``."""

    model_config = ConfigDict(
        extra="forbid", title="CreatePayment", json_schema_extra=_create_payment_schema
    )

    amount_minor: Annotated[StrictInt, BeforeValidator(_integral_amount)] = Field(
        ge=MIN_AMOUNT_MINOR,
        le=MAX_AMOUNT_MINOR,
        description="Amount in the currency's minor unit (cents for usd), an integer.",
    )
    currency: str = Field(
        min_length=3,
        max_length=3,
        description="ISO 4217 code that Stripe supports, lower case (the upper-case spelling "
        "is accepted and stored lower case).",
        json_schema_extra={"enum": CURRENCY_CODES},
    )
    customer_email: EmailText | None = None
    description: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict,
        description="Up to 49 string pairs; `payment_id` is reserved.",
        json_schema_extra=lambda schema: _metadata_schema(schema),
    )

    @field_validator("customer_email", "description", "metadata", mode="before")
    @classmethod
    def _storable_text(cls, value: Any, info: ValidationInfo) -> Any:
        """PostgreSQL text and jsonb hold neither NUL nor lone UTF-16 surrogates."""
        for where, text in _strings(value, info.field_name or "body"):
            if "\x00" in text:
                raise ValueError(f"{where} contains a NUL character")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{where} is not valid Unicode text") from None
        return value

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCY_CODES:
            raise ValueError(
                f"{value!r} is not an ISO 4217 currency Stripe supports (lower case, or all "
                "upper case)"
            )
        return value.lower()

    @field_validator("metadata")
    @classmethod
    def _metadata_rules(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > METADATA_MAX_KEYS:
            raise ValueError(f"at most {METADATA_MAX_KEYS} metadata keys, got {len(value)}")
        if "payment_id" in value:
            raise ValueError("metadata key 'payment_id' is reserved (the API sets it)")
        return value


class PaymentOut(BaseModel):
    """A payment as the API shows it."""

    model_config = ConfigDict(title="Payment")

    id: str = Field(json_schema_extra={"format": "uuid"})
    status: Status
    amount_minor: int
    currency: str
    provider: str
    provider_status: str | None
    provider_payment_id: str | None
    customer_email: str | None
    description: str | None
    metadata: dict[str, str]
    failure_code: str | None
    failure_message: str | None
    version: int
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})


class CreatedPaymentOut(PaymentOut):
    """Answer of ``POST /payments``: the payment plus what the browser needs to pay."""

    model_config = ConfigDict(title="CreatedPayment")

    client_secret: str | None = Field(
        description="The PaymentIntent's client secret; null while the intent is not created."
    )
    pending_reason: str | None = Field(
        default=None, description="Why the intent is not created yet (202 answers only)."
    )


class PaymentPage(BaseModel):
    model_config = ConfigDict(title="PaymentPage")

    data: list[PaymentOut]
    next: str | None = Field(description="Pass as `after` to get the next page; null at the end.")


class ConfirmPaymentBody(BaseModel):
    """Body of ``POST /payments/<id>/confirm``."""

    model_config = ConfigDict(extra="forbid", title="ConfirmPayment")

    payment_method: Annotated[
        str,
        StringConstraints(min_length=4, max_length=255, pattern=r"^(pm|card|src)_[A-Za-z0-9_]+$"),
    ] = Field(
        description="A payment method made in the browser by Stripe.js (pm_…, or the card_… "
        "of a token); never raw card details."
    )


class ConfirmationOut(BaseModel):
    """What Stripe answered to the confirmation; the payment's status follows by webhook."""

    model_config = ConfigDict(title="Confirmation")

    payment: PaymentOut
    provider_payment_id: str
    provider_status: str = Field(
        description="The PaymentIntent's status at Stripe, e.g. succeeded or requires_action "
        "(then finish 3-D Secure with Stripe.js confirmCardPayment)."
    )
    failure_code: str | None
    failure_message: str | None


class TimelineStep(BaseModel):
    model_config = ConfigDict(title="TimelineStep")

    key: str = Field(description="stored, intent, confirmed, webhook, database or event")
    label: str
    state: str = Field(json_schema_extra={"enum": ["done", "waiting", "failed"]})
    detail: str
    at: str | None = Field(json_schema_extra={"format": "date-time"})


class TimelineOut(BaseModel):
    """``GET /payments/<id>/timeline``: the payment from the primary and every hop it made."""

    model_config = ConfigDict(title="Timeline")

    payment: PaymentOut
    finished: bool = Field(
        description="The status is no longer pending and its payment-status-update event was found."
    )
    steps: list[TimelineStep]
    audit: list[dict[str, JsonValue]] = Field(description="payment_events rows, oldest first.")
    webhooks: list[dict[str, JsonValue]] = Field(
        description="webhook_events rows of this payment: event_id, type, received_at, "
        "processed_at, outcome."
    )
    emitted: dict[str, JsonValue] = Field(
        description="events: the payment's payment-status-update events; complete: false "
        "when Kafka did not answer or the read budget ran out (error says which)."
    )


class CheckoutTokenOut(BaseModel):
    """Answer of ``POST /payments/<id>/checkout-token``."""

    model_config = ConfigDict(title="CheckoutToken")

    payment_id: str = Field(json_schema_extra={"format": "uuid"})
    token: str = Field(
        description="Bearer token for the customer's browser: confirms and follows this one "
        "payment until expires_at, nothing else."
    )
    expires_at: str = Field(json_schema_extra={"format": "date-time"})
    checkout_url: str = Field(description="The checkout page for this payment (relative URL).")


class DemoOrderCreatedOut(CreatedPaymentOut):
    """Answer of ``POST /checkout/orders``: the payment the demo shop made, and the browser's
    token for it (null only with authentication disabled and no CHECKOUT_TOKEN_SECRET)."""

    model_config = ConfigDict(title="DemoOrderCreated")

    checkout_token: str | None
    checkout_token_expires_at: str | None = Field(json_schema_extra={"format": "date-time"})


class HealthOut(BaseModel):
    model_config = ConfigDict(title="Health")

    status: str = Field(json_schema_extra={"enum": ["up"]})


class ReadyOut(BaseModel):
    """Up or down per part (primary, replicas), nothing more."""

    model_config = ConfigDict(title="Ready")

    status: str = Field(json_schema_extra={"enum": ["ready", "not ready"]})
    checks: dict[str, Annotated[str, Field(json_schema_extra={"enum": ["up", "down"]})]]


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(title="Problem", extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = Field(default_factory=list)


class WebhookAck(BaseModel):
    model_config = ConfigDict(title="WebhookAck")

    status: str
    outcome: str | None = None


def schema_components(*extra: type[BaseModel]) -> dict[str, Any]:
    """JSON schemas of every model (and ``extra`` ones), for ``components.schemas``."""
    models: list[type[BaseModel]] = [
        CreatePaymentBody,
        PaymentOut,
        CreatedPaymentOut,
        PaymentPage,
        ConfirmPaymentBody,
        ConfirmationOut,
        TimelineOut,
        CheckoutTokenOut,
        DemoOrderCreatedOut,
        HealthOut,
        ReadyOut,
        FieldError,
        Problem,
        WebhookAck,
        *extra,
    ]
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            out[name] = sub
        out[model.model_config.get("title") or model.__name__] = schema
    return out
