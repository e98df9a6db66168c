"""End to end on this CPU: a --quick profile of LeNet-5 gives a usable table; resume; the
lut list / show / merge / validate commands; a simulated table; refusing a foreign table."""

from __future__ import annotations

import json
import warnings

import pytest

from automl.core import Policy
from services.cli import main as cli
from latency_models.predictor import Predictor
from automl.profiling import load_model_and_info
from latency_models.grid import plan_grid
from latency_models.table import LatencyTable

SHAPE = "1,16,16"


@pytest.fixture(scope="module")
def lenet_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "lenet.json"
    rc = cli.main(["profile", "--model", "lenet5", "--out", str(out), "--quick",
                   "--input-shape", SHAPE, "--no-progress"])
    assert rc == 0
    return out


def test_quick_profile_gives_a_usable_table(lenet_table, capsys):
    table = LatencyTable.load(lenet_table)
    md = table.metadata
    assert md.device == "cpu-ort" and md.threads == 1 and md.runtime == "onnxruntime"
    assert md.input_shapes == {"lenet5": [1, 16, 16]}
    assert {e.precision for e in table.entries.values()} == {"fp32", "int8"}
    assert all(e.latency_source == "measured" and e.energy_source == "modeled"
               for e in table.entries.values())
    assert table.overhead_ms > 0 and len(table.remainders) == 4 + 2   # + mixed calibration
    _, info = load_model_and_info("lenet5", (1, 16, 16), 10)
    pred = Predictor(table)
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # every quick-grid policy is inside the grid
        full, e_full = pred.predict(info, Policy.full(info.layer_names))
        half, e_half = pred.predict(info, Policy.uniform(info, 0.5, 8, 8))
    assert full > 0 and half > 0 and e_half < e_full
    # the full-width prediction reproduces the measured whole model (it is a calibration point)
    whole = [r.whole_ms for r in table.remainders if r.act_ratio > 0.99 and r.int8_fraction == 0]
    assert full == pytest.approx(whole[0], rel=1e-6)


def test_profile_resumes_a_half_built_table(lenet_table, tmp_path):
    table = LatencyTable.load(lenet_table)
    n = len(table.entries)
    for ident in list(table.entries)[: n // 2]:
        del table.entries[ident]
    half = tmp_path / "half.json"
    table.save(half)
    rc = cli.main(["profile", "--model", "lenet5", "--out", str(half), "--quick",
                   "--input-shape", SHAPE, "--no-progress"])
    assert rc == 0
    resumed = LatencyTable.load(half)
    assert set(resumed.entries) == set(LatencyTable.load(lenet_table).entries)


def test_profile_refuses_a_table_from_other_conditions(lenet_table, tmp_path, capsys):
    d = json.loads(lenet_table.read_text())
    d["metadata"]["hardware"] = "some other CPU"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(d))
    rc = cli.main(["profile", "--model", "lenet5", "--out", str(other), "--quick",
                   "--input-shape", SHAPE, "--no-progress"])
    assert rc == 2
    assert "hardware" in capsys.readouterr().err


def test_lut_list_show_merge(lenet_table, tmp_path, capsys):
    assert cli.main(["lut", "list", str(lenet_table.parent)]) == 0
    assert "cpu-ort" in capsys.readouterr().out
    assert cli.main(["lut", "show", str(lenet_table)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["metadata"]["device"] == "cpu-ort" and shown["summary"]["entries"] > 0
    merged = tmp_path / "m.json"
    assert cli.main(["lut", "merge", str(merged), str(lenet_table), str(lenet_table)]) == 0
    assert len(LatencyTable.load(merged).entries) == len(LatencyTable.load(lenet_table).entries)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "hwcompress-latency-table", "schema_')
    assert cli.main(["lut", "show", str(bad)]) == 2
    assert "truncated" in capsys.readouterr().err


def test_lut_validate_writes_the_report(lenet_table, tmp_path):
    out = tmp_path / "v.json"
    rc = cli.main(["lut", "validate", "--model", "lenet5", "--table", str(lenet_table),
                   "--samples", "3", "--out", str(out), "--no-progress", "--relative"])
    assert rc == 0
    rep = json.loads(out.read_text())
    for k in ("n", "mape", "rmse_ms", "within_5pct", "within_10pct", "spearman",
              "predict_us_per_policy", "measure_ms_per_policy"):
        assert k in rep
    assert rep["n"] == 3 and 0 <= rep["within_10pct"] <= 1 and rep["mape"] >= 0
    assert out.with_suffix(".png").stat().st_size > 0
    # the noise floor: every policy measured twice (built afresh), the passes agreeing to a share
    noise = rep["repeatability"]
    assert noise["passes"] == 2 and 0 <= noise["within_5pct"] <= noise["within_10pct"] <= 1
    for s in rep["samples"]:
        assert len(s["measured_ms_passes"]) == 2 and s["measured_ms"] == min(s["measured_ms_passes"])
    # --relative: timed beside the unpruned model, scaled to its latency when the table
    # measured it over its readings around that moment
    table = LatencyTable.load(lenet_table)
    assert rep["relative_to_reference"] is True
    assert rep["reference_ms_table"] == table.reference_ms("lenet5", [1, 16, 16]) > 0
    for s in rep["samples"]:
        for scaled, raw, ref, smooth in zip(s["measured_ms_passes"], s["measured_ms_raw_passes"],
                                            s["reference_ms_passes"], s["reference_ms_smoothed_passes"]):
            assert ref > 0 and scaled == pytest.approx(raw * rep["reference_ms_table"] / smooth)
        assert s["measured_ms"] == min(s["measured_ms_passes"])
    assert rep["repeatability_raw"]["passes"] == 2 and rep["absolute"]["n"] == 3


def test_smoothed_references_follow_the_drift_not_one_reading():
    from latency_models.validate import smoothed_references
    # the machine slows from 1.0 to 2.0 half-way; one reading (3.0) is a hiccup
    readings = [1.0, 1.0, 3.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    smooth = smoothed_references(readings, window=2)
    assert smooth[2] == 1.0 and smooth[0] == 1.0 and smooth[-1] == 2.0
    assert smoothed_references([None, 1.0], window=2) == [None, 1.0]


def test_lut_validate_times_policies_without_a_reference_by_default(lenet_table, tmp_path):
    out = tmp_path / "v.json"
    assert cli.main(["lut", "validate", "--model", "lenet5", "--table", str(lenet_table),
                     "--samples", "2", "--out", str(out), "--no-progress"]) == 0
    rep = json.loads(out.read_text())
    assert rep["relative_to_reference"] is False
    for s in rep["samples"]:
        assert s["reference_ms_passes"] == [None, None] == s["reference_ms_smoothed_passes"]
        assert s["measured_ms_passes"] == s["measured_ms_raw_passes"]


def test_validate_measures_policies_in_windows_each_pass(lenet_table):
    """``lut validate`` hands its policies to the device ``window`` at a time (timed together,
    interleaved), every policy once a pass, the second pass in reverse; a timing lands on the
    policy it was measured for."""
    from latency_models.validate import PolicyTiming, table_profile, validate_predictions

    table = LatencyTable.load(lenet_table)
    info = load_model_and_info("lenet5", (1, 16, 16), 10)[1]
    pred = Predictor(table, warn=False)
    windows: list[list[float]] = []

    def measure(policies):
        windows.append([pred.predict(info, p)[0] for p in policies])
        return [PolicyTiming(ms * 1.01, 0.0) for ms in windows[-1]]   # 1% slower than predicted

    rep = validate_predictions(table, info, table_profile(table), measure, samples=7, seed=3,
                               progress=False, passes=2, window=3)
    assert [len(w) for w in windows] == [3, 3, 1, 3, 3, 1]
    first, second = [x for w in windows[:3] for x in w], [x for w in windows[3:] for x in w]
    assert second == first[::-1]
    for s in rep["samples"]:
        assert s["measured_ms"] == pytest.approx(s["predicted_ms"] * 1.01)
    assert rep["within_5pct"] == 1.0


def test_whole_models_are_held_and_timed_at_most_a_window_at_a_time(monkeypatch):
    """``measure_models_ms`` builds and times at most ``MODEL_WINDOW`` deployed models at once,
    whatever a caller passes (each model holds its ORT sessions), reports each window's count,
    and returns one timing per policy in order."""
    from types import SimpleNamespace

    import automl.profiling as profiling
    from latency_models.sampling import MODEL_WINDOW

    held: list[int] = []
    monkeypatch.setattr(profiling, "deployed_runner", lambda model, p, *a: p)
    policies = [Policy() for _ in range(2 * MODEL_WINDOW + 1)]
    index = {id(p): i for i, p in enumerate(policies)}
    monkeypatch.setattr(profiling, "time_together", lambda runners: held.append(len(runners)) or [
        SimpleNamespace(uncontended_ms=float(index[id(p)]), iqr_ms=0.0) for p in runners])
    done: list[int] = []
    timings = profiling.measure_models_ms(None, policies, None, None, [], on_timed=done.append)
    assert held == [MODEL_WINDOW, MODEL_WINDOW, 1] and done == held
    assert [t.ms for t in timings] == [float(i) for i in range(len(policies))]


def test_the_table_names_its_reference_latency(lenet_table):
    """The full-width fp32 remainder point is the reference relative validation scales to."""
    table = LatencyTable.load(lenet_table)
    rows = table.remainders_for("lenet5", [1, 16, 16])
    full = [r for r in rows if r.act_ratio >= 0.999 and r.int8_fraction == 0 and r.boundary_ratio == 0]
    assert len(full) == 1 and table.reference_ms("lenet5", [1, 16, 16]) == full[0].whole_ms
    assert table.reference_ms("lenet5", [1, 32, 32]) is None
    assert table.reference_ms("resnet20", [1, 16, 16]) is None


def test_scaled_ms_cancels_the_speed_of_the_moment():
    from latency_models.validate import PolicyTiming, scaled_ms
    # the reference ran 1.0 ms when the table was built and 1.25 ms now: the machine is 25% slower
    assert scaled_ms(PolicyTiming(0.5, 0.01, 1.25), 1.0) == pytest.approx(0.4)
    assert scaled_ms(PolicyTiming(0.5, 0.01, None), 1.0) == 0.5       # not timed beside it
    assert scaled_ms(PolicyTiming(0.5, 0.01, 1.25), None) == 0.5      # the table lacks it


def test_repeatability_counts_policies_whose_passes_agree():
    from latency_models.validate import repeatability
    rep = repeatability([[1.0, 1.0, 1.0, 2.0], [1.04, 1.08, 1.3, 2.0]])
    assert rep["within_5pct"] == 0.5 and rep["within_10pct"] == 0.75
    assert rep["max_spread"] == pytest.approx(0.3) and rep["passes"] == 2
    assert repeatability([[1.0, 2.0]]) == {}


def test_validate_refuses_other_threads(lenet_table, capsys):
    rc = cli.main(["lut", "validate", "--model", "lenet5", "--table", str(lenet_table),
                   "--samples", "1", "--threads", "2", "--no-progress"])
    assert rc == 2
    assert "threads" in capsys.readouterr().err


def test_grid_contains_every_full_layer():
    _, info = load_model_and_info("resnet20", (1, 16, 16), 10)
    plans = {p.key: p for p in plan_grid(info, 16, 3)}
    from latency_models.table import layer_key
    for layer in info.layers:
        p = plans[layer_key(layer)]
        assert layer.out_channels in p.out_values
        assert layer.op == "depthwise" or layer.in_channels in p.in_values


def test_grid_alignment_moves_only_inner_points_to_multiples():
    """``align`` moves each inner grid point to the nearest multiple of it among the layer's
    choices; the smallest and the full channel counts stay (the table must hold both ends)."""
    _, info = load_model_and_info("mobilenetv2_050", (1, 32, 32), 10)
    plain = {p.key: p for p in plan_grid(info, 8, 5, align=1)}
    aligned = {p.key: p for p in plan_grid(info, 8, 5, align=16)}
    moved = 0
    for key, p in aligned.items():
        q = plain[key]
        for ours, theirs in ((p.out_values, q.out_values), (p.in_values, q.in_values)):
            assert ours[0] == theirs[0] and ours[-1] == theirs[-1]
            new_points = set(ours) - set(theirs)
            assert all(v % 16 == 0 for v in new_points), (key, ours, theirs)
            moved += len(new_points)
    assert moved > 0, "no point moved: at step 8 some inner points are odd multiples of 8"


def test_simulated_bitfusion_table(tmp_path):
    out = tmp_path / "sim.json"
    rc = cli.main(["profile", "--model", "lenet5", "--out", str(out), "--quick", "--hardware",
                   "bitfusion-sim", "--input-shape", SHAPE, "--no-progress"])
    assert rc == 0
    table = LatencyTable.load(out)
    assert {e.latency_source for e in table.entries.values()} == {"simulated"}
    _, info = load_model_and_info("lenet5", (1, 16, 16), 10)
    pred = Predictor(table)
    lat = {b: pred.predict(info, Policy.uniform(info, 1.0, b, b)) for b in (2, 4, 8, 32)}
    assert lat[2][0] < lat[4][0] < lat[8][0] < lat[32][0]      # compute scales with bits
    assert lat[2][1] < lat[8][1]                                 # and so does energy


def test_sample_time_keeps_the_typical_latency_through_slow_stretches(monkeypatch):
    """A callable slow (3 ms) for most of the time and fast (1 ms) in stretches, as this VM runs
    ORT: the figure is the fast state's, the budget is honoured, the sessions are taken in turn."""
    import time as _time
    from latency_models.timing import sample_time

    monkeypatch.setenv("HWCOMPRESS_TIMING_SCALE", "1")
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
            slow = (calls["a"] + calls["b"]) % 40 >= 12   # fast 30% of the time, in stretches
            _time.sleep(0.003 if slow else 0.001)
        return fn

    t0 = _time.perf_counter()
    stats = sample_time([make("a"), make("b")], budget_s=0.4, chunk_s=0.006, min_calls=20)
    wall = _time.perf_counter() - t0
    assert 0.4 <= wall < 0.8
    assert stats.uncontended_ms == pytest.approx(1.1, abs=0.25) and stats.median_ms > 2.5
    assert calls["a"] > 10 and calls["b"] > 10 and stats.repeats >= 20


def test_two_models_timed_together_see_the_same_slow_stretches(monkeypatch):
    """The budget check times a candidate beside the unpruned reference: while the machine is
    slow for both, the ratio of their figures must still be their true ratio (1:2), because the
    two are read chunk by chunk in turn and each keeps its own fastest chunk."""
    import time as _time
    from latency_models.sampling import sample_times

    monkeypatch.setenv("HWCOMPRESS_TIMING_SCALE", "1")
    order: list[str] = []

    def make(name, base_s):
        def fn():
            order.append(name)
            slow = len(order) % 60 >= 20          # the machine is 3x slower 2/3 of the time
            _time.sleep(base_s * (3 if slow else 1))
        return fn

    cand, ref = sample_times([[make("cand", 0.0005)], [make("ref", 0.001)]], budget_s=0.5,
                             chunk_s=0.004, min_calls=20)
    assert cand.uncontended_ms / ref.uncontended_ms == pytest.approx(0.5, abs=0.12)
    switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
    assert switches >= 10 and cand.repeats >= 20 and ref.repeats >= 20
    with pytest.raises(ValueError, match="nothing to time"):
        sample_times([[]], budget_s=0.1)


def test_entries_timed_together_read_through_a_slow_stretch(monkeypatch):
    """A table entry timed alone can fall wholly inside a stretch in which the machine runs 3x
    slower (a 2026-12-06 MobileNetV2-0.5 table: 6% of entries 30-250% off); entries timed
    together (``time_together``, as ``profile_layers`` does in windows) spread their chunks over
    the window, so each keeps its true figure."""
    import time as _time
    from latency_models.timing import Runner, time_together

    monkeypatch.setenv("HWCOMPRESS_TIMING_SCALE", "1")
    start = [0.0]

    def make(base_s):
        def fn():
            slow = _time.perf_counter() - start[0] < 0.25      # the first 0.25 s run 3x slower
            _time.sleep(base_s * (3 if slow else 1))
        return fn

    def runners():
        return [Runner([make(0.0005 * (i + 1))], budget_s=0.1) for i in range(6)]

    start[0] = _time.perf_counter()
    alone = [r.time().uncontended_ms for r in runners()]
    start[0] = _time.perf_counter()
    together = [s.uncontended_ms for s in time_together(runners())]
    assert alone[0] > 2.0 * 0.5                      # the first entry read the stretch alone
    for i, ms in enumerate(together):
        assert ms == pytest.approx(0.5 * (i + 1), rel=0.4), together
    # whole models (remainder points, lut validate's policies) likewise, each with its calls
    monkeypatch.setattr("latency_models.sampling.MODEL_MIN_CALLS", 40)
    models = [Runner([make(0.0005 * (i + 1))], budget_s=0.1, whole_model=True) for i in range(4)]
    start[0] = _time.perf_counter()
    stats = time_together(models)
    for i, st in enumerate(stats):
        assert st.uncontended_ms == pytest.approx(0.5 * (i + 1), rel=0.4) and st.repeats >= 40


def test_timing_windows_bound_entries_and_held_bytes():
    """Windows keep the table's order, hold at most ``size`` entries, and start a new window
    before their sessions' feature maps pass ``max_bytes`` (one oversize entry still gets one)."""
    from latency_models.profiler import entry_activation_bytes, timing_windows

    info = load_model_and_info("mobilenetv2_050", (1, 32, 32), 10)[1]
    todo = [(plan, cin, cout, "fp32") for plan in plan_grid(info, 8, 3)
            for cin, cout in [(plan.layer.in_channels, plan.layer.out_channels)]]
    windows = timing_windows(todo, size=4, max_bytes=10**12)
    assert [x for w in windows for x in w] == todo and max(map(len, windows)) == 4
    biggest = max(entry_activation_bytes(p.layer, ci, co) for p, ci, co, _ in todo)
    tight = timing_windows(todo, size=100, max_bytes=3 * biggest)
    assert [x for w in tight for x in w] == todo
    for w in tight:
        held = sum(3 * entry_activation_bytes(p.layer, ci, co) for p, ci, co, _ in w)
        assert len(w) == 1 or held <= 3 * biggest


def test_whole_model_timing_waits_for_its_calls_up_to_a_cap(monkeypatch):
    """A slow model gets more than the budget until it has made ``min_calls`` calls (a 224x224
    net's fastest chunk is too noisy after a few dozen), but never more than ``max_budget_s`` a
    model: the wait is bounded whatever the model costs."""
    import time as _time
    from latency_models.sampling import sample_times

    monkeypatch.setenv("HWCOMPRESS_TIMING_SCALE", "1")

    def call():
        _time.sleep(0.002)

    t0 = _time.perf_counter()
    (stats,) = sample_times([[call]], budget_s=0.1, chunk_s=0.004, min_calls=100, max_budget_s=2.0)
    took = _time.perf_counter() - t0
    assert stats.repeats >= 100 and took > 0.15        # 100 calls of >=2 ms: past the 0.1 s budget
    t0 = _time.perf_counter()
    (capped,) = sample_times([[call]], budget_s=0.1, chunk_s=0.004, min_calls=100_000, max_budget_s=0.3)
    took = _time.perf_counter() - t0
    assert capped.repeats < 100_000 and 0.25 < took < 1.0   # stopped at the cap, not 200 s later


def test_whole_model_rule_gives_each_model_its_calls(monkeypatch):
    """``sample_model_times`` (every whole-model figure): each model timed together gets
    ``MODEL_MIN_CALLS`` calls, scaled like the budgets by ``HWCOMPRESS_TIMING_SCALE``, past the
    2 s budget when its calls are slow, and the cap grows with the number of models."""
    import time as _time
    from latency_models import sampling

    monkeypatch.setenv("HWCOMPRESS_TIMING_SCALE", "0.05")     # budget 0.1 s, 75 calls, cap 0.3 s a model

    def call():
        _time.sleep(0.002)

    t0 = _time.perf_counter()
    a, b = sampling.sample_model_times([[call], [call]])
    took = _time.perf_counter() - t0
    wanted = round(sampling.MODEL_MIN_CALLS * 0.05)
    assert a.repeats >= wanted and b.repeats >= wanted       # 2 x 75 calls of >=2 ms: > 0.3 s
    assert 0.25 < took < 2.0


def test_validate_bounds_the_passes(lenet_table, capsys):
    rc = cli.main(["lut", "validate", "--model", "lenet5", "--table", str(lenet_table),
                   "--samples", "1", "--passes", "1000", "--no-progress"])
    assert rc == 2 and "passes" in capsys.readouterr().err


@pytest.mark.parametrize("samples", ["0", "1000000"])
def test_validate_bounds_the_samples(lenet_table, capsys, samples):
    rc = cli.main(["lut", "validate", "--model", "lenet5", "--table", str(lenet_table),
                   "--samples", samples, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "samples" in err and "outside" in err


@pytest.mark.parametrize("points", ["0", "1", "100000"])
def test_profile_bounds_the_grid_points(tmp_path, capsys, points):
    """An unbounded grid is hours of profiling (points² entries per layer): refused by name
    before anything is timed or written."""
    out = tmp_path / "t.json"
    rc = cli.main(["profile", "--model", "lenet5", "--out", str(out), "--grid-points", points,
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "grid_points" in err and "outside" in err and not out.exists()


def test_remainder_points_add_random_mixed_policies_after_the_others(monkeypatch):
    """A full table's remainder is fitted on 3x as many random mixed-precision policies as
    random policies of each precision; the extra ones are drawn last, so every point a table
    measured before keeps its policy."""
    import automl.profiling as profiling
    from latency_models.profile import get_profile

    def mode(policy: Policy) -> str:
        bits = {lp.w_bits for lp in policy.layers.values()}
        return "fp32" if bits == {32} else "int8" if bits == {8} else "mixed"

    _, info = load_model_and_info("resnet20", (1, 16, 16), 10)
    profile = get_profile("cpu-ort", 1)
    widths = (1.0, 0.5)
    now = profiling.remainder_policies(info, profile, widths, random_points=4)
    monkeypatch.setattr(profiling, "MIXED_POINTS_FACTOR", 1)
    before = profiling.remainder_policies(info, profile, widths, random_points=4)
    uniform = len(widths) * len(profile.precisions)
    assert now[0] == Policy.uniform(info, 1.0, 32, 32)            # the reference comes first
    assert [mode(p) for p in now[uniform:-2]] == ["fp32"] * 4 + ["int8"] * 4 + ["mixed"] * 12
    assert now[:uniform + 12] == before[:uniform + 12] and now[-2:] == before[-2:]
    assert len(now) == len(before) + 8


def test_lut_validate_refuses_relative_for_an_unseen_net(lenet_table, capsys):
    rc = cli.main(["lut", "validate", "--model", "lenet5", "--table", str(lenet_table),
                   "--samples", "2", "--no-progress", "--unseen", "--relative"])
    assert rc == 2 and "relative" in capsys.readouterr().err
