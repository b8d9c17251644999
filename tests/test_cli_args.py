"""Numeric and choice flags: a bad value is a one-line error naming the flag, before anything
starts (no traceback, no silent run)."""

from __future__ import annotations

import pytest

from adapter.cli import main

BAD_FLAGS = [
    (["simulate", "--seed", "-1", "--poisson"], "--seed: expected an integer >= 0, got '-1'"),
    (["simulate", "--interval", "0"], "--interval: expected a positive number, got '0'"),
    (["simulate", "--interval", "-10"], "--interval: expected a positive number, got '-10'"),
    (["simulate", "--pod-start", "-5"], "--pod-start: expected a number >= 0, got '-5'"),
    (["simulate", "--time-scale", "nan"], "--time-scale: expected a positive number, got 'nan'"),
    (["experiment", "--interval", "inf"], "--interval: expected a positive number, got 'inf'"),
    (["run", "--interval", "-5"], "--interval: expected a positive number, got '-5'"),
    (["run", "--duration", "0"], "--duration: expected a positive number, got '0'"),
    (["run", "--solver", "bogus"], "--solver: invalid choice: 'bogus'"),
    (["demo", "--time-scale", "0"], "--time-scale: expected a positive number, got '0'"),
    (["plan", "--rps", "10", "--headroom", "nan"], "--headroom: expected a number >= 0, got 'nan'"),
]


@pytest.mark.parametrize("argv, message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_bad_flag_is_a_usage_error_naming_it(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_damping_with_a_trace_file_is_refused(tmp_path, capsys):
    trace = tmp_path / "rps.txt"
    trace.write_text("5\n5\n")
    assert main(["simulate", "--trace-file", str(trace), "--damping", "2"]) != 0
    assert "--damping: applies to the named workloads, not to --trace-file" in capsys.readouterr().err
