"""Flask application factory: ``create_app(settings)``; gunicorn runs ``api:create_app()``."""

from __future__ import annotations

import atexit
import logging
import re
import time
import uuid

import structlog
from flask import Flask, Response, g, request

from api import problems
from api.auth import Authenticator, check_settings, remember
from api.bootstrap import ApiServices, build_api_services
from api.checkout import checkout_bp
from api.checkout_tokens import CheckoutTokens
from api.contracts import contracts_bp
from api.ops import ops_bp
from api.views import bp
from payments.logs import configure_logging, get_logger
from payments.settings import Settings

log = get_logger("api.request")
# A caller's own X-Request-Id is kept when it is this tame; otherwise one is made.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def create_app(settings: Settings | None = None, *, services: ApiServices | None = None) -> Flask:
    """Build the app. With ``services`` built over fakes (the status events included), nothing
    connects anywhere."""
    settings = settings or (services.settings if services else Settings())
    configure_logging(settings.log_level)
    check_settings(settings)  # ConfigurationError (naming the setting) before anything connects
    # stripe-python logs every request at INFO; our own lines carry what matters.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    # kafka-python (the /ops collector) logs every connection and metadata refresh at INFO.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # ... and warns on every describe that it cannot decode Faust's own assignor metadata.
    logging.getLogger("kafka.admin._groups").setLevel(logging.ERROR)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.api_max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    wired = services or build_api_services(settings)
    app.extensions["payments"] = wired
    tokens = CheckoutTokens(settings.checkout_token_secret, settings.checkout_token_ttl_seconds)
    app.extensions["checkout_tokens"] = tokens
    authenticator = Authenticator(settings, tokens)

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        g.payment_id = None
        g.tenant = None
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)
        remember(authenticator.authenticate())

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        wired.metrics.requests.labels(request.method, endpoint, str(response.status_code)).inc()
        wired.metrics.latency.labels(request.method, endpoint).observe(elapsed)
        response.headers["X-Request-Id"] = g.get("request_id", "")
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round(elapsed * 1000, 2),
            payment_id=g.get("payment_id"),
            tenant=g.get("tenant"),
            request_id=g.get("request_id"),
        )
        return response

    problems.register(app)
    app.register_blueprint(bp)
    app.register_blueprint(checkout_bp)  # GET /checkout
    app.register_blueprint(ops_bp)  # /ops, /ops.json: behind the operator credential
    app.register_blueprint(contracts_bp)  # GET /asyncapi.yaml
    for close in wired.closers:
        atexit.register(close)
    return app
