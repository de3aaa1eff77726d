"""The API as production wires it (``api.bootstrap``: real pools, repository, metrics), but with
the in-process fake Stripe gateway, so the intake benchmark measures the API and PostgreSQL, not
Stripe. ``BENCH_STRIPE_LATENCY_MS`` (set by the benchmark) makes each fake Stripe call sleep that
long in the caller's thread, as a real call to Stripe blocks it.

gunicorn runs ``bench.intake_app:create_app()``; nothing happens at import time.
"""

from __future__ import annotations

import os

from flask import Flask

from api import create_app as create_api
from api.bootstrap import build_api_services
from payments.settings import Settings
from tests.fakes import FakeStripeGateway


def create_app() -> Flask:
    settings = Settings()
    gateway = FakeStripeGateway()
    gateway.latency_seconds = float(os.environ.get("BENCH_STRIPE_LATENCY_MS", "0")) / 1000
    services = build_api_services(settings, gateway=gateway)
    return create_api(settings, services=services)
