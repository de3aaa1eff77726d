"""Logging: one JSON line per event of ours; libraries that log every request stay quiet."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from payments.logs import configure_logging, get_logger


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the process writes to stderr, logging configured as the entrypoints do."""
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging("INFO")
    yield buffer
    monkeypatch.undo()
    configure_logging("INFO")  # back on the real stderr for the tests after this one


def test_stripe_pythons_per_request_lines_are_not_logged_but_its_warnings_are(
    logged: io.StringIO,
) -> None:
    stripe_logger = logging.getLogger("stripe")
    stripe_logger.info("message='Request to Stripe api' method=post url=/v1/payment_intents")
    stripe_logger.warning("stripe says something is wrong")
    get_logger("payments.test").info("payment stored", payment_id="p-1")
    lines = [json.loads(line) for line in logged.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "stripe says something is wrong",
        "payment stored",
    ]
    assert lines[1]["payment_id"] == "p-1"


def test_a_librarys_exception_is_logged_with_its_traceback(logged: io.StringIO) -> None:
    """Faust and aiokafka log their crashes through stdlib logging: the line must say where the
    error was raised, not ``<traceback object at 0x…>``."""

    def seek_to(offset: int) -> None:
        raise ValueError("Offset must be a positive integer")

    try:
        seek_to(-2)
    except ValueError:
        logging.getLogger("faust.tables.recovery").exception("Recovery crashed")
    (line,) = [json.loads(x) for x in logged.getvalue().splitlines()]
    assert line["event"] == "Recovery crashed"
    assert "Traceback (most recent call last)" in line["exception"]
    assert "in seek_to" in line["exception"]
    assert "ValueError: Offset must be a positive integer" in line["exception"]
    assert "exc_info" not in line
