"""The Stripe stand-in as the fault suite runs it, so that killing it is a fair fault.

localstripe keeps its whole state in one pickle, and that pickle is a poor stand-in for
Stripe's durability (read in ``localstripe/resources.py`` and ``server.py``, 1.15):

* its path is fixed, ``/tmp/localstripe.pickle``, for every instance on the machine: each
  stack's stand-in (ours, other engineers', a scratch one in a test) overwrites the others'
  state after every write, so a restart without ``--from-scratch`` loads whichever instance
  wrote last, and one with it (what ``scripts/stack`` does) forgets everything;
* it is written in place (``open('wb')`` + ``pickle.dump``), so a SIGKILL during a write leaves
  a truncated file, and the next start fails (only ``FileNotFoundError`` is caught);
* apart from that it loses nothing a client was told: every POST is dumped before its answer
  goes out. What a SIGKILL does lose is the webhooks due in the next second (they wait in
  memory), which real Stripe would retry and the reconciler catches here, and the webhook
  endpoints (``/_config/webhooks``), which live in memory and are registered again on start.

So the suite takes its stack's stand-in over once, state and all (``adopt``), and from then on
runs it as ``python -m tests.faults.standin``: the same localstripe, with its state in a file
of its own under the stack folder, replaced atomically once per request that changed it
(before the answer), so a SIGKILL and a restart in place keep everything Stripe acknowledged,
as real Stripe does. Three Stripe behaviours the fault suite
needs and localstripe lacks are added on the way, as Stripe documents them: ``cancel`` takes a
``cancellation_reason`` (shown on the intent; the expiry cancels with ``abandoned``), a cancel
sends ``payment_intent.canceled``, and a POST with an ``Idempotency-Key`` seen before answers
what the first one did (localstripe ignores the header: a create the API gave up on while the
stand-in was frozen, then finished by the worker, made two intents where Stripe makes one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.stack_support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
# The stack's own check (a zombie is not alive).
from localstack.processes import alive

SHARED_PICKLE = Path("/tmp/localstripe.pickle")
# Stripe's documented values of PaymentIntent.cancellation_reason that a caller may send.
CANCELLATION_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer", "abandoned"})
MODULE = "tests.faults.standin"


# ------------------------------------------------------------------------------ the process


def _patch_localstripe(state: Path) -> None:
    """Point localstripe's store at ``state`` (atomic replace) and add what Stripe does and it
    does not. Must run before ``localstripe.server`` is imported: it reads the routes then."""
    import pickle

    from localstripe import resources
    from localstripe.errors import UserError
    from localstripe.webhooks import schedule_webhook

    def load(store: Any) -> None:
        with contextlib.suppress(FileNotFoundError):
            old = pickle.loads(state.read_bytes())  # noqa: S301 - the stand-in's own file
            dict.clear(store)
            dict.update(store, old)

    def dump(store: Any) -> None:
        tmp = state.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(dict(store), protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, state)

    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = dump
    # localstripe also dumps the whole store on every object it stores, several times a
    # request: the dump its middleware makes once a POST/DELETE is handled, before the answer
    # goes out, is the one durability needs (nothing changes the store outside a request for
    # card payments), and the others would cost O(store) each.
    resources.Store.__setitem__ = dict.__setitem__
    resources.Store.__delitem__ = dict.__delitem__

    intent_cls = resources.PaymentIntent
    original_cancel = intent_cls._api_cancel

    def cancel(id: str, cancellation_reason: str | None = None, **kwargs: Any) -> Any:
        if cancellation_reason is not None and cancellation_reason not in CANCELLATION_REASONS:
            raise UserError(400, f"Invalid cancellation_reason: {cancellation_reason}")
        obj = original_cancel(id, **kwargs)
        obj.cancellation_reason = cancellation_reason
        obj.canceled_at = int(time.time())
        schedule_webhook(resources.Event("payment_intent.canceled", obj))
        return obj

    # Exported on every intent, as on Stripe (null until canceled).
    intent_cls.cancellation_reason = None
    intent_cls.canceled_at = None
    intent_cls._api_cancel = staticmethod(cancel)
    resources.extra_apis[:] = [
        (method, url, cancel if func == original_cancel else func)
        for method, url, func in resources.extra_apis
    ]


def _idempotency_middleware() -> Any:
    """Stripe's idempotent requests, which localstripe ignores: a POST with an
    ``Idempotency-Key`` already used answers what the first one answered (same status and
    body, ``Idempotent-Replayed: true``), a reuse with other parameters is refused (400), and
    a reuse while the first is still running conflicts (409). Only successes are kept (Stripe
    keeps errors too; the suite only needs successes not to happen twice). Kept in the store,
    so they survive a SIGKILL like the objects they made."""
    import hashlib

    from aiohttp import web
    from localstripe.resources import store

    running: set[str] = set()

    def error(status: int, message: str) -> web.Response:
        body = {"error": {"type": "idempotency_error", "message": message}}
        return web.json_response(body, status=status)

    @web.middleware
    async def idempotency(request: web.Request, handler: Any) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key or not request.path.startswith("/v1/"):
            passed: web.StreamResponse = await handler(request)
            return passed
        slot = f"idempotency_key:{key}"
        digest = hashlib.sha256(request.path.encode() + b"\0" + await request.read()).hexdigest()
        first = store.get(slot)
        if first is not None:
            if first["digest"] != digest:
                return error(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                )
            return web.Response(
                status=first["status"],
                body=first["body"],
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        if slot in running:
            return error(409, "There is currently another in-progress request using this key.")
        running.add(slot)
        try:
            response: web.StreamResponse = await handler(request)
        finally:
            running.discard(slot)
        if 200 <= response.status < 300 and isinstance(response, web.Response):
            store[slot] = {"digest": digest, "status": response.status, "body": response.body}
        return response

    return idempotency


def intents_in(state: Path) -> list[str]:
    """The PaymentIntent ids in a localstripe pickle (ours or the shared one)."""
    _patch_localstripe(state)
    from localstripe import resources

    resources.store.try_load_from_disk()  # only reads: a load writes nothing back
    return [k.split(":", 1)[1] for k in resources.store if k.startswith("payment_intent:")]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument(
        "--list-intents", action="store_true", help="print the intent ids in --state and exit"
    )
    args = parser.parse_args(argv)
    if args.list_intents:
        print("\n".join(intents_in(args.state)))
        return
    _patch_localstripe(args.state)
    from localstripe import server

    server.app.middlewares.append(_idempotency_middleware())  # innermost: before the dump
    sys.argv = [sys.argv[0], "--port", str(args.port)]  # no --from-scratch: load the state
    server.start()


# ------------------------------------------------------------------------------ the suite's side


@dataclass(frozen=True)
class StandIn:
    """The stack's stand-in: where it listens, its files, and the webhook endpoint it calls."""

    port: int
    webhook_url: str
    webhook_secret: str
    stack_dir: Path

    @classmethod
    def of_stack(cls, stripe_api_base: str, api_url: str, webhook_secret: str) -> StandIn:
        """The stand-in of this checkout's stack: on the port of its ``STRIPE_API_BASE``,
        calling the API at ``api_url`` (both shifted with the stack's ports: another stack's
        stand-in on the default port is not ours to take over)."""
        port = urllib.parse.urlsplit(stripe_api_base).port
        if port is None:
            raise AssertionError(f"STRIPE_API_BASE {stripe_api_base!r} names no port")
        return cls(
            port=port,
            webhook_url=f"{api_url.rstrip('/')}/webhooks/stripe",
            webhook_secret=webhook_secret,
            stack_dir=(ROOT / os.environ.get("STACK_DIR", ".stack")).resolve(),
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.stack_dir / "run" / "localstripe.pid"

    @property
    def state(self) -> Path:
        return self.stack_dir / "faults" / "localstripe.pickle"

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def is_ours(self) -> bool:
        pid = self.pid()
        try:
            return MODULE in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (FileNotFoundError, TypeError):
            return False

    def answers(self) -> bool:
        with contextlib.suppress(requests.RequestException):
            r = requests.get(
                f"{self.base}/v1/payment_intents",
                params={"limit": 1},
                auth=("sk_test_standin", ""),
                timeout=2,
            )
            return r.status_code == 200
        return False

    def register_webhook(self, url: str | None = None) -> None:
        """Point the endpoint ``local`` (the one ``scripts/stack`` registers) at ``url``."""
        form = {"url": url or self.webhook_url, "secret": self.webhook_secret}
        r = requests.post(
            f"{self.base}/_config/webhooks/local",
            data=urllib.parse.urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
        )
        r.raise_for_status()

    def intent_ids(self) -> set[str]:
        ids: set[str] = set()
        params: dict[str, Any] = {"limit": 100}
        while True:
            r = requests.get(
                f"{self.base}/v1/payment_intents",
                params=params,
                auth=("sk_test_standin", ""),
                timeout=30,
            )
            r.raise_for_status()
            page = r.json()
            ids.update(i["id"] for i in page["data"])
            if not page.get("has_more") or not page["data"]:
                return ids
            params["starting_after"] = page["data"][-1]["id"]

    def start(self) -> int:
        """Start our stand-in on the stack's port, loading its own state; wait until it answers
        and register the API's webhook endpoint again (localstripe keeps it in memory)."""
        logs = self.stack_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.state.parent.mkdir(parents=True, exist_ok=True)
        with open(logs / "localstripe.log", "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start {MODULE}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    MODULE,
                    "--port",
                    str(self.port),
                    "--state",
                    str(self.state),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, as scripts/stack expects
            )
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 60
        while not self.answers():
            if proc.poll() is not None:
                raise AssertionError(
                    f"the stand-in exited with {proc.returncode} on start; see "
                    f"{logs / 'localstripe.log'}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("the stand-in did not answer within 60 s of its start")
            time.sleep(0.2)
        self.register_webhook()
        return proc.pid

    def adopt(self) -> None:
        """Take the stack's stand-in over, keeping everything it knows.

        Its state is only in the shared pickle: make it write one that carries a fresh marker,
        copy it, and keep the copy once it holds the marker and exactly the intents the
        stand-in lists (another instance may have written over it in between: then again);
        then stop it and start ours on that copy.
        """
        if self.is_ours():
            return
        known = self.intent_ids()
        self.state.parent.mkdir(parents=True, exist_ok=True)
        candidate = self.state.with_suffix(".adopted")
        for _attempt in range(20):
            marker = f"faults-marker-{uuid.uuid4().hex}"
            r = requests.post(
                f"{self.base}/v1/customers",
                data={"description": marker},
                auth=("sk_test_standin", ""),
                timeout=10,
            )
            r.raise_for_status()  # a POST: the stand-in dumps its whole store before answering
            with contextlib.suppress(FileNotFoundError):
                copy = SHARED_PICKLE.read_bytes()
                candidate.write_bytes(copy)
                if marker.encode() in copy and set(self.listed(candidate)) == known:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"could not read the stand-in's own state from {SHARED_PICKLE}: other "
                "localstripe instances on this machine kept writing over it"
            )
        self.stop()
        os.replace(candidate, self.state)
        self.start()
        missing = known - self.intent_ids()
        assert not missing, f"the stand-in lost {len(missing)} intents when taken over"

    @staticmethod
    def listed(state: Path) -> list[str]:
        """Intent ids in a state file, read by a separate process (loading a localstripe
        pickle builds localstripe objects, which is no business of the test process)."""
        result = subprocess.run(
            [sys.executable, "-m", MODULE, "--state", str(state), "--list-intents"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            return []  # not a whole pickle (written over while we read)
        return result.stdout.split()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


if __name__ == "__main__":
    main(sys.argv[1:])
