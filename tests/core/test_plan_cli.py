"""`tpa plan` through the CLI entry point."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from adapter import paths
from adapter.cli import main
from adapter.core.profile import LatencyFit, Profiles, VariantProfile, save_profiles


def test_plan_table_for_text_search(capsys):
    assert main(["plan", "--pipeline", "text_search", "--rps", "25"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["stage", "variant", "share", "batch", "delay_us", "instances", "p99_ms", "capacity_rps",
                      "accuracy", "cost"]
    assert out.splitlines()[2].startswith("langid") and out.splitlines()[3].startswith("embed")
    assert "text_search at 25 rps, mode single, solver exact: OK" in out


def test_plan_json_matches_the_table(capsys):
    assert main(["plan", "--pipeline", "text_search", "--rps", "25", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["feasible"] is True and plan["reason"] == "Optimal" and plan["solver"] == "exact"
    assert [s["stage"] for s in plan["stages"]] == ["langid", "embed"]
    assert plan["predicted_p99_ms"] <= plan["sla_ms"]
    assert plan["solve_ms"] > 0
    stage = plan["stages"][0]
    assert set(stage["variants"][0]) == {"model", "share", "max_batch_size", "max_queue_delay_us", "instances",
                                         "rps", "predicted_p99_ms", "capacity_rps"}
    assert stage["capacity_rps"] >= 25 * 1.2
    assert plan["cost"] == pytest.approx(sum(s["cost"] for s in plan["stages"]))


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_ilp_solvers_give_the_same_objective(capsys, solver):
    main(["plan", "--pipeline", "text_search", "--rps", "150", "--json"])
    exact = json.loads(capsys.readouterr().out)
    main(["plan", "--pipeline", "text_search", "--rps", "150", "--json", "--solver", solver])
    ilp = json.loads(capsys.readouterr().out)
    assert ilp["objective"] == pytest.approx(exact["objective"], abs=1e-9)


def _write_pipeline(tmp_path: Path) -> tuple[Path, Path]:
    spec = {
        "name": "tiny", "ensemble": "tiny", "sla_ms": 50, "batch_sizes": [1, 2],
        "accuracy": {"combine": "mean", "normalize": "none"},
        "limits": {"max_instances_per_stage": 2, "pod": {"cpu": 8}},
        "stages": [{"name": "only", "variants": [
            {"model": "cheap", "accuracy": 0.6, "resources": {"cpu": 1}},
            {"model": "good", "accuracy": 0.9, "resources": {"cpu": 1}}]}],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    fits = {"cheap": (1.0, 0.5), "good": (10.0, 5.0)}
    profiles = Profiles(variants={
        m: VariantProfile(model=m, measurements=(), latency=LatencyFit(
            kind="poly1", coefficients=(c0, c1, 0.0), rmse_ms=0, max_rel_error=0, max_batch_size=2))
        for m, (c0, c1) in fits.items()})
    save_profiles(profiles, tmp_path / "prof.json")
    return tmp_path / "spec.yaml", tmp_path / "prof.json"


def test_plan_any_spec_and_profiles(tmp_path, capsys):
    spec, prof = _write_pipeline(tmp_path)
    # fit is recomputed from measurements on load; with none saved, write them by hand instead
    doc = json.loads(prof.read_text())
    for name, (c0, c1) in {"cheap": (1.0, 0.5), "good": (10.0, 5.0)}.items():
        doc["models"][name]["measurements"] = [
            {"batch_size": b, "instances": 1, "p50_ms": c0 + c1 * b, "p99_ms": c0 + c1 * b,
             "throughput_rps": 1000 * b / (c0 + c1 * b), "requests": 100} for b in (1, 2)]
    prof.write_text(json.dumps(doc))
    assert main(["plan", "--spec", str(spec), "--profiles", str(prof), "--rps", "20", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["stages"][0]["variants"][0]["model"] == "good"  # 20 rps: one instance of the good one fits
    assert main(["plan", "--spec", str(spec), "--profiles", str(prof), "--rps", "400", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["feasible"] is True and plan["stages"][0]["variants"][0]["model"] == "cheap"
    assert main(["plan", "--spec", str(spec), "--profiles", str(prof), "--rps", "100000"]) == 1
    out = capsys.readouterr().out
    assert "INFEASIBLE (Capacity)" in out and "why: stage `only` cannot serve 100000 rps" in out
    assert main(["plan", "--spec", str(spec), "--profiles", str(prof), "--rps", "100000",
                 "--allow-infeasible"]) == 0
    assert "INFEASIBLE (Capacity)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code", "match"),
    [
        (["plan", "--rps", "5"], 2, "expected exactly one of --pipeline NAME or --spec FILE"),
        (["plan", "--pipeline", "nope", "--rps", "5"], 2, "--pipeline: expected one of"),
        (["plan", "--pipeline", "text_search", "--rps", "-1"], 2, "rps: expected a finite number >= 0, got -1"),
        (["plan", "--pipeline", "text_search", "--rps", "5", "--profiles", "/nonexistent.json"], 2,
         "/nonexistent.json: cannot read profiles"),
    ],
)
def test_plan_errors(capsys, argv, code, match):
    assert main(argv) == code
    assert match in capsys.readouterr().err


def test_text_search_fixed_mode_uses_the_most_accurate_variants(capsys):
    assert main(["plan", "--pipeline", "text_search", "--rps", "10", "--mode", "fixed", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["variants"][0]["model"] for s in plan["stages"]] == ["langid_lingua_high", "embed_l6_int8"]
    # text_search scores the measured end-to-end accuracy (normalize: none): the best product
    assert plan["accuracy_score"] == pytest.approx(plan["accuracy"]) == pytest.approx(0.9244 * 0.5033, abs=1e-3)
    assert not math.isnan(plan["objective"])
    assert paths.ENSEMBLES.name == "ensembles"


def test_an_overload_best_effort_plan_still_fits_the_pod(capsys):
    """Past what 2 cores can serve, the best effort is the most capacity the pod can run,
    not each stage's best on a pod of its own."""
    assert main(["plan", "--pipeline", "text_search", "--rps", "1000", "--json"]) == 1  # infeasible
    plan = json.loads(capsys.readouterr().out)
    assert plan["feasible"] is False and plan["reason"] in ("Resources", "Capacity")
    assert plan["cost"] <= 2
