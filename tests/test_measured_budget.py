"""The measured-latency guard of a search's answer (automl/search/measured_budget.py).

The guard's decisions depend only on what the device reports, so these tests give it devices
whose behaviour is known (the table's own prediction scaled, i.e. a table that is off by a known
factor) on the real VGG/digits problem (simulated accelerator table) with real builds and real validation scores; the
end-to-end search tests exercise it with ORT measurements.
"""

from __future__ import annotations

import pytest

from automl.compress import apply_policy
from automl.core import BudgetError, Policy
from automl.search.measured_budget import (MEASURED_TOLERANCE, calibrate_latency,
                                           choose_within_measured_budget, shrink_policy,
                                           shrink_to_predicted)
from automl.search.problem import build_problem
from automl.search.strategies.uniform import largest_feasible_ratio
from automl.train import evaluate_accuracy


@pytest.fixture(scope="module")
def problem(vgg_digits):
    # the simulated accelerator's table: latency clearly monotone in channels (LeNet-5's ~20 us
    # on ORT is call overhead); the guard itself is profile-agnostic. One epoch of training is
    # enough: the guard cares that accuracy is scored, not how high it is.
    return build_problem(vgg_digits, ["latency_ms=0.7x"], hardware="bitfusion-sim", quantize=False)


def _tools(problem):
    loaded = problem.loaded
    calib = loaded.data.calibration_batches()

    def build(p: Policy):
        return apply_policy(loaded.model, p, loaded.info, calib, problem.channel_step)

    def score(m) -> float:
        return evaluate_accuracy(m, loaded.data.x_val[:300], loaded.data.y_val[:300])
    return build, score


def _rows(problem, ratios):
    rows = []
    for accuracy, r in ratios:
        p = problem.uniform_policy(r)
        costs = problem.costs(p)
        rows.append({"policy": p.to_dict(), "accuracy": accuracy, **costs,
                     "feasible": problem.feasible(costs)})
    return rows


def test_a_candidate_that_measures_within_budget_is_kept(problem):
    build, score = _tools(problem)
    rows = _rows(problem, [(0.9, 0.5), (0.8, 0.4)])
    assert all(r["feasible"] for r in rows)
    choice = choose_within_measured_budget(problem, rows, build,   # (widening: tested below)
                                           lambda p, m: problem.costs(p)["latency_ms"], score, grow=False)
    assert choice.within_budget and choice.row is rows[0] and len(choice.checks) == 1


def _wide_graphs_slow(problem):
    slow_above = problem.costs(problem.uniform_policy(0.4))["latency_ms"]

    def device(p, m):  # the table underestimates wide graphs by 60% on this device
        ms = problem.costs(p)["latency_ms"]
        return ms * 1.6 if ms > slow_above else ms
    return device


def test_next_candidate_is_taken_when_the_best_measures_over_budget(problem):
    build, score = _tools(problem)
    rows = _rows(problem, [(1.0, 0.6), (0.999, 0.3)])
    assert all(r["feasible"] for r in rows)
    choice = choose_within_measured_budget(problem, rows, build, _wide_graphs_slow(problem), score)
    assert choice.within_budget and choice.row is rows[1]
    assert [c["within_budget"] for c in choice.checks[:2]] == [False, True]
    assert choice.checks[-1]["source"] == "next candidate (chosen)"


def test_the_shrunk_best_wins_over_a_poor_candidate_that_fits(problem):
    build, score = _tools(problem)
    rows = _rows(problem, [(0.95, 0.6), (0.01, 0.3)])
    choice = choose_within_measured_budget(problem, rows, build, _wide_graphs_slow(problem), score)
    assert choice.within_budget and choice.checks[-1]["source"] == "shrunk best candidate"
    assert choice.row["accuracy"] > 0.01


def test_best_candidate_is_shrunk_until_it_measures_within_budget(problem):
    build, score = _tools(problem)
    rows = _rows(problem, [(0.95, 0.6)])
    limit = problem.limits["latency_ms"]
    assert rows[0]["latency_ms"] <= limit

    def device(p, m):  # every graph is 35% slower than the table says
        return problem.costs(p)["latency_ms"] * 1.35
    choice = choose_within_measured_budget(problem, rows, build, device, score)
    assert choice.within_budget
    assert choice.measured_ms <= limit * (1 + MEASURED_TOLERANCE)
    assert choice.checks[0]["within_budget"] is False
    assert choice.checks[-1]["source"] == "shrunk best candidate"
    # the answer is a real, scored, narrower policy built from the best one
    shrunk = Policy.from_dict(choice.row["policy"])
    best = Policy.from_dict(rows[0]["policy"])
    assert all(shrunk[n].keep_ratio <= best[n].keep_ratio for n in best.layers)
    assert 0.0 < choice.row["accuracy"] <= 1.0
    assert sum(p.numel() for p in choice.model.parameters()) < sum(
        p.numel() for p in build(best).parameters())


def test_shrinking_keeps_bits_and_respects_the_smallest_keep_ratio(problem):
    p = problem.uniform_policy(0.5, 8)
    s = shrink_policy(problem, p, 0.01)
    for name in problem.groups:
        for member in problem.groups[name]:
            assert s[member].keep_ratio == pytest.approx(problem.min_keep_ratio)
            assert (s[member].w_bits, s[member].a_bits) == (8, 8)
    limit = problem.costs(problem.uniform_policy(0.3))["latency_ms"]
    fitted = shrink_to_predicted(problem, problem.uniform_policy(0.9), limit)
    assert problem.costs(fitted)["latency_ms"] <= limit


def _fresh(problem):
    problem.latency_correction.clear()
    return problem


def test_one_mixed_probe_in_a_slow_stretch_does_not_price_every_uneven_policy(problem):
    """Three uneven probes, the last read 3x slow (a stretch of a shared machine): the mixed
    correction is their median, not the outlier."""
    problem = _fresh(problem)
    build, _ = _tools(problem)
    seen = []

    def device(p, m):
        ratios = {round(p[members[0]].keep_ratio, 6) for members in problem.groups.values()}
        if len(ratios) == 1:
            return _table_ms(problem, p)
        seen.append(p)
        return _table_ms(problem, p) * (3.0 if len(seen) == 3 else 1.2)
    try:
        calibrate_latency(problem, build, device, mixed_probes=3)
        assert len(seen) == 3
        assert problem.latency_correction["32/mixed"] == pytest.approx(1.2)
    finally:
        problem.latency_correction.clear()


def test_calibration_corrects_the_table_to_the_device_near_the_budget(problem):
    problem = _fresh(problem)
    build, _ = _tools(problem)
    raw = problem.costs(problem.uniform_policy(0.5))["latency_ms"]
    uneven = problem.policy_from({g: 0.3 + 0.6 * (i % 2) for i, g in enumerate(problem.groups)})

    def device(p, m):  # uniform graphs 30% slower than the table, uneven ones 60%
        ms = _table_ms(problem, p)
        ratios = {round(p[members[0]].keep_ratio, 6) for members in problem.groups.values()}
        return ms * (1.3 if len(ratios) == 1 else 1.6)
    try:
        probes = calibrate_latency(problem, build, device, mixed_probes=2)
        assert [p["kind"] for p in probes] == ["32/uniform"] * 2 + ["32/mixed"] * 2
        assert problem.latency_correction == {"32/uniform": pytest.approx(1.3), "32/mixed": pytest.approx(1.6)}
        assert problem.costs(problem.uniform_policy(0.5))["latency_ms"] == pytest.approx(raw * 1.3)
        assert problem.correction_for(uneven) == pytest.approx(1.6)
        # the uniform policy that now just meets the budget also meets it on the device
        r = largest_feasible_ratio(problem, problem.uniform_policy)
        assert device(problem.uniform_policy(r), None) <= problem.limits["latency_ms"] * 1.0001
    finally:
        problem.latency_correction.clear()


def test_calibration_fails_fast_when_the_device_cannot_meet_the_budget(problem):
    problem = _fresh(problem)
    build, _ = _tools(problem)
    try:
        with pytest.raises(BudgetError, match="cannot be met on this device"):
            calibrate_latency(problem, build, lambda p, m: _table_ms(problem, p) * 10)
    finally:
        problem.latency_correction.clear()


def _table_ms(problem, policy) -> float:
    """The table's own prediction, without the device correction."""
    return problem.costs(policy)["latency_ms"] / problem.correction_for(policy)


def test_side_by_side_timing_orders_a_pruned_graph_below_its_original(vgg_digits):
    """The relative-budget check times candidate and original in alternating sessions: the ratio
    it reports must order a clearly smaller graph below the original (real ORT runs)."""
    from latency_models.onnx_runtime import export_onnx, measure_onnx_pair

    shape = vgg_digits.data.input_shape
    problem = build_problem(vgg_digits, ["latency_ms=0.7x"], hardware="bitfusion-sim", quantize=False)
    small = apply_policy(vgg_digits.model, problem.uniform_policy(0.25), vgg_digits.info,
                         vgg_digits.data.calibration_batches(), problem.channel_step)
    small_t, full_t = measure_onnx_pair(export_onnx(small, shape), export_onnx(vgg_digits.model, shape), shape)
    assert 0 < small_t.uncontended_ms < full_t.uncontended_ms


def test_a_probe_ticks_its_listener_and_keeps_its_raw_timing_per_measurement(problem):
    """The CLI's calibration bar listens on the probe; the raw figures the calibration records
    still come from the probe itself, handed to the checks explicitly (``last_figures``)."""
    from automl.search.measured_budget import DeviceProbe

    probe = DeviceProbe(problem)
    ticks: list[int] = []
    probe.on_measure = lambda: ticks.append(1)
    policy = problem.uniform_policy(0.5)
    probe.last = {"latency_ms_raw": 1.0}
    probe.measure(policy, probe.build(policy))
    probe.measure(policy, probe.build(policy))
    assert len(ticks) == 2
    figures = probe.last_figures()
    assert figures == probe.last and figures is not probe.last   # a copy each check keeps


def test_a_latency_budget_the_table_calls_unreachable_is_left_to_the_device(lenet_digits):
    """On a measuring device the device, not the table, decides a budget near the floor: the
    search times the smallest policy before refusing; a device faster than the table is
    searched, one slower is refused."""
    judged = dict(hardware="cpu-ort", quick_table=True, measured_reference_ms=1.0)
    probe = build_problem(lenet_digits, ["latency_ms=0.9x"], **judged)
    smallest_raw = probe.smallest_costs()["latency_ms"]
    budget = [f"latency_ms={smallest_raw * 0.6:.6f}"]   # absolute: 40% under the table's floor
    with pytest.raises(BudgetError, match="unreachable"):
        build_problem(lenet_digits, budget, **judged)
    problem = build_problem(lenet_digits, budget, latency_judged_by_device=True, **judged)
    build, _ = _tools(problem)
    try:
        with pytest.raises(BudgetError, match="cannot be met on this device"):
            calibrate_latency(problem, build, lambda p, m: _table_ms(problem, p), mixed_probes=1)
        problem.latency_correction.clear()
        probes = calibrate_latency(problem, build, lambda p, m: _table_ms(problem, p) * 0.5, mixed_probes=1)
        assert {p["kind"] for p in probes} >= {"32/uniform", "32/mixed"}
        assert problem.smallest_costs()["latency_ms"] <= problem.limits["latency_ms"]
        assert largest_feasible_ratio(problem, problem.uniform_policy) is not None
    finally:
        problem.latency_correction.clear()


def test_a_best_candidate_well_under_the_measured_budget_is_widened_toward_it(problem):
    """The table over-prices this device by 40%: the best candidate measures far under the
    budget and is widened until it measures near it, as the peers' ratios are bisected."""
    build, score = _tools(problem)
    rows = _rows(problem, [(0.95, 0.4)])
    limit = problem.limits["latency_ms"]

    def device(p, m):
        return problem.costs(p)["latency_ms"] * 0.6
    choice = choose_within_measured_budget(problem, rows, build, device, score)
    assert choice.within_budget and choice.measured_ms <= limit * (1 + MEASURED_TOLERANCE)
    assert choice.measured_ms > rows[0]["latency_ms"] * 0.6          # wider than the candidate
    assert choice.checks[-1]["source"] == "widened best candidate (chosen)"
    wide, best = Policy.from_dict(choice.row["policy"]), Policy.from_dict(rows[0]["policy"])
    assert all(wide[n].keep_ratio >= best[n].keep_ratio for n in best.layers)
    # a candidate at the budget's edge, measured as the table says, is kept as it was
    edge = _rows(problem, [(0.95, largest_feasible_ratio(problem, problem.uniform_policy))])
    exact = choose_within_measured_budget(problem, edge, build, lambda p, m: problem.costs(p)["latency_ms"], score)
    assert exact.row is edge[0] and len(exact.checks) == 1


def test_a_widening_that_measures_over_the_budget_leaves_the_best_candidate_as_the_answer(problem):
    """The widened graph measures far over (the table under-prices it): the best candidate stays
    the answer and is the last check, whose figures result.json reports."""
    build, score = _tools(problem)
    rows = _rows(problem, [(0.95, 0.3)])
    narrow = problem.costs(problem.uniform_policy(0.3))["latency_ms"]

    def device(p, m):  # the candidate itself reads 60% of the table; anything wider, 3x
        ms = problem.costs(p)["latency_ms"]
        return ms * 0.6 if ms <= narrow * 1.0001 else ms * 3.0
    choice = choose_within_measured_budget(problem, rows, build, device, score)
    assert choice.row is rows[0] and choice.within_budget
    assert [c["source"] for c in choice.checks][-2:] == ["widened best candidate", "best candidate (chosen)"]
    assert choice.checks[-1]["latency_ms_measured"] == pytest.approx(choice.measured_ms)
