"""The Python services: the Stripe stand-in, the API's pools (gunicorn) and the Faust workers."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from api.pools import HOOKS, INTAKE, Pool, command
from localstack.config import HOST, ROOT, Config, http_url, instance_number
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
    """localstripe forgets its config on restart: (re)register the API's webhook endpoint, on
    the hooks pool. It signs with the first secret of STRIPE_WEBHOOK_SECRET (the API accepts
    every one listed)."""
    secret = values.get("STRIPE_WEBHOOK_SECRET", "").split(",")[0].strip()
    form = urllib.parse.urlencode(
        {"url": f"{cfg.hooks_url}/webhooks/stripe", "secret": secret}
    ).encode()
    http_json(f"{cfg.stripe_url}/_config/webhooks/local", "POST", form)


# The stack's part of each of the API's pools (api/pools.py).
POOL_PARTS: dict[str, Pool] = {"api": INTAKE, "hooks": HOOKS}


def start_api(cfg: Config, env: Mapping[str, str], name: str = "api") -> None:
    """One of the API's pools (``api/pools.py``): ``api`` (intake) on the API port, ``hooks`` on
    its own. Both write their metrics to one directory: the hooks pool's /metrics counts intake."""
    pool = POOL_PARTS[name]
    port = cfg.port_of(name)
    check_port_free(port, name)
    child = {**env, "API_POOL": pool.name, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(cfg))}
    workers = cfg.api_workers if pool is INTAKE else None
    spawn(cfg, name, command(pool, f"{HOST}:{port}", workers=workers), child)
    # What /ops lists as workers: `up` restarts the pool when the worker count changes.
    (cfg.run / f"{name}.worker_url").write_text(env.get("WORKER_URL", "") + "\n")
    wait_until(
        cfg,
        name,
        lambda: http_json(f"{http_url(port)}/healthz") is not None,
        f"GET /healthz on {port}",
    )


def metrics_dir(cfg: Config) -> Path:
    """The API pools' shared PROMETHEUS_MULTIPROC_DIR (``down`` removes it: a counter of a
    process that ended stays counted until then)."""
    path = cfg.run / "api-metrics"
    path.mkdir(parents=True, exist_ok=True)
    return path


def api_worker_url(cfg: Config, name: str) -> str | None:
    path = cfg.run / f"{name}.worker_url"
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
