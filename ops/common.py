"""What every source shares: the error that names the part, and the default timeout."""

from __future__ import annotations

import re
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 2.0


class ObserveError(Exception):
    """A part could not be asked; the message says which part, where, and why."""


class PartlyObserved(ObserveError):
    """Some of a section could be read and some not (e.g. one worker of two is down): the
    section turns red with the message, and still shows ``data``."""

    def __init__(self, message: str, data: Any) -> None:
        super().__init__(message)
        self.data = data


def short_reason(text: str) -> str:
    """The useful end of a long requests/urllib3 message (``[Errno 111] Connection refused``)."""
    found = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if found:
        return found.group(0).strip()
    if "timed out" in text.lower():
        return "timed out"
    return text.strip()[:500]
