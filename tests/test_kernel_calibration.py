"""Calibrating a net's regressed kernels on its whole-model timings (issue 14, `profile
--kernels-from`): the fit recovers per-kind multipliers a synthetic net's timings carry, says
"no correction" when none is needed, and scales only the regressed entries of the table."""

from __future__ import annotations

import numpy as np
import pytest

from automl.profiling import load_model_and_info
from latency_models.kernel_calibration import (GroupMultipliers, WholeTiming, calibrate_regressed_kernels,
                                               kernel_group)
from latency_models.predictor import Predictor
from latency_models.profile import get_profile
from latency_models.profiler import new_metadata
from latency_models.table import LatencyTable, TableEntry, layer_key
from latency_models.unseen import KernelShape
from latency_models.validate import sample_policy


def _timings(alpha: dict[str, float], n: int = 32, noise: float = 0.0, seed: int = 0) -> list[WholeTiming]:
    """Whole = fixed + Σ α_g·K_g + a remainder linear in the activation ratio, K_g at random."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = {g: float(rng.uniform(0.2, 2.0)) for g in alpha}
        act = float(rng.uniform(0.25, 1.0))
        whole = 0.1 + sum(alpha[g] * v for g, v in k.items()) + 0.05 + 0.3 * act
        out.append(WholeTiming(whole * (1 + noise * rng.standard_normal()), 0.1, k, act, 0.0, 0.0))
    return out


def test_the_fit_recovers_the_multipliers_a_net_s_timings_carry():
    truth = {"conv|k=3|fp32": 1.5, "conv|k=1|fp32": 0.7}
    fit = GroupMultipliers.fit(_timings(truth, noise=0.005))
    assert fit.ridge is not None
    for g, a in truth.items():
        assert fit.of(g) == pytest.approx(a, rel=0.1)
    assert fit.of("depthwise|k=3|fp32") == 1.0   # a group it never saw is left alone


def test_timings_the_regression_already_explains_get_no_large_correction():
    fit = GroupMultipliers.fit(_timings({"conv|k=3|fp32": 1.0, "conv|k=1|fp32": 1.0}, noise=0.01))
    assert all(abs(fit.of(g) - 1.0) < 0.1 for g in ("conv|k=3|fp32", "conv|k=1|fp32"))
    assert "none" in fit.loo_rel_rmse   # "no correction" was one of the choices


def test_too_few_timings_for_the_groups_leave_every_multiplier_at_one():
    fit = GroupMultipliers.fit(_timings({"conv|k=3|fp32": 2.0, "conv|k=1|fp32": 0.5}, n=6))
    assert fit.multipliers == {} and fit.ridge is None


def _resnet20_table(profile) -> tuple[LatencyTable, object]:
    """ResNet-20 at 16×16 under a known cost law: its convs regressed, its classifier measured."""
    _, info = load_model_and_info("resnet20", (1, 16, 16), 10)
    table = LatencyTable(new_metadata(profile, "horowitz45nm"))
    for layer in info.layers:
        key = layer_key(layer)
        s = KernelShape.parse(key)
        for frac in (0.25, 0.5, 0.75, 1.0):
            cout = max(1, int(layer.out_channels * frac))
            cin = cout if layer.op == "depthwise" else max(1, int(layer.in_channels * frac))
            table.add(TableEntry(key, cin, cout, "fp32", 0.002 + 0.5 * s.features(cin, cout)[1],
                                 latency_source="measured" if layer.op == "linear" else "regressed"))
    return table, info


def _true_whole_ms(table: LatencyTable, info, profile, policy) -> float:
    """The "real" net: its 3×3 convs run 1.4× their regressed entries, its 1×1 (shortcut) convs
    2.5× — a bias that moves with which layers a policy keeps."""
    pred = Predictor(table, profile, warn=False)
    whole = table.overhead_ms + 0.01
    for key, cin, cout, w, a, _, _ in pred.plan(info).shapes(policy):
        ms = pred.layer_cost(key, "fp32", cin, cout)[0]
        whole += ms * {"conv|k=3|fp32": 1.4, "conv|k=1|fp32": 2.5}.get(kernel_group(key, "fp32"), 1.0)
    return whole


def test_calibration_scales_the_regressed_kernels_and_predicts_new_policies_better():
    """Whole-model timings of 32 random policies of a net whose regressed 3×3 kernels are off
    unevenly: after the calibration (and the remainder fitted on what is left) new policies
    predict closer than with the remainder alone, the measured classifier entry is untouched,
    and the multipliers are recorded per model (a re-fit on the same timings starts from the
    regression's guesses again, so it records the same ones)."""
    from automl.profiling import store_remainders

    profile = get_profile("cpu-ort", 1)
    table, info = _resnet20_table(profile)
    rng = np.random.default_rng(1)
    fit_policies = [sample_policy(info, rng, "fp32", min_keep=0.25)[0] for _ in range(32)]
    new_policies = [sample_policy(info, rng, "fp32", min_keep=0.25)[0] for _ in range(40)]
    timed = [(p, _true_whole_ms(table, info, profile, p)) for p in fit_policies]
    truth = [_true_whole_ms(table, info, profile, p) for p in new_policies]

    plain, _ = _resnet20_table(profile)   # the same entries, taken as measured: not calibrated
    for e in list(plain.entries.values()):
        plain.add(TableEntry(**{**e.to_dict(), "latency_source": "measured"}))
    store_remainders(plain, info, profile, timed)
    measured_before = {e.ident: e.latency_ms for e in table.entries.values() if e.latency_source == "measured"}
    store_remainders(table, info, profile, timed)

    def error(t: LatencyTable) -> float:
        pred = Predictor(t, profile, warn=False)
        return float(np.mean([abs(pred.predict(info, p)[0] / y - 1) for p, y in zip(new_policies, truth)]))

    assert "resnet20" not in plain.metadata.kernel_multipliers
    record = dict(table.metadata.kernel_multipliers["resnet20"])
    assert record and all(0.3 <= a <= 3.0 for a in record.values())
    assert error(table) < 0.8 * error(plain)   # 0.52% vs 0.74% mean error (deterministic)
    assert {e.ident: e.latency_ms for e in table.entries.values()
            if e.latency_source == "measured"} == measured_before
    store_remainders(table, info, profile, timed)
    again = table.metadata.kernel_multipliers["resnet20"]
    assert again == pytest.approx(record, rel=1e-9)   # undone first: not compounded
