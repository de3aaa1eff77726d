"""Kafka Connect: render a connector file's ``${ENV}`` placeholders and register it over REST."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


class ConnectError(Exception):
    """Kafka Connect refused or failed; the message says what to do."""


def render(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}``; a missing name without default is an error."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConnectError(f"connector config needs the environment variable {name}")

    return _PLACEHOLDER.sub(sub, text)


def load_connector(path: Path, env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """(name, config) of a connector file ``{"name": ..., "config": {...}}``."""
    doc = json.loads(render(path.read_text(encoding="utf-8"), env))
    return str(doc["name"]), {str(k): str(v) for k, v in doc["config"].items()}


@dataclass(frozen=True)
class ConnectorState:
    connector: str
    tasks: tuple[tuple[int, str, str | None], ...]  # (id, state, trace)

    @property
    def running(self) -> bool:
        return (
            self.connector == "RUNNING"
            and bool(self.tasks)
            and all(state == "RUNNING" for _, state, _ in self.tasks)
        )

    @property
    def failed_trace(self) -> str | None:
        for _, state, trace in self.tasks:
            if state == "FAILED":
                return trace or "(no trace)"
        return None


class ConnectClient:
    """A small REST client with timeouts and bounded retries (409 during rebalances, 5xx, down)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        attempts: int = 8,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.session = session or requests.Session()
        self._sleep = sleep

    def _request(self, method: str, path: str, body: Any = None) -> requests.Response:
        url = f"{self.base_url}{path}"
        last: str = ""
        for attempt in range(self.attempts):
            try:
                resp = self.session.request(method, url, json=body, timeout=self.timeout)
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code != 409 and resp.status_code < 500:
                    return resp
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
            self._sleep(min(8.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
        raise ConnectError(f"{method} {url} failed after {self.attempts} attempts: {last}")

    def put_config(self, name: str, config: Mapping[str, str]) -> bool:
        """Create or update; True when created. Idempotent."""
        resp = self._request("PUT", f"/connectors/{name}/config", dict(config))
        if resp.status_code not in (200, 201):
            raise ConnectError(
                f"Kafka Connect refused connector {name}: HTTP {resp.status_code} "
                f"{resp.text[:1000]}"
            )
        return resp.status_code == 201

    def status(self, name: str) -> ConnectorState | None:
        resp = self._request("GET", f"/connectors/{name}/status")
        if resp.status_code == 404:
            return None
        doc = resp.json()
        tasks = tuple((int(t["id"]), str(t["state"]), t.get("trace")) for t in doc.get("tasks", []))
        return ConnectorState(str(doc["connector"]["state"]), tasks)

    def delete(self, name: str) -> None:
        resp = self._request("DELETE", f"/connectors/{name}")
        if resp.status_code not in (204, 404):
            raise ConnectError(f"cannot delete connector {name}: HTTP {resp.status_code}")

    def wait_running(self, name: str, *, timeout: float = 90.0) -> ConnectorState:
        deadline = time.monotonic() + timeout
        state: ConnectorState | None = None
        while time.monotonic() < deadline:
            state = self.status(name)
            if state is not None:
                if state.running:
                    return state
                trace = state.failed_trace
                if trace is not None or state.connector == "FAILED":
                    raise ConnectError(
                        f"connector {name} FAILED to start. Task error trace:\n{trace}"
                    )
            self._sleep(1.0)
        raise ConnectError(
            f"connector {name} not RUNNING after {timeout:.0f}s (last state: {state})"
        )
