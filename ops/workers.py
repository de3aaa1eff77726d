"""The Faust workers: every member of the worker group, found from Kafka, and what each one's
web views say.

Faust's ``PartitionAssignor`` (faust/assignor/partition_assignor.py) puts a JSON
``ClientMetadata`` in each member's subscription user data, including ``url``, the worker's
``canonical_url``; the leader answers each member with the same record, zlib-compressed, in the
assignment's user data, whose ``assignment`` holds ``actives`` and ``standbys`` (topic ->
partitions) as ``ClientAssignment`` (faust/assignor/client_assignment.py). The Kafka
protocol's own assignment lists only what the member consumes (actives, plus standbys of the
table changelogs), so the standbys of the change topic come from Faust's record.

When the group cannot be described, or has no members, the configured ``WORKER_URL`` list is
asked instead.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from ops.common import DEFAULT_TIMEOUT_SECONDS, ObserveError, PartlyObserved, short_reason
from ops.kafka import GroupMember

# ----------------------------------------------------------------------------- Faust's metadata


@dataclass(frozen=True)
class FaustMember:
    """One member of the worker group, decoded. ``standby`` is None when Faust's own record
    could not be read (only the Kafka assignment, hence the actives, is known)."""

    member_id: str
    client_id: str
    client_host: str
    url: str | None
    active: list[int]
    standby: list[int] | None
    problem: str | None = None


def _json(data: bytes | None) -> Mapping[str, Any] | None:
    if not data:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, Mapping) else None


def _assignment_record(data: bytes | None) -> Mapping[str, Any] | None:
    """Faust's ``ClientMetadata`` from the assignment's user data (zlib, then JSON)."""
    if not data:
        return None
    try:
        return _json(zlib.decompress(data))
    except zlib.error:
        return None


def _partitions(assignment: Any, kind: str, topic: str) -> list[int] | None:
    if not isinstance(assignment, Mapping):
        return None
    per_topic = assignment.get(kind)
    if not isinstance(per_topic, Mapping):
        return None
    return sorted(int(p) for p in per_topic.get(topic) or [])


def faust_member(member: GroupMember, topic: str) -> FaustMember:
    """What one group member is: its web URL and its active and standby partitions of
    ``topic``."""
    subscribed = _json(member.subscription_user_data) or {}
    record = _assignment_record(member.assignment_user_data)
    url = subscribed.get("url") or (record or {}).get("url")
    problem = None
    assignment = (record or {}).get("assignment")
    active = _partitions(assignment, "actives", topic)
    standby = _partitions(assignment, "standbys", topic)
    if active is None:
        # Faust's record is missing or unreadable: Kafka's own assignment still says what
        # the member consumes (its actives of the change topic).
        active = sorted(member.assigned.get(topic, []))
        standby = None
        if member.assigned:
            problem = "Faust's assignment record could not be read; standbys unknown"
    if not url:
        problem = (
            f"member {member.member_id} of the group has no worker URL in its subscription "
            "(not a Faust worker?)"
        )
    return FaustMember(
        member_id=member.member_id,
        client_id=member.client_id,
        client_host=member.client_host,
        url=str(url).rstrip("/") if url else None,
        active=active,
        standby=standby,
        problem=problem,
    )


# ----------------------------------------------------------------------------- /stats/ shapes


def waiting_retry(raw: Any) -> dict[str, Any] | None:
    """``{"count", "payments"}``: the failed reconciliation checks a worker lists (a bounded
    list and the total); an earlier worker served the list alone (count unknown)."""
    if isinstance(raw, Mapping):
        count = raw.get("count")
        return {
            "count": count if isinstance(count, int) else None,
            "payments": list(raw.get("payments") or []),
        }
    if isinstance(raw, list):
        return {"count": None, "payments": raw}
    return None


def worker_figures(stats: Mapping[str, Any], pending: Mapping[str, Any] | None) -> dict[str, Any]:
    """One worker's figures from its ``/stats/`` (and ``/pending/`` when it answered), in
    either shape the worker serves:

    * ``{"worker", "url", "partitions": {"active", "standby"}, "open": {"count", "by_status"},
      "last_cycle", "blocked", "waiting_retry": {"count", "payments"}}``;
    * the earlier ``{"worker", "last_cycle", "pending"}``, with the partitions and count in
      ``/pending/``.
    """
    opened = stats.get("open")
    if isinstance(opened, Mapping):
        count = opened.get("count")
        by_status = opened.get("by_status")
    else:
        count = stats.get("pending", (pending or {}).get("count"))
        by_status = None
    parts = stats.get("partitions")
    reported: dict[str, Any] | None = None
    if isinstance(parts, Mapping):
        reported = {"active": parts.get("active"), "standby": parts.get("standby")}
    elif pending is not None and isinstance(pending.get("partitions"), list):
        reported = {"active": pending["partitions"], "standby": None}
    return {
        "worker": stats.get("worker"),
        "open": count,
        "by_status": dict(by_status) if isinstance(by_status, Mapping) else None,
        "oldest": list((pending or {}).get("oldest") or []),
        "last_cycle": stats.get("last_cycle"),
        "blocked": stats.get("blocked"),
        "waiting_retry": waiting_retry(stats.get("waiting_retry")),
        "reported": reported,
    }


# ----------------------------------------------------------------------------- the source


class WorkerSource:
    """Every worker of the group ``group``: found in Kafka through ``members`` (the group's
    description), else at ``fallback_urls``; each asked for ``/stats/`` and ``/pending/`` with
    the operator credential ``auth`` (HTTP Basic) when one is configured."""

    def __init__(
        self,
        group: str,
        topic: str,
        *,
        members: Callable[[str], Sequence[GroupMember]] | None,
        fallback_urls: Sequence[str],
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        auth: tuple[str, str] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.group = group
        self.topic = topic
        self.members = members
        self.urls = [u.rstrip("/") for u in fallback_urls]
        self.timeout = timeout
        self.auth = auth
        self.session = session or requests.Session()

    @property
    def where(self) -> str:
        return f"consumer group {self.group} (else {', '.join(self.urls) or 'no WORKER_URL'})"

    def _get(self, url: str) -> Any:
        try:
            resp = self.session.get(url, timeout=self.timeout, auth=self.auth)
        except requests.RequestException as exc:
            raise ObserveError(f"worker at {url} unreachable: {short_reason(str(exc))}") from exc
        if resp.status_code == 401:
            raise ObserveError(
                f"worker at {url} refused the operator credential (HTTP 401): give the worker "
                "and the API the same OPERATOR_CREDENTIALS"
                + ("" if self.auth else "; none is configured here")
            )
        if resp.status_code != 200:
            raise ObserveError(f"worker at {url} answered HTTP {resp.status_code}")
        try:
            return resp.json()
        except ValueError as exc:
            raise ObserveError(f"worker at {url} answered non-JSON") from exc

    def _ask(self, base: str) -> dict[str, Any]:
        """One worker's figures, or why it could not be read."""
        try:
            stats = self._get(f"{base}/stats/")
            if not isinstance(stats, Mapping):
                raise ObserveError(f"worker at {base}/stats/ answered {type(stats).__name__}")
        except ObserveError as exc:
            return {"ok": False, "error": str(exc)}
        try:  # the oldest pending payment; optional
            pending = self._get(f"{base}/pending/?limit=1")
        except ObserveError:
            pending = None
        return {
            "ok": True,
            "error": None,
            **worker_figures(stats, pending if isinstance(pending, Mapping) else None),
        }

    def _discover(self) -> tuple[list[FaustMember], str | None]:
        """The group's members, or none and why the configured URLs are asked instead."""
        if self.members is None:
            return [], None
        try:
            found = [faust_member(m, self.topic) for m in self.members(self.group)]
        except ObserveError as exc:
            return [], f"{exc}; asking WORKER_URL instead"
        except (ValueError, KeyError, TypeError) as exc:
            return [], (
                f"consumer group {self.group} has a member whose metadata could not be read "
                f"({type(exc).__name__}: {exc}); asking WORKER_URL instead"
            )
        if not found:
            return [], f"consumer group {self.group} has no members; asking WORKER_URL instead"
        return found, None

    def workers(self) -> dict[str, Any]:
        members, note = self._discover()
        rows: list[dict[str, Any]] = []
        if members:
            for m in sorted(members, key=lambda m: (m.url or "", m.member_id)):
                rows.append(
                    {
                        "url": m.url,
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                        "active": m.active,
                        "standby": m.standby,
                        "note": m.problem,
                    }
                )
        else:
            for url in self.urls:
                rows.append(
                    {
                        "url": url,
                        "member_id": None,
                        "client_id": None,
                        "client_host": None,
                        "active": None,
                        "standby": None,
                        "note": None,
                    }
                )
        if not rows:
            why = (note or "").removesuffix("; asking WORKER_URL instead")
            raise ObserveError(
                f"no worker to ask: {why or f'consumer group {self.group} has no members'}, "
                "and WORKER_URL is empty"
            )
        targets = [r["url"] for r in rows if r["url"]]
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
            answers = dict(zip(targets, pool.map(self._ask, targets), strict=True))
        for row in rows:
            if row["url"] is None:
                row.update({"ok": False, "error": row["note"]})
                continue
            row.update(answers[row["url"]])
            if row["active"] is None and row.get("reported"):
                # Found by URL, not in the group: what the worker says it owns.
                row["active"] = row["reported"]["active"]
                row["standby"] = row["reported"]["standby"]
        data = {
            "group": self.group,
            "topic": self.topic,
            "found_in": "group" if members else "WORKER_URL",
            "note": note,
            "workers": rows,
        }
        failed = [str(r["error"]) for r in rows if not r["ok"]]
        if failed:
            down = f"{len(failed)} of {len(rows)} workers unreadable: " + "; ".join(failed)
            raise PartlyObserved(f"{note}; {down}" if note else down, data)
        return data

    def close(self) -> None:
        self.session.close()
