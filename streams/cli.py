"""``payments-worker``: Faust's CLI (``payments-worker worker``) plus commands that ask the
running workers (over their web port, with the operator credential) for their open payments
and reconciliation figures."""

from __future__ import annotations

import json
import sys
from typing import Any

import faust
import requests
from faust.cli import option
from kafka.errors import KafkaError

from payments.bootstrap import freeze_startup_heap
from payments.settings import Settings
from streams.app import PaymentsWorker
from streams.topics import create_missing_topics

TIMEOUT = 600.0  # a reconcile-now may take as long as a cycle


def _ask(settings: Settings, method: str, urls: tuple[str, ...], path: str) -> list[dict[str, Any]]:
    auth = next(iter(settings.operator_logins.items()), None)
    answers = []
    for url in urls:
        try:
            resp = requests.request(method, url.rstrip("/") + path, timeout=TIMEOUT, auth=auth)
            resp.raise_for_status()
            answers.append({"url": url, **resp.json()})
        except requests.RequestException as exc:
            answers.append({"url": url, "error": f"worker not reachable: {exc}"})
    return answers


def add_commands(app: faust.App, settings: Settings) -> None:
    url_option = option(
        "--url",
        "urls",
        multiple=True,
        default=tuple(settings.worker_urls),
        help="a running worker's web URL (repeat for several workers)",
    )

    @app.command(url_option, option("--limit", default=10, help="how many of the oldest"))
    async def pending(self: Any, urls: tuple[str, ...], limit: int) -> None:
        """Open payments each worker holds: counts and the oldest."""
        for answer in _ask(settings, "GET", urls, f"/pending/?limit={limit}"):
            self.say(json.dumps(answer, indent=2))

    @app.command(url_option)
    async def reconcile_now(self: Any, urls: tuple[str, ...]) -> None:
        """Run a reconciliation cycle now on each worker and print its figures."""
        for answer in _ask(settings, "POST", urls, "/reconcile/"):
            self.say(json.dumps(answer, indent=2))

    @app.command(url_option)
    async def stats(self: Any, urls: tuple[str, ...]) -> None:
        """Each worker's partitions, open payments, last cycle and whether it is blocked."""
        for answer in _ask(settings, "GET", urls, "/stats/"):
            self.say(json.dumps(answer, indent=2))


def web_port_argument(argv: list[str]) -> int | None:
    """``--web-port N`` (or ``--web-port=N``, ``-p N``) of ``payments-worker worker``."""
    for i, arg in enumerate(argv):
        if arg.startswith("--web-port="):
            return int(arg.split("=", 1)[1])
        if arg in ("--web-port", "-p") and i + 1 < len(argv):
            return int(argv[i + 1])
    return None


# Faust's names for the levels of LOG_LEVEL.
FAUST_LOG_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error"}


def with_log_level(argv: list[str], level: str) -> list[str]:
    """``payments-worker worker`` logs at ``LOG_LEVEL`` unless ``--loglevel`` says otherwise
    (Faust's own default, warn, would also draw a progress spinner on stdout)."""
    if any(arg in ("-l", "--loglevel") or arg.startswith("--loglevel=") for arg in argv):
        return argv
    return [*argv, "--loglevel", FAUST_LOG_LEVELS.get(level.upper(), "info")]


def main() -> None:
    settings = Settings()
    if sys.argv[1:2] == ["worker"]:
        sys.argv = with_log_level(sys.argv, settings.log_level)
        port = web_port_argument(sys.argv[2:])
        if port is not None:
            # The port names this instance: its state directory is derived from it, so a
            # second worker started with another port never shares the first one's RocksDB.
            settings = settings.model_copy(update={"worker_web_port": port})
        try:
            created = create_missing_topics(settings)
        except KafkaError as exc:  # Faust waits for the broker and creates them itself
            print(f"payments-worker: could not pre-create topics: {exc}", flush=True)
        else:
            if created:
                print(f"payments-worker: created topics {', '.join(created)}", flush=True)
    worker = PaymentsWorker(settings)
    add_commands(worker.app, settings)
    freeze_startup_heap()
    worker.app.main()


if __name__ == "__main__":
    main()
