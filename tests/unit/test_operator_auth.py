"""The operator credential check shared by the API's operator views and the worker's web views."""

from __future__ import annotations

import base64

import pytest

from payments.operator_auth import operator_login

LOGINS = {"ops": "s3cret:with-colon", "auditor": "other"}


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("header", "user"),
    [
        (basic(b"ops:s3cret:with-colon"), "ops"),  # the password may hold a colon
        (basic(b"auditor:other"), "auditor"),
        ("  basic " + base64.b64encode(b"auditor:other").decode() + " ", "auditor"),
        (basic(b"ops:other"), None),  # another operator's password
        (basic(b"nobody:other"), None),
        (basic(b"ops"), None),  # no colon
        (basic(b":"), None),
        ("Basic b3BzOnMzY3JldDp3aXRoLWNvbG9u!!", None),  # not strict base64
        ("Basic", None),
        ("Bearer " + base64.b64encode(b"ops:s3cret:with-colon").decode(), None),
        ("", None),
        (None, None),
    ],
)
def test_only_a_configured_login_is_an_operator(header: str | None, user: str | None) -> None:
    assert operator_login(LOGINS, header) == user


def test_no_login_configured_lets_nobody_in() -> None:
    assert operator_login({}, basic(b"ops:s3cret:with-colon")) is None
    assert operator_login({}, basic(b":")) is None
