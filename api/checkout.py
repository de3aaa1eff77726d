"""``GET /checkout``: a server-rendered page where a person pays and watches every hop.

The browser never holds an API key and never decides an amount. As with Stripe, the merchant's
server makes the payment and hands the browser something that can only pay it:

* **a merchant's checkout**: the merchant's server calls ``POST /payments`` (its API key, its
  amount), then ``POST /payments/<id>/checkout-token`` and sends the customer to
  ``/checkout?token=<token>``. The page shows that payment and nothing else.
* **the demo shop** (local stand-in or ``API_AUTH_DISABLED`` only): ``GET /checkout[?order=…]``
  lists a few orders whose prices live here, on the server. Paying calls
  ``POST /checkout/orders`` (open, the demo merchant's server-side step): the server prices
  the order, creates the payment for tenant ``demo`` with the browser's idempotency key, and
  answers the payment, its client secret and a checkout token.

Either way the browser then holds only the token (``api.checkout_tokens``): it confirms the
payment (``POST /payments/<id>/confirm``) and follows it (``GET /payments/<id>/timeline``),
and is refused anything else, any other payment, and anything after it expires.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from api.auth import DEV_TENANT, checkout_tokens, tokens_not_configured
from api.bootstrap import ApiServices
from api.capacity import stripe_bound
from api.checkout_tokens import TokenRefused, TokensNotConfigured
from api.demo_shop import (
    DEFAULT_ORDER,
    DEMO_KEY_MAX,
    DEMO_KEY_PREFIX,
    DEMO_ORDERS,
    DEMO_TENANT,
    DemoOrder,
    DemoOrderBody,
)
from api.problems import ApiProblem
from api.views import created_response, idempotency_key, json_object
from payments.service import CreatePayment
from payments.settings import Settings

checkout_bp = Blueprint(
    "checkout",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/checkout/static",
)
STRIPE_JS = "https://js.stripe.com/v3/"


def stripe_js_url(api_base: str, browser_base: str) -> str:
    """Stripe's own Stripe.js for real Stripe (empty base); the stand-in's copy otherwise."""
    base = (browser_base or api_base).rstrip("/")
    return f"{base}/js.stripe.com/v3/" if base else STRIPE_JS


def demo_shop_open(settings: Settings) -> bool:
    """The open demo merchant runs only where no real money can move."""
    return settings.stripe_is_local or settings.api_auth_disabled


def _services() -> ApiServices:
    found: ApiServices = current_app.extensions["payments"]
    return found


def _demo_closed() -> ApiProblem:
    return ApiProblem(
        404,
        "No demo shop here",
        "the demo shop runs only against the local Stripe stand-in; open the checkout link "
        "your shop made with POST /payments/<id>/checkout-token (/checkout?token=…)",
        kind="demo-shop-closed",
    )


def _demo_order(sku: str) -> DemoOrder:
    found = DEMO_ORDERS.get(sku)
    if found is None:
        raise ApiProblem(
            404,
            "No such order",
            f"the demo shop has no order {sku[:40]!r}; choose one of {', '.join(DEMO_ORDERS)}",
            kind="unknown-order",
            field="order",
        )
    return found


def _page(config: dict[str, Any], **context: Any) -> Response:
    settings = _services().settings
    html = render_template(
        "checkout.html",
        stripe_js=stripe_js_url(settings.stripe_api_base, settings.stripe_browser_api_base),
        config={
            "publishableKey": settings.stripe_publishable_key,
            # The stand-in's Stripe.js cannot attach a card element to an intent.
            "standIn": bool(settings.stripe_api_base),
            **config,
        },
        **context,
    )
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    # The token is in the URL: never send it on to Stripe.js or anyone else.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@checkout_bp.get("/checkout")
def page() -> Response:
    if "token" in request.args:
        return _merchant_checkout(request.args["token"])
    if not demo_shop_open(_services().settings):
        raise _demo_closed()
    chosen = _demo_order(request.args.get("order", DEFAULT_ORDER))
    orders = [{"sku": o.sku, "label": o.label, "price": str(o.price)} for o in DEMO_ORDERS.values()]
    return _page({"mode": "shop", "order": chosen.sku}, orders=orders, chosen=chosen.sku)


def _merchant_checkout(token: str) -> Response:
    try:
        grant = checkout_tokens().verify(token)
    except TokensNotConfigured:
        raise tokens_not_configured() from None
    except TokenRefused as exc:
        raise ApiProblem(
            401,
            "Checkout link not valid",
            str(exc),
            kind="unauthorized",
            field="token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None
    payment = _services().service.get(grant.payment_id, tenant_id=grant.tenant)
    bound = {
        "id": str(payment.id),
        "status": payment.status.value,
        "price": str(payment.money),
        "description": payment.description,
        "client_secret": payment.client_secret,
    }
    return _page({"mode": "payment", "token": token, "payment": bound}, bound=bound)


@checkout_bp.post("/checkout/orders")
@stripe_bound
def start_demo_order() -> Response:
    """The demo merchant's server-side step: price the order, create its payment, and hand the
    browser a token for that payment only."""
    settings = _services().settings
    if not demo_shop_open(settings):
        raise _demo_closed()
    key = idempotency_key()
    if len(key) > DEMO_KEY_MAX:
        raise ApiProblem(
            400,
            "Invalid Idempotency-Key",
            f"the demo shop takes an Idempotency-Key of at most {DEMO_KEY_MAX} characters",
            kind="invalid-idempotency-key",
            field="Idempotency-Key",
        )
    body = DemoOrderBody.model_validate(json_object())
    order = _demo_order(body.order)
    tokens = checkout_tokens()
    if not tokens.configured and not settings.api_auth_disabled:
        raise tokens_not_configured()  # before anything is stored
    tenant = DEV_TENANT if settings.api_auth_disabled else DEMO_TENANT
    result = _services().service.create_payment(
        CreatePayment(
            idempotency_key=DEMO_KEY_PREFIX + key,
            money=order.price,
            customer_email=body.customer_email,
            description=order.label,
            metadata={"demo_order": order.sku},
            tenant_id=tenant,
        )
    )
    response = created_response(result)
    payload = response.get_json()
    payload["checkout_token"] = None
    payload["checkout_token_expires_at"] = None
    if tokens.configured:  # without a secret (development only) every request is `dev` anyway
        issued = tokens.mint(tenant, result.payment.id)
        payload["checkout_token"] = issued.token
        payload["checkout_token_expires_at"] = issued.grant.expires_at_iso
    answered = jsonify(payload)
    answered.status_code = response.status_code
    if "Idempotent-Replayed" in response.headers:
        answered.headers["Idempotent-Replayed"] = response.headers["Idempotent-Replayed"]
    answered.headers["Cache-Control"] = "no-store"
    return answered
