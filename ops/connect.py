"""Kafka Connect: the Debezium connector's state and its tasks' traces."""

from __future__ import annotations

from typing import Any

from cdc.connect import ConnectClient, ConnectError
from ops.common import DEFAULT_TIMEOUT_SECONDS, ObserveError, short_reason


class ConnectSource:
    """Through ``cdc.connect``'s client with one short attempt (a page must not wait for
    Connect's rebalances)."""

    def __init__(
        self, base_url: str, connector: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connector = connector
        self.client = ConnectClient(base_url, timeout=timeout, attempts=1, sleep=lambda _: None)

    @property
    def where(self) -> str:
        return f"Kafka Connect at {self.base_url}"

    def status(self) -> dict[str, Any]:
        try:
            state = self.client.status(self.connector)
        except ConnectError as exc:
            raise ObserveError(f"{self.where} unreachable: {short_reason(str(exc))}") from exc
        except ValueError as exc:  # not JSON: something else answers on that port
            raise ObserveError(f"{self.where} answered non-JSON") from exc
        if state is None:
            raise ObserveError(
                f"connector {self.connector} is not registered in {self.where}; "
                "run scripts/register-connectors"
            )
        return {
            "connector": self.connector,
            "state": state.connector,
            "running": state.running,
            "tasks": [{"id": i, "state": s, "trace": trace} for i, s, trace in state.tasks],
            "trace": state.failed_trace,
        }

    def close(self) -> None:
        self.client.session.close()
