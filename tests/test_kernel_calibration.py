"""Calibrating a model's kernels per kind on its whole-model timings (issue 14): the fit recovers
per-kind multipliers a synthetic net's timings carry, says "no correction" when none is needed,
and the predictor applies the recorded multipliers to that model only, entries untouched."""

from __future__ import annotations

import numpy as np
import pytest

from automl.profiling import load_model_and_info
from latency_models.kernel_calibration import GroupMultipliers, WholeTiming, kernel_group
from latency_models.predictor import Predictor
from latency_models.profile import get_profile
from latency_models.profiler import new_metadata
from latency_models.table import LatencyTable, RemainderEntry, TableEntry, layer_key
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


def test_calibration_predicts_new_policies_better_and_leaves_the_entries_as_they_were():
    """Whole-model timings of 32 random policies of a net whose kernels run in its graph off
    their entries unevenly by kind: after the calibration (and the remainder fitted on what is
    left) new policies predict closer than with the remainder alone. The entries are not
    touched (another model sharing a shape would move), the multipliers are recorded per model
    and applied by the predictor, and a re-fit on the same timings records the same ones."""
    from automl.profiling import store_remainders

    profile = get_profile("cpu-ort", 1)
    table, info = _resnet20_table(profile)
    rng = np.random.default_rng(1)
    fit_policies = [sample_policy(info, rng, "fp32", min_keep=0.25)[0] for _ in range(32)]
    new_policies = [sample_policy(info, rng, "fp32", min_keep=0.25)[0] for _ in range(40)]
    timed = [(p, _true_whole_ms(table, info, profile, p)) for p in fit_policies]
    truth = [_true_whole_ms(table, info, profile, p) for p in new_policies]
    entries_before = {e.ident: e.latency_ms for e in table.entries.values()}

    plain, _ = _resnet20_table(profile)   # the same table, its remainder fitted without multipliers
    store_remainders(plain, info, profile, timed)
    plain.metadata.kernel_multipliers.pop("resnet20")
    plain.set_remainders("resnet20", info.input_shape, [
        RemainderEntry(**{**r.to_dict(), "kernels_ms": k, "remainder_ms": w - plain.overhead_ms - k})
        for r, (p, w) in zip(plain.remainders_for("resnet20", info.input_shape), timed)
        for k in [Predictor(plain, profile, warn=False).kernels(info, p)[0]]])
    store_remainders(table, info, profile, timed)

    def error(t: LatencyTable) -> float:
        pred = Predictor(t, profile, warn=False)
        return float(np.mean([abs(pred.predict(info, p)[0] / y - 1) for p, y in zip(new_policies, truth)]))

    record = dict(table.metadata.kernel_multipliers["resnet20"])
    assert record and all(0.3 <= a <= 3.0 for a in record.values())
    assert error(table) < 0.8 * error(plain)   # deterministic: no timing
    assert {e.ident: e.latency_ms for e in table.entries.values()} == entries_before
    # the predictor applies them to this model's kernels only
    p = new_policies[0]
    raw = Predictor(plain, profile, warn=False).kernels(info, p)[0]
    assert Predictor(table, profile, warn=False).kernels(info, p)[0] != pytest.approx(raw)
    store_remainders(table, info, profile, timed)
    assert table.metadata.kernel_multipliers["resnet20"] == pytest.approx(record, rel=1e-9)


def test_a_merge_carries_a_model_s_multipliers_with_its_remainders():
    profile = get_profile("cpu-ort", 1)
    table, info = _resnet20_table(profile)
    rng = np.random.default_rng(2)
    timed = [(p, _true_whole_ms(table, info, profile, p))
             for p in (sample_policy(info, rng, "fp32", min_keep=0.25)[0] for _ in range(32))]
    from automl.profiling import store_remainders
    store_remainders(table, info, profile, timed)
    empty = LatencyTable(new_metadata(profile, "horowitz45nm"))
    merged = empty.merge(table)
    assert merged.metadata.kernel_multipliers["resnet20"] == table.metadata.kernel_multipliers["resnet20"]
