"""The operator credential (``payments.operator_auth``: HTTP Basic against
``settings.operator_logins``) for ``/ops``, ``/ops.json`` and ``/metrics``.

Views opt in with ``@operator_required``; the API-key hook skips those endpoints (they show
every tenant's payments and the internals' addresses, so a tenant key is not enough). With no
operator credential configured they answer 404: closed by default, never open.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar

from flask import current_app, request

from api.problems import ApiProblem
from payments.operator_auth import operator_login

REALM = "payments-ops"
P = ParamSpec("P")
R = TypeVar("R")


def check_operator(logins: Mapping[str, str], authorization: str | None) -> str:
    """The operator's user name, or an ``ApiProblem``: 404 when no operator credential is
    configured, 401 (with a Basic challenge) when the request does not carry a valid one."""
    if not logins:
        raise ApiProblem(
            404,
            "Not found",
            "operator endpoints are closed: no operator credential is configured "
            "(set OPERATOR_CREDENTIALS=user:password)",
            kind="not-found",
        )
    matched = operator_login(logins, authorization)
    if matched is None:
        raise ApiProblem(
            401,
            "Unauthorized",
            "send an operator credential: 'Authorization: Basic <base64 of user:password>' "
            "with a login from OPERATOR_CREDENTIALS",
            kind="unauthorized",
            field="Authorization",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
        )
    return matched


def operator_required(view: Callable[P, R]) -> Callable[P, R]:
    """Answer the view only to a request with a valid operator credential."""

    @functools.wraps(view)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        settings = current_app.extensions["payments"].settings
        check_operator(settings.operator_logins, request.headers.get("Authorization"))
        return view(*args, **kwargs)

    return guarded
