"""``payments-worker``: Faust's CLI (``payments-worker worker``) plus commands that ask the
running workers (over their web port) for the pending table and reconciliation figures."""

from __future__ import annotations

import json
import sys
from typing import Any

import faust
import requests
from faust.cli import option
from kafka.errors import KafkaError

from payments.settings import Settings
from streams.app import create_app
from streams.topics import create_missing_topics

TIMEOUT = 600.0  # a reconcile-now may take as long as a cycle


def _ask(method: str, urls: tuple[str, ...], path: str) -> list[dict[str, Any]]:
    answers = []
    for url in urls:
        try:
            resp = requests.request(method, url.rstrip("/") + path, timeout=TIMEOUT)
            resp.raise_for_status()
            answers.append({"url": url, **resp.json()})
        except requests.RequestException as exc:
            answers.append({"url": url, "error": f"worker not reachable: {exc}"})
    return answers


def add_commands(app: faust.App, settings: Settings) -> None:
    default_url = (f"http://127.0.0.1:{settings.worker_web_port}",)
    url_option = option(
        "--url",
        "urls",
        multiple=True,
        default=default_url,
        help="a running worker's web URL (repeat for several workers)",
    )

    @app.command(url_option, option("--limit", default=10, help="how many of the oldest"))
    async def pending(self: Any, urls: tuple[str, ...], limit: int) -> None:
        """Pending payments each worker holds: count and the oldest."""
        for answer in _ask("GET", urls, f"/pending/?limit={limit}"):
            self.say(json.dumps(answer, indent=2))

    @app.command(url_option)
    async def reconcile_now(self: Any, urls: tuple[str, ...]) -> None:
        """Run a reconciliation cycle now on each worker and print its figures."""
        for answer in _ask("POST", urls, "/reconcile/"):
            answer.pop("checked_ids", None)
            answer.pop("owned_ids", None)
            self.say(json.dumps(answer, indent=2))

    @app.command(url_option)
    async def stats(self: Any, urls: tuple[str, ...]) -> None:
        """The last reconciliation cycle's figures of each worker."""
        for answer in _ask("GET", urls, "/stats/"):
            self.say(json.dumps(answer, indent=2))


def main() -> None:
    settings = Settings()
    if sys.argv[1:2] == ["worker"]:
        try:
            created = create_missing_topics(settings)
        except KafkaError as exc:  # Faust waits for the broker and creates them itself
            print(f"payments-worker: could not pre-create topics: {exc}", flush=True)
        else:
            if created:
                print(f"payments-worker: created topics {', '.join(created)}", flush=True)
    app = create_app(settings)
    add_commands(app, settings)
    app.main()


if __name__ == "__main__":
    main()
