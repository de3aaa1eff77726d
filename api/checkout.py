"""``GET /checkout``: a server-rendered page where a person pays and watches every hop.

The page itself is static HTML plus one script (``static/checkout.js``), no build step. It uses
the public API (``POST /payments``, ``POST /payments/<id>/confirm``,
``GET /payments/<id>/timeline``) like any other client.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template

from api.bootstrap import ApiServices
from payments.domain.money import ZERO_DECIMAL

checkout_bp = Blueprint(
    "checkout",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/checkout/static",
)
STRIPE_JS = "https://js.stripe.com/v3/"
CURRENCY_CHOICES = ("usd", "eur", "gbp", "chf", "jpy")


def stripe_js_url(api_base: str, browser_base: str) -> str:
    """Stripe's own Stripe.js for real Stripe (empty base); the stand-in's copy otherwise."""
    base = (browser_base or api_base).rstrip("/")
    return f"{base}/js.stripe.com/v3/" if base else STRIPE_JS


@checkout_bp.get("/checkout")
def page() -> Response:
    services: ApiServices = current_app.extensions["payments"]
    settings = services.settings
    html = render_template(
        "checkout.html",
        stripe_js=stripe_js_url(settings.stripe_api_base, settings.stripe_browser_api_base),
        config={
            "publishableKey": settings.stripe_publishable_key,
            # The stand-in's Stripe.js cannot attach a card element to an intent.
            "standIn": bool(settings.stripe_api_base),
            "zeroDecimal": sorted(ZERO_DECIMAL),
        },
        currencies=CURRENCY_CHOICES,
    )
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response
