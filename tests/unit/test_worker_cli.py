"""``payments-worker worker``: the log level comes from LOG_LEVEL unless the command says."""

from __future__ import annotations

from streams.cli import with_log_level


def test_a_worker_started_by_hand_logs_at_the_settings_level() -> None:
    argv = ["payments-worker", "worker", "--web-port", "6067"]
    assert with_log_level(argv, "INFO") == [*argv, "--loglevel", "info"]
    assert with_log_level(argv, "warning") == [*argv, "--loglevel", "warn"]


def test_a_log_level_on_the_command_line_wins() -> None:
    for given in (["--loglevel", "debug"], ["-l", "error"], ["--loglevel=crit"]):
        argv = ["payments-worker", "worker", *given]
        assert with_log_level(argv, "INFO") == argv
