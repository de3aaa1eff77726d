import stripe

from payments.adapters.stripe_gateway import translate_error
from payments.domain.errors import Conflict, ProviderDeclined, RetryableError
from payments.domain.status import Status
from payments.ports import Intent, ProviderEvent


def test_errors_map_by_what_the_caller_should_do() -> None:
    card = stripe.CardError(
        "Your card was declined.", "payment_method", "card_declined", http_status=402
    )
    mapped = translate_error(card, "paying")
    assert isinstance(mapped, ProviderDeclined)
    assert (mapped.code, mapped.field) == ("card_declined", "payment_method")
    invalid = stripe.InvalidRequestError(
        "Invalid currency", "currency", code="parameter_invalid", http_status=400
    )
    assert isinstance(translate_error(invalid, "x"), ProviderDeclined)
    assert isinstance(
        translate_error(stripe.RateLimitError("slow down", http_status=429), "x"), RetryableError
    )
    assert isinstance(translate_error(stripe.APIConnectionError("refused"), "x"), RetryableError)
    assert isinstance(
        translate_error(stripe.APIError("boom", http_status=503), "x"), RetryableError
    )
    assert isinstance(
        translate_error(stripe.IdempotencyError("reused", http_status=400), "x"), Conflict
    )
    assert "creating" in str(translate_error(stripe.APIError("boom", http_status=500), "creating"))


def test_intent_and_event_from_stripe_json() -> None:
    data = {
        "id": "evt_1",
        "type": "payment_intent.payment_failed",
        "created": 5,
        "data": {
            "object": {
                "id": "pi_1",
                "object": "payment_intent",
                "status": "requires_payment_method",
                "amount": 990,
                "currency": "eur",
                "client_secret": "pi_1_secret",
                "metadata": {"payment_id": "abc"},
                "created": 4,
                "last_payment_error": {
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "message": "Your card has insufficient funds.",
                },
            }
        },
    }
    event = ProviderEvent.from_dict(data)
    assert event.intent is not None
    assert event.intent.payment_id == "abc"
    assert event.intent.failure_code == "insufficient_funds"
    assert event.intent.outcome() is Status.FAILED
    fresh = Intent.from_dict({"id": "pi_2", "status": "requires_payment_method"})
    assert fresh.outcome() is None
    assert Intent.from_dict({"id": "pi_3", "status": "succeeded"}).outcome() is Status.SUCCEEDED
    assert (
        ProviderEvent.from_dict(
            {"id": "evt_2", "type": "charge.refunded", "data": {"object": {"object": "charge"}}}
        ).intent
        is None
    )
