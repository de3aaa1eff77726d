"""The demo shop's merchant data: its price list, its tenant and the body of its order step.

The server decides what each order costs; the browser only names the order (``api.checkout``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import EmailText
from payments.domain.money import Money

# The demo shop's merchant: its payments belong to this tenant (`dev` with auth disabled).
DEMO_TENANT = "demo"
# Idempotency keys of the demo shop live apart from any API client's keys.
DEMO_KEY_PREFIX = "checkout-demo:"
DEMO_KEY_MAX = 255 - len(DEMO_KEY_PREFIX)


@dataclass(frozen=True)
class DemoOrder:
    sku: str
    label: str
    price: Money


DEMO_ORDERS: dict[str, DemoOrder] = {
    order.sku: order
    for order in (
        DemoOrder("coffee", "Coffee beans, 1 kg", Money(1999, "usd")),
        DemoOrder("teapot", "Cast-iron teapot", Money(4500, "eur")),
        DemoOrder("matcha", "Matcha, 100 g", Money(2400, "gbp")),
        DemoOrder("kettle", "Kyusu kettle", Money(3500, "jpy")),
    )
}
DEFAULT_ORDER = "coffee"


class DemoOrderBody(BaseModel):
    """Body of ``POST /checkout/orders``: which order and who pays; no amount, the server
    prices the order."""

    model_config = ConfigDict(extra="forbid", title="DemoOrder")

    order: str = Field(
        description="One of the demo shop's orders.",
        json_schema_extra={"enum": list(DEMO_ORDERS)},
    )
    customer_email: EmailText | None = None
