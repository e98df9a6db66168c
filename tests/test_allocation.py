"""Taylor channel importance, the latency-aware allocation built on it, and pruning by it."""

from __future__ import annotations

import pytest
import torch

from automl.compress import apply_policy
from automl.importance import ChannelScores, taylor_scores
from automl.search.allocation import allocate, blended_policies, policy_resource
from automl.search.problem import build_problem
from automl.search.strategies.uniform import largest_feasible_ratio
from automl.space import layer_modules


def _batches(loaded, n=2, size=32):
    d = loaded.data
    return [(d.x_train[i * size:(i + 1) * size], d.y_train[i * size:(i + 1) * size]) for i in range(n)]


def test_taylor_scores_one_per_channel_and_zero_for_a_dead_channel(vgg_digits):
    model = vgg_digits.model
    leader = next(iter(vgg_digits.info.prune_groups))
    dead = layer_modules(model)[leader]
    saved = dead.weight.detach().clone()
    with torch.no_grad():
        dead.weight[3].zero_()
    try:
        scores = taylor_scores(model, vgg_digits.info, _batches(vgg_digits))
    finally:
        with torch.no_grad():
            dead.weight.copy_(saved)
    assert set(scores.scores) == set(vgg_digits.info.prune_groups)
    for g, s in scores.scores.items():
        assert len(s) == vgg_digits.info.layer(g).out_channels and min(s) >= 0
    assert scores.order(leader)[0] == 3   # a channel whose weights are zero costs nothing to remove


def test_pruning_by_scores_removes_the_lowest_scored_channels(vgg_digits):
    info = vgg_digits.info
    leader = next(iter(info.prune_groups))
    channels = info.layer(leader).out_channels
    # the first half scored lowest: keeping half must keep exactly the second half
    scores = ChannelScores({leader: [float(i) for i in range(channels)]}, "test")
    problem = build_problem(vgg_digits, ["size_mb=0.9x"], hardware="bitfusion-sim", quantize=False)
    policy = problem.policy_from({leader: 0.5})
    pruned = apply_policy(vgg_digits.model, policy, info, None, 1, scores=scores)
    kept = layer_modules(pruned)[leader].weight.detach()
    original = layer_modules(vgg_digits.model)[leader].weight.detach()
    assert torch.equal(kept, original[channels - kept.shape[0]:])


def test_allocation_meets_the_budget_and_spares_what_the_scores_call_important(vgg_digits):
    problem = build_problem(vgg_digits, ["latency_ms=0.4x"], hardware="bitfusion-sim", quantize=False)
    info = problem.info
    groups = list(problem.groups)
    precious = groups[1]
    scores = ChannelScores({g: [1e6 if g == precious else 1.0] * info.layer(g).out_channels
                            for g in groups}, "test")
    resource = policy_resource(problem, 32)
    keep = allocate(info, scores, resource, problem.channel_step, problem.min_keep_ratio)
    assert keep is not None and resource(keep) <= 1.0
    assert keep[precious] == 1.0                       # every other group is pruned first
    assert min(keep.values()) < largest_feasible_ratio(problem, problem.uniform_policy)


def test_blended_policies_run_from_uniform_to_the_allocation_all_at_the_budget(vgg_digits):
    problem = build_problem(vgg_digits, ["latency_ms=0.4x"], hardware="bitfusion-sim", quantize=False)
    scores = taylor_scores(vgg_digits.model, problem.info, _batches(vgg_digits))
    got = blended_policies(problem, scores, 32, [0.0, 0.5, 1.0])
    assert [w for w, _ in got] == [0.0, 0.5, 1.0]
    for _, policy in got:
        assert problem.feasible(problem.costs(policy))
        assert problem.resource(problem.costs(policy)) > 0.9    # scaled up to the budget's edge
    ratios = {round(got[0][1][m[0]].keep_ratio, 6) for m in problem.groups.values()}
    assert len(ratios) == 1                              # weight 0: one ratio everywhere


@pytest.mark.parametrize("int8_factor,searched", [(3.0, False), (0.3, True)])
def test_int8_is_searched_only_where_the_table_prices_it_faster_at_the_budgets_widths(
        vgg_digits, int8_factor, searched):
    problem = build_problem(vgg_digits, ["latency_ms=0.5x"], hardware="cpu-ort", quick_table=True,
                            latency_judged_by_device=True)
    assert problem.bits_choices == (32, 8) or set(problem.bits_choices) == {32, 8}
    # the device correction says how int8 runs here: 3x slower, or 0.3x of the table
    problem.latency_correction.update({"32/uniform": 1.0, "32/mixed": 1.0,
                                       "8/uniform": int8_factor, "8/mixed": int8_factor})
    notes = problem.keep_precisions_that_pay()
    assert (8 in problem.bits_choices) is searched and 32 in problem.bits_choices
    assert notes["8"].startswith("searched" if searched else "not searched")
    assert "ms at keep" in notes["8"] and "float" in notes["8"]
