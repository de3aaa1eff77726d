"""Ids and cursors in URLs, parsed exactly as the OpenAPI document describes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from uuid import UUID

from payments.ports import PageCursor

# Idempotency-Key: printable ASCII, no space at either end (HTTP strips it), 1 to 255 characters.
IDEMPOTENCY_KEY_MAX = 255


def idempotency_key_pattern(max_length: int = IDEMPOTENCY_KEY_MAX) -> str:
    return rf"^[!-~]([ -~]{{0,{max_length - 2}}}[!-~])?$"


IDEMPOTENCY_KEY_PATTERN = idempotency_key_pattern()
# The `limit` query parameter as the server reads it (its range is checked after).
LIMIT_PATTERN = r"^[0-9]{1,3}$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID = re.compile(UUID_PATTERN)


def parse_payment_id(raw: str) -> UUID:
    """The UUID of ``raw`` in its canonical 8-4-4-4-12 hex form; ``ValueError`` otherwise
    (``uuid.UUID`` alone also takes braces, ``urn:uuid:`` and 32 bare hex digits)."""
    if not _UUID.fullmatch(raw):
        raise ValueError(f"not a canonical UUID: {raw!r}")
    return UUID(raw)


# --- the `after` cursor of GET /payments: "<created_at in µs since the epoch>-<id as 32 hex>" ---

CURSOR_PATTERN = r"^[0-9]{1,16}-[0-9a-f]{32}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(cursor: PageCursor) -> str:
    """A keyset position as text every value of which is a valid position (so the document's
    pattern and the server agree exactly)."""
    return f"{(cursor.created_at - _EPOCH) // _MICROSECOND}-{cursor.id.hex}"


def decode_cursor(raw: str) -> PageCursor:
    if not _CURSOR.fullmatch(raw):
        raise ValueError(f"not a cursor: {raw!r}")
    micros, _, ident = raw.partition("-")
    return PageCursor(_EPOCH + int(micros) * _MICROSECOND, UUID(hex=ident))
