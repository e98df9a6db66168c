"""Latency table: round-trip, schema validation, refusal of mismatched or damaged tables,
interpolation and prediction on synthetic tables (no measurement: fast)."""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automl.core import LayerInfo, LayerPolicy, ModelInfo, Policy, policy_layer_shapes
from latency_models.predictor import (ExtrapolationWarning, MissingEntryError, ModelPlan,
                                      Predictor, StaleRemainderWarning, predict)
from latency_models.table import (SCHEMA_VERSION, LatencyTable, RemainderEntry, TableEntry, TableError,
                                  TableMetadata, TableMismatchError, layer_key)


def _meta(**kw) -> TableMetadata:
    base = dict(device="cpu-ort", runtime="onnxruntime", runtime_version="1.0", threads=1, batch=1,
                hardware="test cpu", channel_step=8, precisions=["fp32", "int8"])
    base.update(kw)
    return TableMetadata(**base)


def _model() -> ModelInfo:
    """conv(1->32) -> conv(32->32) -> linear(32->10), coupled like a plain chain."""
    l0 = LayerInfo("c0", "conv", 1, 32, 3, 1, 1, 1, (8, 8), (8, 8), has_bn=True, activation="relu",
                   prune_group="c0", index=0)
    l1 = LayerInfo("c1", "conv", 32, 32, 3, 1, 1, 1, (8, 8), (8, 8), has_bn=True, activation="relu",
                   prune_group="c1", index=1, input_group="c0")
    l2 = LayerInfo("fc", "linear", 32, 10, prunable=False, index=2, input_group="c1")
    return ModelInfo("toy", (1, 8, 8), 10, (l0, l1, l2))


def _cost(cin: int, cout: int, prec: str) -> float:
    """A synthetic, monotone, bilinear latency (ms)."""
    k = 0.5 if prec == "int8" else 1.0
    return k * (0.001 + 0.0002 * cin + 0.0003 * cout + 0.00005 * cin * cout)


def _table(step: int = 8) -> LatencyTable:
    info = _model()
    t = LatencyTable(_meta(channel_step=step, input_shapes={"toy": [1, 8, 8]}), overhead_ms=0.005)
    grid = [8, 16, 24, 32]
    for layer in info.layers:
        key = layer_key(layer)
        ins = [1] if layer.name == "c0" else grid
        outs = [10] if layer.name == "fc" else grid
        for prec in ("fp32", "int8"):
            for i in ins:
                for o in outs:
                    t.add(TableEntry(key, i, o, prec, _cost(i, o, prec), 0.0001, _cost(i, o, prec) + 0.005,
                                     50, energy_mj=1e-6 * i * o))
    t.set_remainders("toy", [1, 8, 8], [
        RemainderEntry("toy", [1, 8, 8], 1.0, 0.0, 0.02, 0.0, 0.0),
        RemainderEntry("toy", [1, 8, 8], 0.5, 0.0, 0.01, 0.0, 0.0),
        RemainderEntry("toy", [1, 8, 8], 1.0, 1.0, 0.04, 0.0, 0.0),
        RemainderEntry("toy", [1, 8, 8], 0.5, 1.0, 0.02, 0.0, 0.0)])
    return t


def test_round_trip(tmp_path):
    t = _table()
    p = tmp_path / "t.json"
    t.save(p)
    u = LatencyTable.load(p)
    assert u.to_dict() == t.to_dict()
    assert json.loads(p.read_text())["schema_version"] == SCHEMA_VERSION == 2
    assert u.summary()["entries"] == len(t.entries)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema_version=99), "schema_version"),
    (lambda d: d.update(format="something"), "not a latency table"),
    (lambda d: d.pop("entries"), "missing top-level field"),
    (lambda d: d["metadata"].pop("threads"), "missing fields"),
    (lambda d: d["metadata"].update(threads=0), "positive integer"),
    (lambda d: d["entries"][0].pop("latency_ms"), "missing fields"),
    (lambda d: d["entries"][0].update(latency_ms="fast"), "finite number"),
    (lambda d: d["entries"][0].update(latency_source="guessed"), "latency_source"),
    (lambda d: d["entries"][0].update(precision="int4"), "not listed"),
    (lambda d: d["entries"][0].update(colour="red"), "unknown fields"),
])
def test_schema_validation(tmp_path, mutate, message):
    d = _table().to_dict()
    mutate(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(TableError, match=message):
        LatencyTable.load(p)


def test_truncated_and_corrupted_files(tmp_path):
    p = tmp_path / "t.json"
    _table().save(p)
    text = p.read_text()
    p.write_text(text[: len(text) // 2])
    with pytest.raises(TableError, match="corrupted or truncated"):
        LatencyTable.load(p)
    p.write_text("")
    with pytest.raises(TableError, match="empty"):
        LatencyTable.load(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TableError):
        LatencyTable.load(p)
    with pytest.raises(TableError, match="not found"):
        LatencyTable.load(tmp_path / "missing.json")


def test_mismatched_metadata_is_refused():
    t = _table()
    t.check_compatible({"device": "cpu-ort", "threads": 1})
    with pytest.raises(TableMismatchError, match="threads: table has 1, requested 4"):
        t.check_compatible({"device": "cpu-ort", "threads": 4})
    with pytest.raises(TableMismatchError, match="device"):
        t.check_compatible({"device": "bitfusion-sim"})
    other = LatencyTable(_meta(hardware="another cpu"))
    with pytest.raises(TableMismatchError, match="hardware"):
        t.merge(other)


def test_merge_keeps_tighter_and_unions():
    a = _table()
    b = LatencyTable(_meta(input_shapes={"other": [3, 8, 8]}))
    key = next(iter(a.entries.values()))
    b.add(TableEntry(key.key, key.in_channels, key.out_channels, key.precision, 9.0, 0.0, 9.0))
    b.add(TableEntry("conv|new", 8, 8, "fp32", 1.0, 0.1, 1.0))
    m = a.merge(b)
    assert len(m.entries) == len(a.entries) + 1
    assert m.entries[key.ident].latency_ms == 9.0          # zero IQR beats a noisy one
    assert set(m.metadata.input_shapes) == {"toy", "other"}
    assert m.remainders_for("toy", [1, 8, 8])


def test_interpolation_exact_at_grid_points():
    t = _table()
    pred = Predictor(t)
    key = layer_key(_model().layers[1])
    for (k, prec, i, o), e in t.entries.items():
        if k == key:
            lat, en = pred.layer_cost(k, prec, i, o)
            assert lat == pytest.approx(e.latency_ms, rel=1e-12)
            assert en == pytest.approx(e.energy_mj, rel=1e-12)
    # bilinear data is reproduced exactly between grid points too
    lat, _ = pred.layer_cost(key, "fp32", 12, 20)
    assert lat == pytest.approx(_cost(12, 20, "fp32"), rel=1e-9)


def test_depthwise_counts_interpolate_within_their_series():
    """ORT's int8 depthwise kernel on an AVX2 CPU is fast at multiples of 16 channels and slower
    at odd multiples of 8 (bench.channel_sweep). A count is priced from grid points of its own
    series: 64 between 48 and 96 (fast), not between 56 and 72 (both slow); a count outside its
    series' points falls back to all of them."""
    dw = LayerInfo("dw", "depthwise", 96, 96, 3, 1, 1, 96, (8, 8), (8, 8), has_bn=True,
                   activation="relu", prune_group="dw", index=0)
    key = layer_key(dw)
    t = LatencyTable(_meta(input_shapes={}))

    def cost(c):
        return c * (0.001 if c % 16 == 0 else 0.002)
    for c in (8, 16, 32, 48, 56, 72, 96):
        t.add(TableEntry(key, c, c, "int8", cost(c), 0.0, cost(c), 50))
    pred = Predictor(t, warn=False)
    assert pred.layer_cost(key, "int8", 64, 64)[0] == pytest.approx(0.064)   # one line: 0.128
    assert pred.layer_cost(key, "int8", 40, 40)[0] == pytest.approx(0.080)   # 8 .. 56, slow series
    assert pred.layer_cost(key, "int8", 88, 88)[0] == pytest.approx(0.112)   # past 72: 72 .. 96


def test_extrapolation_warns_and_does_not_crash():
    pred = Predictor(_table())
    key = layer_key(_model().layers[1])
    with pytest.warns(ExtrapolationWarning, match="outside the measured grid"):
        lat, _ = pred.layer_cost(key, "fp32", 64, 48)
    assert lat == pytest.approx(_cost(64, 48, "fp32"), rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred.layer_cost(key, "fp32", 16, 16)   # inside: no warning


def test_missing_shape_is_a_clear_error():
    pred = Predictor(_table())
    with pytest.raises(MissingEntryError, match="hwcompress profile"):
        pred.layer_cost("conv|k=7|nothing", "fp32", 8, 8)


def test_prediction_monotone_in_channels():
    info = _model()
    t = _table()
    last = None
    for keep in (0.25, 0.5, 0.75, 1.0):
        lat, en = predict(info, Policy.uniform(info, keep), t)
        if last is not None:
            assert lat >= last[0] and en >= last[1]
        last = (lat, en)
    # int8 (cheaper in this synthetic table) is predicted faster at equal width
    fp, _ = predict(info, Policy.uniform(info, 1.0, 32, 32), t)
    i8, _ = predict(info, Policy.uniform(info, 1.0, 8, 8), t)
    assert i8 < fp


def test_prediction_is_overhead_plus_kernels_plus_remainder():
    info = _model()
    t = _table()
    pred = Predictor(t)
    pol = Policy.full(info.layer_names)
    kern, _ = pred.kernels(info, pol)
    lat, _ = pred.predict(info, pol)
    assert lat == pytest.approx(0.005 + kern + 0.02)
    # no remainder for a model: a warning, kernels + overhead only
    other = ModelInfo("nameless", info.input_shape, 10, info.layers)
    with pytest.warns(ExtrapolationWarning, match="no measured remainder"):
        lat2, _ = Predictor(t).predict(other, pol)
    assert lat2 == pytest.approx(0.005 + kern)


def _timed_remainders(t: LatencyTable, info: ModelInfo) -> None:
    """Remainder rows as `hwcompress profile` writes them: each knows the kernels it was net of."""
    kern = Predictor(t, warn=False).kernels(info, Policy.full(info.layer_names))[0]
    t.set_remainders("toy", [1, 8, 8], [
        RemainderEntry("toy", [1, 8, 8], 1.0, 0.0, 0.02, t.overhead_ms + kern + 0.02, kern),
        RemainderEntry("toy", [1, 8, 8], 0.5, 0.0, 0.01, 0.0, 0.0)])


def test_remainders_timed_against_other_kernels_warn():
    info = _model()
    t = _table()
    _timed_remainders(t, info)
    pol = Policy.full(info.layer_names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaleRemainderWarning)
        Predictor(t).predict(info, pol)
    # one kernel of the unpruned model re-measured 1.5x slower since: the remainder double-counts
    e = t.entries[(layer_key(info.layers[1]), "fp32", 32, 32)]
    t.add(TableEntry(e.key, 32, 32, "fp32", e.latency_ms * 1.5, e.iqr_ms, e.raw_median_ms, e.repeats))
    with pytest.warns(StaleRemainderWarning, match=r"'toy'.*re-run `hwcompress profile`"):
        Predictor(t).predict(info, pol)
    # a table whose kernels were regressed, merged with measured entries: its remainders go stale
    reg = _table()
    for e in list(reg.entries.values()):
        reg.add(TableEntry(e.key, e.in_channels, e.out_channels, e.precision, e.latency_ms * 0.7,
                           latency_source="regressed"))
    _timed_remainders(reg, info)
    with pytest.warns(StaleRemainderWarning):
        Predictor(reg.merge(_table())).predict(info, pol)


def test_prediction_cache_follows_table_changes():
    info = _model()
    t = _table()
    pred = Predictor(t)
    pol = Policy.full(info.layer_names)
    before, _ = pred.predict(info, pol)
    e = t.entries[(layer_key(info.layers[1]), "fp32", 32, 32)]
    t.add(TableEntry(e.key, 32, 32, "fp32", e.latency_ms + 1.0))
    after, _ = pred.predict(info, pol)
    assert after == pytest.approx(before + 1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.05, 1.0), min_size=2, max_size=2),
       st.lists(st.sampled_from([2, 4, 8, 32]), min_size=3, max_size=3),
       st.sampled_from([1, 8, 16]))
def test_model_plan_matches_policy_layer_shapes(keeps, bits, step):
    info = _model()
    pol = Policy({"c0": LayerPolicy(keeps[0], bits[0], bits[0]),
                  "c1": LayerPolicy(keeps[1], bits[1], bits[2]), "fc": LayerPolicy(1.0, bits[2], 32)})
    ref = policy_layer_shapes(info, pol, step)
    got = ModelPlan(info, step).shapes(pol)
    for layer, (_, cin, cout, w, a, _, _) in zip(info.layers, got):
        s = ref[layer.name]
        assert (cin, cout, w, a) == (s.in_channels, s.out_channels, s.w_bits, s.a_bits)


def test_prediction_is_fast():
    import time
    info = _model()
    t = _table()
    pol = Policy.uniform(info, 0.5, 8, 8)
    predict(info, pol, t)
    t0 = time.perf_counter()
    for _ in range(1000):
        predict(info, pol, t)
    assert (time.perf_counter() - t0) / 1000 < 200e-6   # generous: tens of µs in practice


def test_a_cached_table_of_an_older_schema_or_int8_export_is_rebuilt_not_failed(tmp_path, monkeypatch):
    """Upgrading hwcompress must not fail every job on the tables it cached before."""
    import json as _json

    from automl.models import build_model
    from automl.search.problem import load_or_build_table
    from automl.space import trace_model
    from latency_models.profile import get_profile

    monkeypatch.setenv("HWCOMPRESS_CACHE", str(tmp_path))
    info = trace_model(build_model("lenet5", 1, 10), (1, 16, 16), "lenet5")
    profile = get_profile("cpu-ort", 1)
    fresh = load_or_build_table("lenet5", info, profile, quick=True)
    path = next((tmp_path / "tables").glob("*.json"))
    stale = _json.loads(path.read_text())
    stale["schema_version"] = SCHEMA_VERSION - 1
    path.write_text(_json.dumps(stale))
    rebuilt = load_or_build_table("lenet5", info, profile, quick=True)
    assert _json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert rebuilt.remainders_for("lenet5", info.input_shape) and len(rebuilt.entries) == len(fresh.entries)

    # remainders timed with an older int8 export: re-measured, the kernel entries kept
    from latency_models.onnx_runtime import INT8_EXPORT

    assert rebuilt.metadata.int8_export == INT8_EXPORT
    old = _json.loads(path.read_text())
    old["metadata"]["int8_export"] = ""
    for r in old["remainders"]:
        r["remainder_ms"] = 1e3      # a figure no re-measurement gives
    path.write_text(_json.dumps(old))
    again = load_or_build_table("lenet5", info, profile, quick=True)
    assert again.metadata.int8_export == INT8_EXPORT and len(again.entries) == len(fresh.entries)
    rows = again.remainders_for("lenet5", info.input_shape)
    assert rows and all(r.remainder_ms < 1e3 for r in rows)

    # cached before the per-kind kernel calibration: calibrated on its stored timings (nothing
    # re-timed: every whole_ms stays) and saved with the record
    assert again.metadata.kernel_multipliers == {"lenet5": {}}   # a quick table: too few points
    old = _json.loads(path.read_text())
    del old["metadata"]["kernel_multipliers"]
    path.write_text(_json.dumps(old))
    calibrated = load_or_build_table("lenet5", info, profile, quick=True)
    assert calibrated.metadata.kernel_multipliers == {"lenet5": {}}
    assert "lenet5" in _json.loads(path.read_text())["metadata"]["kernel_multipliers"]
    assert sorted(r.whole_ms for r in calibrated.remainders) == sorted(r["whole_ms"] for r in old["remainders"])


def _mixed_rows(k: float, slowdown: float, with_int8: bool = True) -> list[RemainderEntry]:
    """Uniform points (remainder 0.1 + 0.2·act at every precision) and mixed ones whose remainder
    is the uniform one + k·boundary + slowdown·Σ int8 kernels."""
    import numpy as np

    rows = [RemainderEntry("toy", [1, 8, 8], act, q, 0.1 + 0.2 * act, 1.0, 0.5)
            for act in (0.25, 0.5, 0.75, 1.0) for q in (0.0, 1.0)]
    rng = np.random.default_rng(0)
    for _ in range(12):
        act, q, b, k8 = rng.uniform(0.3, 1.0), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.5), rng.uniform(0.1, 2.0)
        rem = 0.1 + 0.2 * act + k * b + slowdown * k8
        rows.append(RemainderEntry("toy", [1, 8, 8], act, q, rem, 3.0, 2.0, boundary_ratio=b,
                                   int8_kernels_ms=k8 if with_int8 else None))
    return rows


def test_mixed_remainder_fits_boundary_glue_and_int8_slowdown():
    """A mixed model's remainder = uniform + cost per unit of boundary volume + the slowdown of
    its int8 kernels inside a mixed graph; both terms recovered from the calibration points, one
    far-off point (a graph ORT left off its fast path) trimmed, and a table whose points carry no
    int8 kernel sum falls back to the boundary slope alone."""
    from dataclasses import replace

    from latency_models.predictor import RemainderModel

    rows = _mixed_rows(k=2.0, slowdown=0.25)
    fit = RemainderModel.fit(rows)
    assert fit.ms_per_boundary == pytest.approx(2.0, rel=1e-6)
    assert fit.int8_slowdown == pytest.approx(0.25, rel=1e-6)
    assert fit.at(0.5, 0.5, 0.2, 1.0) == pytest.approx(0.2 + 0.4 + 0.25, rel=1e-6)
    assert fit.at(0.5, 1.0, 0.0, 1.0) == pytest.approx(0.2, rel=1e-6)   # uniform: no mixed terms
    odd = rows[-1]
    rows[-1] = replace(odd, remainder_ms=odd.remainder_ms + 5.0)
    trimmed = RemainderModel.fit(rows)
    assert trimmed.ms_per_boundary == pytest.approx(2.0, rel=1e-6)
    assert trimmed.int8_slowdown == pytest.approx(0.25, rel=1e-6)
    old = RemainderModel.fit(_mixed_rows(k=2.0, slowdown=0.0, with_int8=False))
    assert old.int8_slowdown == 0.0 and old.ms_per_boundary == pytest.approx(2.0, rel=1e-6)


def test_remainder_entry_int8_kernels_round_trip(tmp_path):
    """The int8 kernel sum is stored with a remainder point and read back (absent in older
    tables: None)."""
    t = LatencyTable(_meta())
    t.set_remainders("toy", [1, 8, 8], _mixed_rows(1.0, 0.1)[-2:] + _mixed_rows(1.0, 0.1, False)[-1:])
    t.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json").remainders_for("toy", [1, 8, 8])
    assert back[0].int8_kernels_ms is not None and back[-1].int8_kernels_ms is None
    raw = json.loads((tmp_path / "t.json").read_text())
    raw["remainders"][0]["int8_kernels_ms"] = "fast"
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(TableError, match="int8_kernels_ms"):
        LatencyTable.load(tmp_path / "bad.json")


@pytest.mark.parametrize("bad", ["x", {"m": 1.0}, {"m": {"conv|k=3|fp32": "1.2"}},
                                 {"m": {"conv|k=3|fp32": -1.0}}, {"m": {"conv|k=3|fp32": float("nan")}}])
def test_malformed_kernel_multipliers_are_refused_by_field(tmp_path, bad):
    """The predictor multiplies a model's kernels by them: a table file whose multipliers are not
    positive numbers per model and group is refused on load, naming the field."""
    import json as _json

    from latency_models.profile import get_profile
    from latency_models.profiler import new_metadata

    t = LatencyTable(new_metadata(get_profile("cpu-ort", 1), "horowitz45nm"))
    d = t.to_dict()
    d["metadata"]["kernel_multipliers"] = bad
    path = tmp_path / "t.json"
    path.write_text(_json.dumps(d))
    with pytest.raises(TableError, match="kernel_multipliers"):
        LatencyTable.load(path)
