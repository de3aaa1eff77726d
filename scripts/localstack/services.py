"""The Python services: the Stripe stand-in, the API (gunicorn) and the Faust workers."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from localstack.config import HOST, ROOT, Config, instance_number
from localstack.envfile import minimal_env
from localstack.processes import check_port_free, http_json, port_open, spawn, wait_until
from payments.settings import Settings


def start_localstripe(cfg: Config, values: Mapping[str, str]) -> None:
    check_port_free(cfg.localstripe_port, "localstripe")
    argv = [
        str(ROOT / ".venv/bin/localstripe"),
        "--port",
        str(cfg.localstripe_port),
        "--from-scratch",
    ]
    spawn(cfg, "localstripe", argv, minimal_env())
    wait_until(
        cfg,
        "localstripe",
        lambda: port_open(cfg.localstripe_port),
        f"HTTP on {cfg.localstripe_port}",
    )
    register_webhook(cfg, values)


def register_webhook(cfg: Config, values: Mapping[str, str]) -> None:
    """localstripe forgets its config on restart: (re)register the API's webhook endpoint. It
    signs with the first secret of STRIPE_WEBHOOK_SECRET (the API accepts every one listed)."""
    secret = values.get("STRIPE_WEBHOOK_SECRET", "").split(",")[0].strip()
    form = urllib.parse.urlencode(
        {"url": f"{cfg.api_url}/webhooks/stripe", "secret": secret}
    ).encode()
    http_json(f"{cfg.stripe_url}/_config/webhooks/local", "POST", form)


def start_api(cfg: Config, env: Mapping[str, str]) -> None:
    check_port_free(cfg.api_port, "api")
    argv = [
        str(ROOT / ".venv/bin/gunicorn"),
        "--bind",
        f"{HOST}:{cfg.api_port}",
        "--workers",
        str(cfg.api_workers),
        "--timeout",
        "30",
        "api:create_app()",
    ]
    spawn(cfg, "api", argv, env)
    # What /ops lists as workers: `up` restarts the API when the worker count changes.
    (cfg.run / "api.worker_url").write_text(env.get("WORKER_URL", "") + "\n")
    wait_until(
        cfg,
        "api",
        lambda: http_json(f"{cfg.api_url}/healthz") is not None,
        f"GET /healthz on {cfg.api_port}",
    )


def api_worker_url(cfg: Config) -> str | None:
    path = cfg.run / "api.worker_url"
    return path.read_text().strip() if path.exists() else None


def start_worker(cfg: Config, name: str, env: Mapping[str, str], settings: Settings) -> None:
    """One Faust worker instance: its own web port and, with WORKER_DATA_DIR empty, its own
    RocksDB folder (Settings.worker_state_dir: .stack/worker/<app id>-<port>)."""
    port = cfg.worker_port(instance_number(name))
    check_port_free(port, name)
    child = dict(env)
    child["WORKER_WEB_PORT"] = str(port)
    child["WORKER_DATA_DIR"] = ""  # derived per instance, never shared
    # Faust creates the folder but not its parents.
    state_dir = settings.model_copy(update={"worker_web_port": port, "worker_data_dir": ""})
    (ROOT / state_dir.worker_state_dir).parent.mkdir(parents=True, exist_ok=True)
    argv = [
        str(ROOT / ".venv/bin/payments-worker"),
        "worker",
        "--web-port",
        str(port),
        "--loglevel",
        "info",
    ]
    spawn(cfg, name, argv, child)
    wait_until(cfg, name, lambda: port_open(port), f"worker web on {port}")
