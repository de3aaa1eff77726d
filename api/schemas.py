"""Request and response shapes of the HTTP API (pydantic); the OpenAPI document uses them too."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from payments.domain.money import CURRENCIES, MAX_AMOUNT_MINOR, MIN_AMOUNT_MINOR
from payments.domain.status import Status

# Stripe's metadata rules: 50 keys (one is ours: payment_id), key <= 40 chars without square
# brackets, value <= 500 chars.
METADATA_MAX_KEYS = 49
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[^\[\]]+$")]
MetadataValue = Annotated[str, StringConstraints(max_length=500)]
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


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


class CreatePaymentBody(BaseModel):
    """Body of ``POST /payments``."""

    model_config = ConfigDict(extra="forbid", title="CreatePayment")

    amount_minor: StrictInt = Field(
        ge=MIN_AMOUNT_MINOR,
        le=MAX_AMOUNT_MINOR,
        description="Amount in the currency's minor unit (cents for usd), an integer.",
    )
    currency: str = Field(
        min_length=3,
        max_length=3,
        description="ISO 4217 code that Stripe supports (lower case; upper case is accepted).",
        json_schema_extra={"enum": list[JsonValue](sorted(CURRENCIES))},
    )
    customer_email: (
        Annotated[str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)] | None
    ) = None
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict, description="Up to 49 string pairs; `payment_id` is reserved."
    )

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        """PostgreSQL text and jsonb hold neither NUL nor lone UTF-16 surrogates."""
        for where, text in _strings(data):
            if "\x00" in text:
                raise ValueError(f"{where} contains a NUL character")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{where} is not valid Unicode text") from None
        return data

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        lowered = value.lower()
        if lowered not in CURRENCIES:
            raise ValueError(f"{value!r} is not an ISO 4217 currency Stripe supports")
        return lowered

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
        str, StringConstraints(min_length=4, max_length=255, pattern=r"^(pm|card|src)_\w+$")
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


def schema_components() -> dict[str, Any]:
    """JSON schemas of every model, for ``components.schemas``."""
    models: list[type[BaseModel]] = [
        CreatePaymentBody,
        PaymentOut,
        CreatedPaymentOut,
        PaymentPage,
        ConfirmPaymentBody,
        ConfirmationOut,
        TimelineOut,
        FieldError,
        Problem,
        WebhookAck,
    ]
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            out[name] = sub
        out[model.model_config.get("title") or model.__name__] = schema
    return out
