"""Per-stage latencies from Triton's request trace: a real traced Triton serving text_search, and
trace files cut short (a killed server, a file still being written)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from adapter.errors import ConfigError
from adapter.serving.client import TextClient
from adapter.serving.launcher import LocalTriton
from adapter.serving.tracing import stage_latencies, summarise, trace_args, trace_files

REQUESTS = 30
MEMBERS = ("langid_fasttext", "embed_l3")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A traced Triton (traces written every 10 requests) after one direct request to a member
    and REQUESTS sequential ensemble requests; stopped cleanly so the last part is written.
    Yields the trace path, the monotonic window of the requests, and what was readable live."""
    root = tmp_path_factory.mktemp("tracing")
    trace = root / "not-yet" / "trace.json"  # trace_args must create the folder
    server = LocalTriton(log_path=root / "triton.log", models=[*MEMBERS, "text_search"],
                         extra_args=trace_args(trace, log_frequency=10))
    server.start()
    try:
        client = TextClient(server.endpoints)
        client.infer("embed_l3", ["not part of the ensemble"], ["EMBEDDING"])
        t0 = time.monotonic()
        for i in range(REQUESTS):
            # Both outputs: Triton skips the steps whose outputs a request does not ask for.
            client.infer("text_search", [f"The train number {i} leaves at noon."],
                         ["LANG", "EMBEDDING"])
        t1 = time.monotonic()
        client.close()
        deadline = time.monotonic() + 10
        live = {}
        while time.monotonic() < deadline and len(live.get("text_search", ())) < 20:
            time.sleep(0.2)
            live = stage_latencies(trace, "text_search") if trace_files(trace) else {}
    finally:
        server.stop()
    yield trace, (t0, t1), live


def test_parts_are_written_during_the_run_and_the_rest_at_shutdown(traced):
    trace, _, live = traced
    assert len(live["text_search"]) >= 20  # readable while Triton runs
    assert [p.name for p in trace_files(trace)] == [f"trace.json.{i}" for i in range(4)]


def test_every_ensemble_request_and_each_of_its_stages_is_found(traced):
    trace, (t0, t1), _ = traced
    stages = stage_latencies(trace, "text_search")
    assert set(stages) == {"text_search", *MEMBERS}  # the direct embed_l3 request is not counted
    ensemble = stages["text_search"]
    assert len(ensemble) == REQUESTS and len(set(ensemble.ensemble_id)) == REQUESTS
    for model in MEMBERS:
        assert sorted(stages[model].ensemble_id) == sorted(ensemble.ensemble_id), model
    # The trace clock is CLOCK_MONOTONIC, Python's time.monotonic().
    assert t0 <= ensemble.start_s.min() and ensemble.start_s.max() <= t1
    assert (np.diff(ensemble.start_s) > 0).all()
    assert np.isnan(ensemble.compute_ms).all()
    assert summarise(stages) == {
        m: {"count": REQUESTS, "p50_ms": pytest.approx(np.median(s.total_ms)),
            "p99_ms": pytest.approx(np.percentile(s.total_ms, 99))} for m, s in stages.items()}


def test_direct_requests_are_told_apart_from_the_ensembles_steps(traced):
    trace, _, _ = traced
    direct = stage_latencies(trace, None)
    assert len(direct["embed_l3"]) == 1  # the one request sent to it outside the ensemble
    assert set(direct) == {"embed_l3", "text_search"}
    assert 0 < direct["embed_l3"].response_ms[0] < direct["embed_l3"].total_ms[0] + 1e-9


def test_stage_latencies_are_positive_and_fit_in_the_ensembles(traced):
    trace, _, _ = traced
    stages = stage_latencies(trace, "text_search")
    by_request = {m: dict(zip(s.ensemble_id, zip(s.total_ms, s.response_ms)))
                  for m, s in stages.items()}
    ensemble = by_request["text_search"]
    for model in MEMBERS:
        s = stages[model]
        assert (s.total_ms > 0).all() and (s.response_ms > 0).all() and (s.compute_ms > 0).all()
        assert (s.queue_ms >= 0).all()
        assert (s.queue_ms + s.compute_ms <= s.total_ms).all()
        for request, (total, response) in by_request[model].items():
            assert total < ensemble[request][0] and response < ensemble[request][1]
    for request, (_, response) in ensemble.items():
        # A stage's output exists before the next stage starts, so the stages' response spans
        # never overlap and fit in the ensemble's. (Their REQUEST_ENDs may come ms after the next
        # stage started, more so on a busy machine: the total_ms spans can overlap.)
        assert sum(by_request[m][request][1] for m in MEMBERS) <= response


# -- trace files written by hand in Triton 2.51's layout -------------------------------------


def _elements(request_id: int, t0: int) -> list[dict]:
    """One ensemble request (id) and its two stages (id+1, id+2), as Triton lists them: the
    stages first, each element a header or one timestamp; times in ns from t0."""
    def trace(tid, model, stamps, parent=None):
        header = {"id": tid, "model_name": model, "model_version": 1}
        if parent is not None:
            header["parent_id"] = parent
        return [header] + [{"id": tid, "timestamps": [{"name": n, "ns": t0 + us * 1000}]}
                           for n, us in stamps]
    stage = ("REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_INPUT_END",
             "COMPUTE_OUTPUT_START", "COMPUTE_END", "REQUEST_END")
    return (trace(request_id + 2, "embed", zip(stage, (2100, 2110, 3000, 3010, 6000, 6100, 6200)),
                  request_id)
            + trace(request_id + 1, "langid", zip(stage, (100, 110, 1000, 1010, 2000, 2200, 2300)),
                    request_id)
            + [{"id": request_id, "timestamps": [{"name": "HTTP_RECV_START", "ns": t0}]}]
            + trace(request_id, "pipe", [("REQUEST_START", 50), ("QUEUE_START", 60),
                                         ("INFER_RESPONSE_COMPLETE", 6150), ("REQUEST_END", 6300)]))


def _write(path, elements) -> str:
    text = json.dumps(elements, separators=(",", ":"))
    path.write_text(text)
    return text


def test_hand_written_trace_gives_each_stages_spans(tmp_path):
    path = tmp_path / "trace.json"
    _write(path, _elements(1, 10**12) + _elements(4, 10**12 + 10**7)
           + [{"id": 7, "model_name": "langid", "model_version": 1},  # a direct request
              {"id": 7, "timestamps": [{"name": "REQUEST_START", "ns": 5}]},
              {"id": 7, "timestamps": [{"name": "REQUEST_END", "ns": 9}]}])
    stages = stage_latencies(path, "pipe")
    assert list(stages["pipe"].ensemble_id) == [1, 4]
    assert list(stages["langid"].ensemble_id) == [1, 4]
    assert stages["pipe"].start_s == pytest.approx([1000.00000005, 1000.01000005])
    assert stages["pipe"].total_ms == pytest.approx([6.25, 6.25])
    assert stages["pipe"].response_ms == pytest.approx([6.1, 6.1])
    langid, embed = stages["langid"], stages["embed"]
    assert langid.total_ms == pytest.approx([2.2] * 2)
    assert embed.total_ms == pytest.approx([4.1] * 2)
    assert langid.response_ms == pytest.approx([1.9] * 2)
    assert langid.queue_ms == pytest.approx([0.89] * 2)
    assert langid.compute_ms == pytest.approx([1.2] * 2)
    assert len(stage_latencies(path, "langid")["langid"]) == 1  # the direct request's own
    direct = stage_latencies(path, None)  # requests sent to a model directly, as the profiler does
    assert len(direct["langid"]) == 1 and len(direct["pipe"]) == 2 and "embed" not in direct
    assert stage_latencies(path, "other") == {}


def test_a_trace_cut_anywhere_gives_the_requests_completed_before_the_cut(tmp_path):
    path = tmp_path / "trace.json"
    text = _write(path, _elements(1, 10**12) + _elements(4, 10**12 + 10**7))
    full = stage_latencies(path, "pipe")
    seen = []
    for cut in range(0, len(text), 3):
        path.write_text(text[:cut])
        stages = stage_latencies(path, "pipe")
        counts = tuple(len(stages.get(m, ())) for m in ("pipe", "langid", "embed"))
        assert not seen or all(a >= b for a, b in zip(counts, seen[-1])), cut  # never fewer
        seen.append(counts)
        for model, s in stages.items():  # what is there is right
            n = len(s)
            assert s.total_ms == pytest.approx(full[model].total_ms[:n]), (cut, model)
    assert seen[0] == (0, 0, 0) and (2, 2, 2) in seen
    path.write_text(text + "\n")
    assert len(stage_latencies(path, "pipe")["pipe"]) == 2


def test_numbered_parts_are_read_together(tmp_path):
    _write(tmp_path / "t.json.0", _elements(1, 10**12))
    _write(tmp_path / "t.json.10", _elements(7, 10**12 + 2 * 10**7))
    _write(tmp_path / "t.json.2", _elements(4, 10**12 + 10**7))
    (tmp_path / "t.json.bak").write_text("not a part")
    names = [p.name for p in trace_files(tmp_path / "t.json")]
    assert names == ["t.json.0", "t.json.2", "t.json.10"]
    assert list(stage_latencies(tmp_path / "t.json", "pipe")["embed"].ensemble_id) == [1, 4, 7]


def test_no_trace_or_not_a_trace_is_a_config_error_naming_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match="missing.json"):
        stage_latencies(missing, "pipe")
    for name, content in (("log.json", "I1123 tritonserver started\n"), ("other.json", '[{"a":1}]'),
                          ("binary.json", "\x00\x01\x02")):
        (tmp_path / name).write_text(content)
        with pytest.raises(ConfigError, match=name):
            stage_latencies(tmp_path / name, "pipe")
    # Another layout (keys reordered) is refused rather than half-read.
    reordered = [{"timestamps": e["timestamps"], "id": e["id"]} if "timestamps" in e else e
                 for e in _elements(1, 10**12)]
    _write(tmp_path / "reordered.json", reordered)
    with pytest.raises(ConfigError, match="reordered.json.*layout"):
        stage_latencies(tmp_path / "reordered.json", "pipe")


def test_trace_args_create_the_folder_and_refuse_an_existing_trace(tmp_path):
    args = trace_args(tmp_path / "new" / "t.json", log_frequency=0)
    assert (tmp_path / "new").is_dir()
    assert f"--trace-config=triton,file={tmp_path / 'new' / 't.json'}" in args
    assert "--trace-config=triton,log-frequency=0" in args
    _write(tmp_path / "new" / "t.json.0", _elements(1, 10**12))
    with pytest.raises(ConfigError, match="t.json already holds"):
        trace_args(tmp_path / "new" / "t.json")
