"""Money is integer minor units in a currency Stripe supports."""

from __future__ import annotations

import pytest

from payments.domain.errors import InvalidRequest
from payments.domain.money import MAX_AMOUNT_MINOR, Money


def test_valid_amount_and_currency() -> None:
    m = Money(1999, "usd")
    assert (m.amount_minor, m.currency) == (1999, "usd")
    assert str(m) == "19.99 USD"
    assert str(Money(500, "jpy")) == "500 JPY"


@pytest.mark.parametrize("amount", [0, -1, MAX_AMOUNT_MINOR + 1, 10.5, "100", True, None])
def test_bad_amounts_name_the_field_and_value(amount: object) -> None:
    with pytest.raises(InvalidRequest) as err:
        Money(amount, "usd")  # type: ignore[arg-type]
    assert err.value.field == "amount_minor"
    assert repr(amount) in str(err.value) or str(amount) in str(err.value)


@pytest.mark.parametrize("currency", ["USD", "xyz", "", "us", 840, None])
def test_bad_currencies_name_the_field(currency: object) -> None:
    with pytest.raises(InvalidRequest) as err:
        Money(100, currency)  # type: ignore[arg-type]
    assert err.value.field == "currency"


def test_limits_are_inclusive() -> None:
    assert Money(1, "eur").amount_minor == 1
    assert Money(MAX_AMOUNT_MINOR, "eur").amount_minor == MAX_AMOUNT_MINOR
