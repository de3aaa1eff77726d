"""Pure helpers of the benchmark suite: figures, ratios, the result table, percentiles from a
Prometheus histogram, progress lines. No I/O beyond printing (unit-tested)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

_STARTED = time.monotonic()


def say(message: str) -> None:
    """One progress line, with the seconds since the suite started."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stdout, flush=True)


@dataclass
class Figure:
    """One row of the table. ``ratio`` is project/baseline (None when there is no baseline);
    ``met`` is None when the target is 'report' only."""

    figure: str
    project: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None
    notes: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_ratio(ratio: float | None) -> str:
    """``0.42``, ``1/48`` for small ratios (the reconciliation cost reads better that way)."""
    if ratio is None or math.isnan(ratio):
        return "—"
    if ratio == 0:
        return "0"
    if ratio < 0.1:
        return f"1/{round(1 / ratio):,}"
    if ratio >= 100:
        return f"{ratio:,.0f}"
    return f"{ratio:.2f}"


def format_met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "report"}[met]


def format_rate(per_second: float, unit: str = "/s") -> str:
    if per_second >= 100:
        return f"{per_second:,.0f}{unit}"
    return f"{per_second:.1f}{unit}"


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 100:
        return f"{seconds:.1f} s"
    return f"{seconds:,.0f} s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(figures: Iterable[Figure]) -> str:
    """A Markdown table (readable in a terminal, pasteable into the README)."""
    header = ("figure", "project", "baseline (same run)", "ratio", "target", "met?", "notes")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for f in figures:
        cells = (f.figure, f.project, f.baseline, format_ratio(f.ratio), f.target)
        row = [*cells, format_met(f.met), f.notes]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ percentiles


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of exact samples."""
    if not values:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 1:
        raise ValueError(f"q must be within 0..1, got {q!r}")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


Buckets = list[tuple[float, float]]  # (upper bound "le", cumulative count), ascending, +Inf last


def parse_histogram(text: str, name: str) -> Buckets:
    """The cumulative buckets of histogram ``name`` in Prometheus text format (no labels other
    than ``le``). Missing histogram: empty list."""
    prefix = f"{name}_bucket{{"
    buckets: Buckets = []
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line[len(prefix) :].partition("}")
        le = dict(
            part.split("=", 1) for part in labels.split(",") if part.strip() and "=" in part
        ).get("le")
        if le is None:
            continue
        bound = math.inf if le.strip('"') == "+Inf" else float(le.strip('"'))
        buckets.append((bound, float(value.strip().split()[0])))
    return sorted(buckets)


def bucket_delta(before: Buckets, after: Buckets) -> Buckets:
    """What was observed between two scrapes of the same histogram."""
    if not before:
        return list(after)
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in after]


def histogram_quantile(q: float, buckets: Buckets) -> float:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding the
    q-th observation (the lowest bucket starts at 0). NaN with no observations; the highest
    finite bound when the quantile falls in +Inf."""
    if not 0 <= q <= 1:
        raise ValueError(f"q must be within 0..1, got {q!r}")
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def share_at_or_below(bound: float, buckets: Buckets) -> float:
    """Fraction of observations ``<= bound`` (``bound`` must be a bucket bound)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    for le, count in buckets:
        if le == bound:
            return count / total
    raise ValueError(f"{bound} is not a bucket bound of this histogram")


def parse_vmrss_kib(status_text: str) -> int:
    """``VmRSS`` of a ``/proc/<pid>/status`` text, in KiB."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line (is the process a zombie?)")


def get_histogram_total(buckets: Buckets) -> float:
    """How many observations the (delta) histogram holds."""
    return buckets[-1][1] if buckets else 0.0
