"""The fidelity bench's pure parts: its cases and the utilisation each run reached."""

from __future__ import annotations

import argparse

import pytest

from adapter.bench.fidelity import parse_case, peak_utilisation


def test_peak_utilisation_is_the_busiest_window_of_arrivals_over_plan_capacity():
    from adapter.bench.fidelity import peak_utilisation

    rows = [{"achieved_rps": 10, "capacity_rps": 100}] * 20 + [{"achieved_rps": 90, "capacity_rps": "100"}] * 10
    assert peak_utilisation(rows) == 0.9
    assert peak_utilisation(rows, window_s=20) == 0.5
    assert peak_utilisation([{"achieved_rps": 5, "capacity_rps": ""}] * 12) is None  # no plan in force
    assert peak_utilisation(rows[:5]) is None  # shorter than one window


def test_a_case_is_workload_policy_and_an_optional_load_factor():
    parser = argparse.ArgumentParser(prog="fidelity")
    assert parse_case(parser, "bursty:adapter") == ("bursty", "adapter", 1.0)
    assert parse_case(parser, "fluctuating:ipa:x3") == ("fluctuating", "ipa", 3.0)


@pytest.mark.parametrize("case, message", [
    ("bursty", "expected WORKLOAD:POLICY or WORKLOAD:POLICY:xK"),
    ("bursty:adapter:3", "expected WORKLOAD:POLICY or WORKLOAD:POLICY:xK"),
    ("bursty:adapter:x0", "expected WORKLOAD:POLICY or WORKLOAD:POLICY:xK"),
    ("bursty:adapter:xinf", "expected WORKLOAD:POLICY or WORKLOAD:POLICY:xK"),
    ("burst:adapter", "workload must be one of"),
    ("bursty:oracle2", "policy must be one of"),
])
def test_a_malformed_case_is_a_usage_error_naming_it(case, message, capsys):
    with pytest.raises(SystemExit):
        parse_case(argparse.ArgumentParser(prog="fidelity"), case)
    err = capsys.readouterr().err
    assert f"--case {case}: {message}" in err
