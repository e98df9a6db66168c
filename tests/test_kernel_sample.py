"""The model-independent kernel sample (issue 14: nets never profiled): drawn deterministically,
bounded, covering the kernel types real nets use, measured for real and resumable."""

from __future__ import annotations

import json

import pytest

from latency_models.kernel_sample import MAX_KERNEL_MACS, kernel_plans, sample_kernels
from latency_models.table import LatencyTable
from latency_models.unseen import KernelRegressor
from services.cli import main as cli


def test_a_kernel_sample_is_fixed_by_its_seed_and_covers_the_kernel_types():
    a, b, c = sample_kernels(400, 224, seed=0), sample_kernels(400, 224, seed=0), sample_kernels(400, 224, seed=1)
    assert a.layers == b.layers and a.layers != c.layers
    kinds = {(lay.op, lay.kernel) for lay in a.layers}
    assert {("conv", 1), ("conv", 3), ("conv", 5), ("conv", 7), ("depthwise", 3), ("depthwise", 5),
            ("depthwise", 7), ("linear", 1)} <= kinds
    assert {lay.stride for lay in a.layers} == {1, 2}
    assert max(lay.in_hw[0] for lay in a.layers) == 224 and min(lay.in_hw[0] for lay in a.layers if lay.op != "linear") == 7
    assert all(0 < lay.macs <= MAX_KERNEL_MACS for lay in a.layers)
    assert all(lay.in_channels == lay.out_channels for lay in a.layers if lay.op == "depthwise")
    plans = kernel_plans(a.layers + a.layers[:5])               # a kernel drawn twice is timed once
    assert len(plans) == len({(p.key, *p.points()[0]) for p in plans}) <= len(a.layers)
    assert [p.points() for p in plans[:3]] == [[(lay.in_channels, lay.out_channels)] for lay in a.layers[:3]]
    assert all(lay.in_hw[0] <= 16 for lay in sample_kernels(50, 16).layers)


@pytest.mark.parametrize("flags,field", [(["--samples", "0"], "samples"), (["--samples", "100000"], "samples"),
                                         (["--max-hw", "3"], "max_hw")])
def test_kernel_sample_bounds_are_named(tmp_path, capsys, flags, field):
    out = tmp_path / "k.json"
    assert cli.main(["lut", "kernels", "--out", str(out), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert field in err and "outside" in err and not out.exists()


def test_a_measured_kernel_sample_fits_the_unseen_regressor_and_resumes(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    assert cli.main(["lut", "kernels", "--out", str(out), "--samples", "24", "--max-hw", "16",
                     "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    table = LatencyTable.load(out)
    assert summary["entries"] == len(table.entries) >= 40          # 24 kernels × fp32/int8, few shared
    assert {e.precision for e in table.entries.values()} >= {"fp32", "int8"}
    assert all(e.latency_source == "measured" and e.latency_ms > 0 for e in table.entries.values())
    assert table.metadata.input_shapes == {}                      # no model: nothing else claims it
    reg = KernelRegressor.fit(table)
    conv = next(e for e in table.entries.values() if e.key.startswith("conv|"))
    got = reg.predict(conv.key, conv.precision, conv.in_channels, conv.out_channels)
    assert got is not None and got[0] > 0
    assert cli.main(["lut", "kernels", "--out", str(out), "--samples", "24", "--max-hw", "16",
                     "--no-progress"]) == 0                         # resumed: nothing left to time
    again = LatencyTable.load(out).entries    # a re-measurement would have changed the timings
    assert {k: e.latency_ms for k, e in again.items()} == {k: e.latency_ms for k, e in table.entries.items()}


def test_a_device_kernel_table_prices_a_new_models_layers_without_timing_them(tmp_path, monkeypatch, capsys, digits):
    """`lut kernels --into-cache` writes the device's table into the cache; a search of a model with
    no table of its own then prices its layers from it (regressed) and times only the model."""
    from automl.search.problem import build_problem, device_kernels_path
    from automl.workflow import load_trained
    from latency_models.profile import DEFAULT_PROFILE, get_profile

    monkeypatch.setenv("HWCOMPRESS_CACHE", str(tmp_path / "cache"))
    assert cli.main(["lut", "kernels", "--into-cache", "--samples", "24", "--max-hw", "16", "--no-progress"]) == 0
    capsys.readouterr()
    assert device_kernels_path(get_profile(DEFAULT_PROFILE, 1)).is_file()
    loaded = load_trained("lenet5", "digits", epochs=1, progress=False)
    problem = build_problem(loaded, ["size_mb=0.5x"])    # LeNet-5's latency is ORT's call overhead
    sources = {e.latency_source for e in problem.table.entries.values()}
    assert sources == {"regressed"}                 # no layer of the net was timed
    assert problem.table.remainders_for("lenet5", loaded.info.input_shape)
