"""Predicting nets a table never profiled (issue 14 part 4): kernel regression over the table's
entries, a cross-model remainder, the Predictor's fallback, and `lut validate --unseen` on a net
the table never saw, measured for real."""

from __future__ import annotations

import json

import numpy as np
import pytest

from automl.core import Policy
from automl.profiling import load_model_and_info, unseen_view
from latency_models.predictor import MissingEntryError, Predictor
from latency_models.profile import get_profile
from latency_models.profiler import new_metadata
from latency_models.table import LatencyTable, RemainderEntry, TableEntry, TableError, layer_key
from latency_models.unseen import (CrossModelRemainder, KernelRegressor, KernelShape, UnseenModel,
                                   table_without)
from services.cli import main as cli

SHAPE = (1, 16, 16)


def _law(shape: KernelShape, cin: int, cout: int) -> float:
    """A known cost law: 2 µs + 0.5 ms per MMAC + 0.1 ms per M output elements."""
    f = shape.features(cin, cout)
    return 0.002 + 0.5 * f[1] + 0.1 * f[3]


def _synthetic_table(infos) -> LatencyTable:
    table = LatencyTable(new_metadata(get_profile("cpu-ort", 1), "horowitz45nm"))
    for info in infos:
        for layer in info.layers:
            key = layer_key(layer)
            shape = KernelShape.parse(key)
            for frac in (0.25, 0.5, 1.0):
                cout = max(1, int(layer.out_channels * frac))
                cin = cout if layer.op == "depthwise" else max(1, int(layer.in_channels * frac))
                table.add(TableEntry(key, cin, cout, "fp32", _law(shape, cin, cout),
                                     energy_mj=1e-3 * shape.features(cin, cout)[1]))
    return table


def test_a_key_parses_back_to_the_layer_it_came_from():
    _, info = load_model_and_info("mobilenetv2_050", (3, 32, 32), 10)
    for layer in info.layers:
        shape = KernelShape.parse(layer_key(layer))
        assert shape.op == layer.op
        if layer.op != "linear":
            assert (shape.kernel, shape.stride, shape.in_hw) == (layer.kernel, layer.stride, tuple(layer.in_hw))
            assert shape.out_hw == tuple(layer.out_hw), layer.name


def test_the_kernel_regression_recovers_a_cost_law_on_shapes_it_never_saw():
    """Fitted on VGG's and LeNet's layers at 16×16, it prices ResNet-20's at 32×32 by the same law."""
    seen = [load_model_and_info(m, SHAPE, 10)[1] for m in ("vgg", "lenet5")]
    reg = KernelRegressor.fit(_synthetic_table(seen))
    _, unseen = load_model_and_info("resnet20", (1, 32, 32), 10)
    for layer in unseen.layers:
        key = layer_key(layer)
        lat, energy = reg.predict(key, "fp32", layer.in_channels, layer.out_channels)
        truth = _law(KernelShape.parse(key), layer.in_channels, layer.out_channels)
        assert lat == pytest.approx(truth, rel=0.02), key
        assert energy > 0
    # an op the table never measured is priced by the fit over every op; a precision it never
    # measured is not priced at all
    assert reg.predict("depthwise|k=3|s=1|p=1|hw=8x8|bn=1|act=relu", "fp32", 8, 8)[0] > 0
    assert reg.predict("depthwise|k=3|s=1|p=1|hw=8x8|bn=1|act=relu", "int8", 8, 8) is None


def test_the_cross_model_remainder_fits_a_law_across_models():
    infos = {m: load_model_and_info(m, SHAPE, 10)[1] for m in ("vgg", "lenet5", "resnet20")}
    table = LatencyTable(new_metadata(get_profile("cpu-ort", 1), "horowitz45nm"))
    from latency_models.unseen import remainder_features
    coef = np.array([0.01, 0.2, -0.05, 0.3, 0.02])
    for name, info in infos.items():
        rows = []
        for act in (0.25, 0.5, 1.0):
            for q in (0.0, 1.0):
                rem = float(remainder_features(info, act, q, 0.1 * q) @ coef)
                rows.append(RemainderEntry(name, list(SHAPE), act, q, rem, rem, 0.0, boundary_ratio=0.1 * q))
        table.set_remainders(name, SHAPE, rows)
    fit = CrossModelRemainder.fit(table, {k: v for k, v in infos.items() if k != "resnet20"})
    _, mnv2 = load_model_and_info("mobilenetv2_050", SHAPE, 10)
    truth = float(remainder_features(mnv2, 0.6, 0.5, 0.05) @ coef)
    assert fit.at(mnv2, 0.6, 0.5, 0.05) == pytest.approx(truth, rel=0.05, abs=1e-3)
    assert CrossModelRemainder.fit(table, {}) is None


def test_the_predictor_falls_back_only_when_asked():
    seen = [load_model_and_info(m, SHAPE, 10)[1] for m in ("vgg", "lenet5")]
    table = _synthetic_table(seen)
    _, unseen = load_model_and_info("resnet20", SHAPE, 10)
    policy = Policy.uniform(unseen, 0.5, 32, 32)
    with pytest.raises(MissingEntryError):
        Predictor(table, warn=False).predict(unseen, policy)
    fallback = UnseenModel(KernelRegressor.fit(table), None)
    lat, _ = Predictor(table, warn=False, unseen=fallback).predict(unseen, policy)
    assert lat > table.overhead_ms


def test_table_without_forgets_the_models_shapes_and_remainders(tmp_path):
    infos = [load_model_and_info(m, SHAPE, 10)[1] for m in ("vgg", "resnet20")]
    table = _synthetic_table(infos)
    table.set_remainders("resnet20", SHAPE, [RemainderEntry("resnet20", list(SHAPE), 1.0, 0.0, 0.1, 0.2, 0.1)])
    table.metadata.input_shapes = {"vgg": list(SHAPE), "resnet20": list(SHAPE)}
    rest = table_without(table, [infos[1]])
    assert not {layer_key(l) for l in infos[1].layers} & {e.key for e in rest.entries.values()}
    assert not rest.remainders_for("resnet20", SHAPE) and "resnet20" not in rest.metadata.input_shapes
    assert table.remainders_for("resnet20", SHAPE)  # the original is untouched


@pytest.fixture(scope="module")
def two_model_table(tmp_path_factory):
    """A quick real table of LeNet-5 and VGG at 16×16 (profiled on this machine)."""
    out = tmp_path_factory.mktemp("lut") / "two.json"
    for model in ("lenet5", "vgg"):
        assert cli.main(["profile", "--model", model, "--out", str(out), "--quick",
                         "--input-shape", "1,16,16", "--no-progress"]) == 0
    return out


def test_lut_validate_unseen_predicts_a_net_the_table_never_profiled(two_model_table, tmp_path):
    """ResNet-20 is in no table: --unseen predicts it from LeNet's and VGG's kernels (its
    remainder is not predicted: see UnseenModel.fit), and the policies are measured for real."""
    out = tmp_path / "unseen.json"
    rc = cli.main(["lut", "validate", "--model", "resnet20", "--table", str(two_model_table), "--unseen",
                   "--input-shape", "1,16,16", "--samples", "3", "--passes", "1", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["unseen"] is True and rep["n"] == 3
    for s in rep["samples"]:
        assert s["predicted_ms"] > 0 and s["measured_ms"] > 0
    # without --unseen the same request is refused, naming what to do
    assert cli.main(["lut", "validate", "--model", "resnet20", "--table", str(two_model_table),
                     "--input-shape", "1,16,16", "--samples", "1", "--no-progress"]) != 0


def test_unseen_needs_measured_kernels_of_something_else(two_model_table):
    table = LatencyTable.load(two_model_table)
    lenet_only = table_without(table, [load_model_and_info("vgg", SHAPE, 10)[1]])
    _, info = load_model_and_info("lenet5", SHAPE, 10)
    with pytest.raises(TableError, match="too little"):
        unseen_view(lenet_only, info)


def test_an_unseen_net_is_its_kernels_unless_a_remainder_mode_is_asked(two_model_table):
    """The cross-model remainder made every held-out family worse (BENCHMARKS.md, issue 14), so
    the default predicts kernels only; the fit stays available by name, and a wrong name is
    refused by name."""
    table = LatencyTable.load(two_model_table)
    infos = {m: load_model_and_info(m, SHAPE, 10)[1] for m in ("lenet5", "vgg")}
    assert UnseenModel.fit(table, infos).remainder is None
    assert UnseenModel.fit(table, infos, remainder="cross-model").remainder is not None
    with pytest.raises(ValueError, match="remainder"):
        UnseenModel.fit(table, infos, remainder="magic")


def test_profile_kernels_from_prices_a_net_without_timing_its_layers(two_model_table, tmp_path):
    """`profile --kernels-from`: ResNet-20's grid is regressed from LeNet's and VGG's measured
    kernels (no layer timed), its whole-model remainder is measured, and the table then predicts
    it like any other: overhead + Σ its (regressed) kernels + its remainder."""
    out = tmp_path / "resnet20.json"
    rc = cli.main(["profile", "--model", "resnet20", "--out", str(out), "--quick",
                   "--input-shape", "1,16,16", "--kernels-from", str(two_model_table),
                   "--no-progress"])
    assert rc == 0
    table = LatencyTable.load(out)
    source = LatencyTable.load(two_model_table)
    assert table.entries and {e.latency_source for e in table.entries.values()} == {"regressed"}
    assert table.overhead_ms == source.overhead_ms
    rows = table.remainders_for("resnet20", SHAPE)
    assert rows and all(r.source == "measured" and r.whole_ms > 0 for r in rows)
    _, info = load_model_and_info("resnet20", SHAPE, 10)
    reg = KernelRegressor.fit(source)
    e = next(iter(table.entries.values()))
    assert e.latency_ms == pytest.approx(max(1e-5, reg.predict(e.key, e.precision, e.in_channels,
                                                               e.out_channels)[0]))
    # the remainder's full-width fp32 point reproduces its own measurement
    pred = Predictor(table, warn=False)
    full = Policy.uniform(info, 1.0, 32, 32)
    ref = next(r for r in rows if r.act_ratio == 1.0 and r.int8_fraction == 0.0)
    assert pred.predict(info, full)[0] == pytest.approx(ref.whole_ms, rel=0.15)
    # the regressed entries never feed a regression again
    assert KernelRegressor.fit(table).rows == {}
    # a quick table's 6 remainder points are too few to calibrate its kernel groups on
    # (latency_models.kernel_calibration): recorded as fitted, nothing scaled
    assert table.metadata.kernel_multipliers == {"resnet20": {}}


def test_kernels_from_another_device_is_refused_by_field(two_model_table, tmp_path, capsys):
    rc = cli.main(["profile", "--model", "resnet20", "--out", str(tmp_path / "t.json"), "--quick",
                   "--input-shape", "1,16,16", "--kernels-from", str(two_model_table),
                   "--threads", "2", "--no-progress"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "kernels-from" in err and "threads" in err
    # a simulated device prices every layer itself: nothing to regress, said so
    rc = cli.main(["profile", "--model", "resnet20", "--out", str(tmp_path / "s.json"), "--quick",
                   "--input-shape", "1,16,16", "--kernels-from", str(two_model_table),
                   "--hardware", "bitfusion-sim", "--no-progress"])
    assert rc != 0 and "simulated" in capsys.readouterr().err


def test_a_merge_keeps_a_measured_entry_over_a_regressed_one():
    table = LatencyTable(new_metadata(get_profile("cpu-ort", 1), "horowitz45nm"))
    other = LatencyTable(new_metadata(get_profile("cpu-ort", 1), "horowitz45nm"))
    measured = TableEntry("conv|k=3", 8, 8, "fp32", 0.2, iqr_ms=0.01, raw_median_ms=0.21)
    regressed = TableEntry("conv|k=3", 8, 8, "fp32", 0.1, latency_source="regressed")
    table.add(measured)
    other.add(regressed)
    for prefer in ("tighter", "other"):
        assert table.merge(other, prefer).entries[measured.ident].latency_source == "measured"
        assert other.merge(table, prefer).entries[measured.ident].latency_source == "measured"


def test_lut_calibrate_fits_a_table_from_before_the_multipliers_without_timing(two_model_table, tmp_path,
                                                                               capsys):
    """`hwcompress lut calibrate`: a table written before `kernel_multipliers` existed gets them
    fitted on the whole-model timings it stored (nothing re-timed: every remainder's whole_ms
    stays), per model — also a table another CPU built, since nothing is timed here; an unknown
    model is refused by name."""
    old = json.loads(two_model_table.read_text())
    old["metadata"].pop("kernel_multipliers", None)
    old["metadata"]["hardware"] = "Some Other CPU (64 cores)"
    src = tmp_path / "old.json"
    src.write_text(json.dumps(old))
    before = LatencyTable.load(src)
    assert before.metadata.kernel_multipliers == {}
    out = tmp_path / "calibrated.json"
    assert cli.main(["lut", "calibrate", str(src), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    after = LatencyTable.load(out)
    assert set(report["kernel_multipliers"]) == set(after.metadata.kernel_multipliers) == {"lenet5", "vgg"}
    assert sorted(r.whole_ms for r in after.remainders) == sorted(r.whole_ms for r in before.remainders)
    assert {e.ident: e.latency_ms for e in after.entries.values()} == \
        {e.ident: e.latency_ms for e in before.entries.values()}
    assert cli.main(["lut", "calibrate", str(src), "--model", "resnet20"]) == 2
    assert "resnet20" in capsys.readouterr().err
