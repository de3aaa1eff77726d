"""The operations page: ``GET /ops`` (server-rendered HTML that refreshes itself) and
``GET /ops.json`` (the same snapshot). Thin: ``ops`` collects, this renders.

Both answer 200 even when parts are down: each section says whether it could be read and why not.
They need the operator credential (``api.operator``), not an API key: they show every tenant's
payment ids and amounts and the internals' addresses and traces.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template

from api.operator import operator_required
from api.problems import ApiProblem
from ops.snapshot import Observer
from payments.domain.errors import PaymentsError
from payments.domain.money import Money

ops_bp = Blueprint("ops", __name__, template_folder="templates")
REFRESH_SECONDS = 5


def _observer() -> Observer:
    observer: Observer | None = current_app.extensions["payments"].observer
    if observer is None:
        raise ApiProblem(
            503,
            "Monitoring not configured",
            "this app was built over dependencies handed in, without an observer; build it from "
            "the settings alone (create_app(settings)) or hand build_api_services an observer",
            kind="ops-unavailable",
        )
    return observer


def _money(amount_minor: Any, currency: Any) -> str:
    try:
        return str(Money(int(amount_minor), str(currency)))
    except (PaymentsError, TypeError, ValueError):
        return f"{amount_minor} {currency}"


def _partitions(partitions: Any) -> str:
    if partitions is None:
        return "?"
    return ", ".join(str(p) for p in partitions) or "—"


@ops_bp.get("/ops")
@operator_required
def ops_page() -> Response:
    snapshot = _observer().snapshot()
    html = render_template(
        "ops.html",
        snap=snapshot,
        s=snapshot["sections"],
        refresh=REFRESH_SECONDS,
        money=_money,
        parts=_partitions,
    )
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


@ops_bp.get("/ops.json")
@operator_required
def ops_json() -> Response:
    response = jsonify(_observer().snapshot())
    response.headers["Cache-Control"] = "no-store"
    return response
