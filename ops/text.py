"""The snapshot as the terminal lines of ``make status``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ops.snapshot import Snapshot


def _parts(partitions: Sequence[int] | None) -> str:
    if partitions is None:
        return "?"
    return ",".join(str(p) for p in partitions) or "-"


def _worker_lines(data: dict[str, Any]) -> list[str]:
    where = (
        f"consumer group {data['group']}"
        if data["found_in"] == "group"
        else "WORKER_URL (not found in the consumer group)"
    )
    lines = [f"  workers ({len(data['workers'])}) from {where}; partitions of {data['topic']}:"]
    if data.get("note"):
        lines.append(f"    note: {data['note']}")
    for w in data["workers"]:
        who = w["url"] or w["member_id"]
        client = f" [{w['client_id']} on {w['client_host']}]" if w.get("client_id") else ""
        parts = f"active {_parts(w['active'])} standby {_parts(w['standby'])}"
        if not w["ok"]:
            lines.append(f"  worker {who}{client} {parts}: UNAVAILABLE - {w['error']}")
            continue
        by_status = w.get("by_status")
        detail = (
            " (" + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())) + ")"
            if by_status
            else ""
        )
        cycle = w["last_cycle"]
        last = (
            "no reconciliation cycle yet"
            if not cycle
            else (
                f"last cycle: {cycle.get('resolved')} resolved, {cycle.get('expired')} expired, "
                f"{cycle.get('errors')} errors, {cycle.get('stripe_calls')} Stripe calls"
            )
        )
        lines.append(f"  worker {who}{client} {parts}; open {w['open']}{detail}; {last}")
        if w.get("blocked"):
            b = w["blocked"]
            lines.append(
                f"    BLOCKED on partition {b.get('partition')} since {b.get('since')}: "
                f"{b.get('reason')}"
            )
        lines.extend(_waiting_retry_lines(w.get("waiting_retry")))
    return lines


def _waiting_retry_lines(waiting: dict[str, Any] | None) -> list[str]:
    if not waiting or not (waiting["count"] or waiting["payments"]):
        return []
    shown = waiting["payments"]
    total = waiting["count"] if waiting["count"] is not None else "?"
    lines = [f"    waiting for a retry: {total} payments (the {len(shown)} due soonest):"]
    for r in shown:
        lines.append(
            f"      {r.get('payment_id')} attempt {r.get('attempts')}, next in "
            f"{r.get('next_in_seconds')} s: {r.get('reason')}"
        )
    return lines


def format_text(snapshot: Snapshot) -> list[str]:
    lines: list[str] = []
    for name, section in snapshot["sections"].items():
        if not section["ok"]:
            lines.append(f"  {section['title']}: UNAVAILABLE - {section['error']}")
        data = section["data"]
        if data is None:
            continue
        if name == "topics":
            for t in data:
                ends = " ".join(f"p{r['partition']}={r['end_offset']}" for r in t["end_offsets"])
                lines.append(f"  topic {t['topic']:<44} {t['messages']:>8} messages  [{ends}]")
        elif name == "events":
            for e in data:
                lines.append(
                    f"  event {e['timestamp']} {e.get('payment_id') or e['key']} "
                    f"{e.get('previous_status')} -> {e.get('status')} ({e.get('source')})"
                )
            if not data:
                lines.append("  no payment-status-update events yet")
        elif name == "consumer_groups":
            for g in data:
                lines.append(
                    f"  group {g['group']:<30} {g['state']:<12} "
                    f"members {'-' if g['members'] is None else g['members']}  "
                    f"lag {'-' if g['lag'] is None else g['lag']}"
                )
        elif name == "connector":
            tasks = ", ".join(f"task {t['id']} {t['state']}" for t in data["tasks"])
            lines.append(f"  connector {data['connector']} {data['state']}; {tasks or 'no tasks'}")
            if data["trace"]:
                lines.append("    " + data["trace"].strip().splitlines()[0][:300])
        elif name == "slots":
            for s in data:
                lines.append(
                    f"  slot {s['slot_name']:<24} {s['slot_type']:<8} active={s['active']!s:<5} "
                    f"lag {s['lag_bytes']} bytes, retained WAL {s['retained_bytes']} bytes"
                )
        elif name == "replicas":
            for r in data:
                lines.append(
                    f"  replica {r['application_name']:<12} {r['state']:<10} "
                    f"replay lag {r['replay_lag_bytes']} bytes"
                    + (
                        f" ({r['replay_lag_seconds']:.3f} s)"
                        if r["replay_lag_seconds"] is not None
                        else ""
                    )
                )
        elif name == "worker":
            lines.extend(_worker_lines(data))
    return lines
