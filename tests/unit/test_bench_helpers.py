"""The benchmark suite's pure helpers: percentiles from histogram buckets, the table and ratio
formatting, synthetic envelopes (must decode like Debezium's), the paging fake Stripe."""

from __future__ import annotations

import json
import math

import pytest

from bench.__main__ import parse_args
from bench.envelopes import pending_insert, succeeded_update
from bench.reconcile import VirtualClock, limited_stripe
from bench.recovery import Probe
from bench.report import (
    Figure,
    bucket_delta,
    format_ratio,
    histogram_quantile,
    parse_histogram,
    parse_vmrss_kib,
    percentile,
    render_table,
    share_at_or_below,
)
from bench.throughput import steady_rate
from cdc.envelope import Op, decode
from payments.adapters.rate_limit import RateLimiter
from payments.domain.status import Status
from tests.fakes import FakeIntent

METRICS = """# HELP payments_cdc_delay_seconds commit on the primary -> processed by the worker
# TYPE payments_cdc_delay_seconds histogram
payments_cdc_delay_seconds_bucket{le="0.1"} 10.0
payments_cdc_delay_seconds_bucket{le="0.5"} 60.0
payments_cdc_delay_seconds_bucket{le="1.0"} 99.0
payments_cdc_delay_seconds_bucket{le="+Inf"} 100.0
payments_cdc_delay_seconds_count 100.0
payments_cdc_delay_seconds_sum 40.0
payments_cdc_changes_total{op="c"} 100.0
"""


def test_histogram_buckets_are_parsed_in_order_with_inf_last() -> None:
    buckets = parse_histogram(METRICS, "payments_cdc_delay_seconds")
    assert buckets == [(0.1, 10.0), (0.5, 60.0), (1.0, 99.0), (math.inf, 100.0)]
    assert parse_histogram(METRICS, "no_such_histogram") == []


def test_quantiles_interpolate_inside_the_bucket_like_prometheus() -> None:
    buckets = parse_histogram(METRICS, "payments_cdc_delay_seconds")
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.05)  # half of the first bucket
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * 40 / 50)
    assert histogram_quantile(0.99, buckets) == pytest.approx(1.0)
    # Beyond the last finite bound Prometheus answers that bound.
    assert histogram_quantile(0.999, buckets) == pytest.approx(1.0)
    assert math.isnan(histogram_quantile(0.5, []))


def test_a_delta_between_two_scrapes_counts_only_what_happened_between() -> None:
    before = [(0.1, 5.0), (1.0, 8.0), (math.inf, 10.0)]
    after = [(0.1, 5.0), (1.0, 18.0), (math.inf, 30.0)]
    delta = bucket_delta(before, after)
    assert delta == [(0.1, 0.0), (1.0, 10.0), (math.inf, 20.0)]
    assert share_at_or_below(1.0, delta) == pytest.approx(0.5)
    assert histogram_quantile(0.25, delta) == pytest.approx(0.1 + 0.9 * 0.5)
    with pytest.raises(ValueError, match="not a bucket bound"):
        share_at_or_below(0.7, delta)


def test_the_probe_reports_how_often_the_worker_loop_woke_late_in_its_window() -> None:
    """Counts between the first and the last read only: 3 wakeups late by more than 50 ms
    (1 of them by more than 250 ms) out of 100 in the window."""
    probe = Probe(worker=None, auth=None)  # type: ignore[arg-type]
    assert probe.loop_lag() == "loop lag not read"
    probe.lag_first = [(0.05, 500.0), (0.25, 505.0), (1.0, 510.0), (math.inf, 510.0)]
    probe.lag_last = [(0.05, 597.0), (0.25, 604.0), (1.0, 610.0), (math.inf, 610.0)]
    assert probe.loop_lag() == (
        "worker loop late > 50 ms 3, > 250 ms 1 of 100 wakeups (worst <= 1.0 s)"
    )


def test_exact_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


@pytest.mark.parametrize(
    ("ratio", "shown"),
    [(0.5123, "0.51"), (1 / 8333, "1/8,333"), (0.075, "1/13"), (None, "—"), (250.0, "250")],
)
def test_ratios_read_as_fractions_when_small(ratio: float | None, shown: str) -> None:
    assert format_ratio(ratio) == shown


def test_the_table_has_one_row_per_figure_and_escapes_pipes() -> None:
    table = render_table(
        [
            Figure("intake", "166/s", "1,567/s", 0.106, "≥ 0.5", False, "a | b"),
            Figure("memory", "147 MiB", "—", None, "< 500 MB", True),
            Figure("recovery", "3 s", "21 s", 0.14, "report both", None),
        ]
    )
    lines = table.splitlines()
    assert lines[0].startswith("| figure | project | baseline (same run) | ratio |")
    assert len(lines) == 5
    assert "| 0.11 | ≥ 0.5 | **no** | a \\| b |" in lines[2]
    assert "| yes |" in lines[3] and "| report |" in lines[4]


def test_rss_is_read_from_proc_status() -> None:
    assert parse_vmrss_kib("Name:\tpython\nVmHWM:\t  9000 kB\nVmRSS:\t  151234 kB\n") == 151234
    with pytest.raises(ValueError):
        parse_vmrss_kib("Name:\tzombie\n")


def test_steady_rate_leaves_out_the_start_up() -> None:
    samples = [(10.0, 1_000), (11.0, 2_000), (14.0, 5_000)]
    assert steady_rate(samples, 5_000, started=0.0) == pytest.approx(1_000)
    # Everything in one sample: counted from the start.
    assert steady_rate([(4.0, 800)], 800, started=0.0) == pytest.approx(200)


def test_synthetic_envelopes_decode_like_debeziums() -> None:
    key, value, pid = pending_insert(7, created_at=1_700_000_000.0)
    change = decode(value)
    assert change is not None and change.op is Op.CREATE
    assert str(change.payment_id) == pid and json.loads(key) == {"id": pid}
    assert change.after is not None and change.after.status is Status.PENDING
    assert change.after.created_at.timestamp() == 1_700_000_000.0
    assert change.committed_at_ms is not None
    _, update = succeeded_update(pid, created_at=1_700_000_000.0, seq=8)
    changed = decode(update)
    assert changed is not None and changed.status_changed
    assert changed.after is not None and changed.after.status is Status.SUCCEEDED


def test_the_stand_in_stripe_pages_events_and_keeps_to_the_rate_limit() -> None:
    clock = VirtualClock()
    stripe = limited_stripe(RateLimiter(25, clock=clock.monotonic, sleep=clock.sleep), clock.sleep)
    for i in range(250):
        stripe.intents[f"pi_{i}"] = _intent(f"pi_{i}")
        stripe.succeed(f"pi_{i}")
    pages = list(stripe.event_pages(None, since=0))
    assert [len(p.events) for p in pages] == [100, 100, 50] and stripe.calls == 3
    for i in range(100):
        stripe.retrieve_intent(f"pi_{i}")
    # 103 calls at 25/s with a burst of 25 and 30 ms each: about (103 - 25) / 25 s.
    assert stripe.calls == 103
    assert 103 * 0.030 <= clock.elapsed <= (103 - 25) / 25 + 103 * 0.030 + 0.1


def _intent(intent_id: str) -> FakeIntent:
    return FakeIntent(intent_id, "requires_payment_method", 100, "usd", "s", {}, 0)


def test_quick_is_the_default_and_full_the_flag() -> None:
    assert parse_args([]).full is False
    assert parse_args(["--full", "--only", "cdc"]).full is True
    assert parse_args(["--only", "cdc", "--only", "intake"]).only == ["cdc", "intake"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "nonsense"])
