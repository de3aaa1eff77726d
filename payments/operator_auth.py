"""The operator credential, framework-free: HTTP Basic against ``settings.operator_logins``
(``OPERATOR_CREDENTIALS=user:password,...``). The API's operator views and the worker's web
views both ask :func:`operator_login`; each answers a refusal in its own framework."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping


def basic_credentials(authorization: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) of an ``Authorization: Basic <base64 of user:password>`` header; None
    for any other scheme, a token that is not strict base64, or one without a colon."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def operator_login(logins: Mapping[str, str], authorization: str | None) -> str | None:
    """The operator's user name when ``authorization`` carries one of ``logins``, else None.
    Every configured login is compared, in constant time, whatever matches: the time taken
    says nothing of which user names exist."""
    given = basic_credentials(authorization)
    if given is None:
        return None
    user, password = given
    matched: str | None = None
    for name, secret in logins.items():
        same_user = hmac.compare_digest(user, name.encode())
        same_password = hmac.compare_digest(password, secret.encode())
        if same_user and same_password:
            matched = name
    return matched
