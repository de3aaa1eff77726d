"""The API as production wires it (``api.bootstrap``: real pools, repository, metrics), but with
the in-process fake Stripe gateway, so the intake benchmark measures the API and PostgreSQL, not
Stripe.

gunicorn runs ``bench.intake_app:create_app()``; nothing happens at import time.
"""

from __future__ import annotations

from flask import Flask

from api import create_app as create_api
from api.bootstrap import build_api_services
from payments.settings import Settings
from tests.fakes import FakeStripeGateway


def create_app() -> Flask:
    settings = Settings()
    services = build_api_services(settings, gateway=FakeStripeGateway())
    return create_api(settings, services=services)
