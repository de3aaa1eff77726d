"""Processes the stack starts: pid files, spawning with a log, waiting, stopping by pid; the
command-line tools it runs to their end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from localstack.config import ROOT, Config, StackError
from localstack.envfile import minimal_env


def pidfile(cfg: Config, name: str) -> Path:
    return cfg.run / f"{name}.pid"


def read_pid(cfg: Config, name: str) -> int | None:
    try:
        return int(pidfile(cfg, name).read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive.
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False
    return True


def pid_alive(cfg: Config, name: str) -> bool:
    return alive(read_pid(cfg, name))


def with_pidfile(cfg: Config) -> list[str]:
    """Names that have a pid file (including instances beyond the current layout)."""
    if not cfg.run.is_dir():
        return []
    return sorted(p.stem for p in cfg.run.glob("*.pid"))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def check_port_free(port: int, what: str) -> None:
    if port_open(port):
        raise StackError(
            f"port {port} for {what} is already in use by another process. Stop that process, "
            "or run this stack on other ports with STACK_PORT_OFFSET (e.g. STACK_PORT_OFFSET=100)."
        )


def log_path(cfg: Config, name: str) -> Path:
    return cfg.logs / f"{name}.log"


def log_tail(cfg: Config, name: str, lines: int = 30) -> str:
    path = log_path(cfg, name)
    if not path.exists():
        return f"(no log at {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def spawn(cfg: Config, name: str, argv: list[str], env: Mapping[str, str]) -> int:
    cfg.logs.mkdir(parents=True, exist_ok=True)
    cfg.run.mkdir(parents=True, exist_ok=True)
    log = open(log_path(cfg, name), "ab")  # noqa: SIM115 - handed to the child
    log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start {name}\n".encode())
    log.flush()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    pidfile(cfg, name).write_text(f"{proc.pid}\n")
    return proc.pid


def run_command(
    argv: Sequence[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end in the checkout, its output captured as text; ``env`` is its
    whole environment (by default ``minimal_env()``: no secret of the stack)."""
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=dict(env) if env is not None else minimal_env(),
    )


def run_tool(
    argv: Sequence[str], what: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``run_command``, raising ``StackError("<what> failed: <its stderr>")`` unless it
    succeeds."""
    result = run_command(argv, env)
    if result.returncode != 0:
        output = result.stderr.strip() or result.stdout.strip()
        raise StackError(f"{what} failed: {output[-2000:]}")
    return result


def wait_until(
    cfg: Config,
    name: str,
    check: Callable[[], bool],
    what: str,
    timeout: float | None = None,
    *,
    has_pid: bool = True,
) -> None:
    limit = timeout or cfg.start_timeout
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if has_pid and not pid_alive(cfg, name):
            raise StackError(f"{name} exited while starting ({what})")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise StackError(f"{name} did not become ready within {limit:.0f}s ({what})")


def terminate(cfg: Config, name: str, sig: signal.Signals = signal.SIGTERM) -> bool:
    """Signal the process group the stack started for ``name``; True if it was running."""
    pid = read_pid(cfg, name)
    if not alive(pid):
        pidfile(cfg, name).unlink(missing_ok=True)
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
    pidfile(cfg, name).unlink(missing_ok=True)
    return True


def http_json(
    url: str,
    method: str = "GET",
    data: bytes | None = None,
    timeout: float = 3,
    headers: Mapping[str, str] | None = None,
) -> object:
    req = urllib.request.Request(url, method=method, data=data, headers=dict(headers or {}))
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else {}
