"""Structured logging: one JSON line per event (structlog), configured by the entrypoints."""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog

# stripe-python logs two lines per API call at INFO (request, response): at the reconciler's
# rates that was a tenth of a cycle's CPU. The gateway logs retries and failures itself, and
# counts every call (metrics), so the library speaks only from WARNING up.
QUIET_LIBRARIES = ("stripe",)


def _shared() -> list[structlog.types.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _json_formatter() -> logging.Formatter:
    """A stdlib record (a library's: Faust, aiokafka, stripe-python) as one JSON line."""
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # the traceback as text, not a tuple's repr
            structlog.processors.JSONRenderer(),
        ],
        foreign_pre_chain=[*_shared(), structlog.stdlib.add_logger_name],
    )


def stdlib_logging_config(level: str = "INFO") -> dict[str, Any]:
    """Stdlib logging as a ``dictConfig``: every record one JSON line on stderr. Faust's worker
    applies it itself when it starts (its ``logging_config`` setting), instead of its own
    coloured text."""
    quiet = logging.getLevelName(max(logging.WARNING, logging.getLevelName(level)))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": _json_formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {name: {"level": quiet} for name in QUIET_LIBRARIES},
    }


def configure_logging(level: str = "INFO") -> None:
    """Route structlog and stdlib logging to one JSON line per event on stderr."""
    structlog.configure(
        processors=[
            *_shared(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(stdlib_logging_config(level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
