"""``register-connectors``: PUT every connector file in ``connectors/`` and wait until RUNNING."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cdc.connect import ConnectClient, ConnectError, load_connector
from payments.settings import Settings


def connector_env(settings: Settings) -> dict[str, str]:
    """The placeholders a connector file may use, from the process settings."""
    env = dict(os.environ)
    env.setdefault("PG_HOST", "127.0.0.1")
    env.setdefault("PG_PORT", "5432")
    env["CDC_TOPIC_PREFIX"] = settings.cdc_topic_prefix
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="register-connectors", description=__doc__)
    parser.add_argument(
        "files", nargs="*", type=Path, default=sorted(Path("connectors").glob("*.json"))
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for connector and task to be RUNNING",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    client = ConnectClient(settings.kafka_connect_url)
    env = connector_env(settings)
    if not args.files:
        print("register-connectors: no connector files found", file=sys.stderr)
        return 1
    for path in args.files:
        try:
            name, config = load_connector(path, env)
            created = client.put_config(name, config)
            print(f"{name}: {'created' if created else 'config up to date / updated'}")
            state = client.wait_running(name, timeout=args.timeout)
            print(f"{name}: RUNNING ({len(state.tasks)} task(s))")
        except (ConnectError, OSError, ValueError, KeyError) as exc:
            print(f"register-connectors: {path}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
