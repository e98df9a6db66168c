"""Latency-aware channel allocation: how many channels each coupled group keeps so that the
channels removed cost the least estimated loss per millisecond saved (HALP's knapsack, Shen et
al. 2022, solved greedily on our latency table; NetAdapt's "cheapest per resource saved").

Why: uniform pruning takes the same share of every layer, yet on a CPU a channel of an early,
high-resolution layer costs many times the latency of one in a late layer, and layers differ in
how much the loss depends on them. At tight budgets (a quarter of the latency and below) one
ratio for all layers loses most: this allocation is the search's informed start beside the
uniform one, and the family between the two (``blend``) is what the search ranks.

Channels are priced by :mod:`automl.importance` (first-order Taylor: an estimate of the loss
increase, in one unit for every layer, so channels of different layers can be compared).
"""

from __future__ import annotations

from typing import Callable, Sequence

from ..core import FLOAT_BITS, ModelInfo, Policy, kept_channels
from ..importance import ChannelScores

def allocate(info: ModelInfo, scores: ChannelScores, resource: Callable[[dict[str, float]], float],
             channel_step: int, min_keep_ratio: float, target: float = 1.0,
             max_iterations: int = 4000) -> dict[str, float] | None:
    """Per group keep ratios, removing channel steps greedily until ``resource(keep) ≤ target``.

    Each step removes, from the group where it is cheapest, the ``channel_step`` least important
    channels left: cheapest = least summed importance per unit of ``resource`` saved (the
    problem's tightest budget over its limit, from the table). A step that saves nothing (an
    int8 kernel slower at some widths) is priced as if it saved a thousandth of the gap, so it
    goes last. None when even the narrowest allocation is over ``target``."""
    groups = list(info.prune_groups)
    full = {g: info.layer(g).out_channels for g in groups}
    floor = {g: kept_channels(full[g], min_keep_ratio, channel_step) for g in groups}
    kept = dict(full)
    orders = {g: scores.order(g) for g in groups}
    values = {g: scores.scores[g] for g in groups}

    def ratios(k: dict[str, int]) -> dict[str, float]:
        return {g: (1.0 if k[g] >= full[g] else k[g] / full[g]) for g in groups}

    current = resource(ratios(kept))
    for _ in range(max_iterations):
        if current <= target:
            return ratios(kept)
        best: tuple[float, str, int, float] | None = None
        for g in groups:
            nxt = _next_count(kept[g], full[g], channel_step, floor[g])
            if nxt is None:
                continue
            removed = orders[g][full[g] - kept[g]:full[g] - nxt]
            cost = sum(values[g][i] for i in removed)
            after = resource(ratios({**kept, g: nxt}))
            saved = max(current - after, 1e-3 * max(current - target, 1e-9))
            price = cost / saved
            if best is None or price < best[0]:
                best = (price, g, nxt, after)
        if best is None:
            return None
        _, g, nxt, current = best
        kept[g] = nxt
    return ratios(kept) if current <= target else None


def _next_count(kept: int, full: int, step: int, floor: int) -> int | None:
    """The next smaller channel count on the step grid, or None at the floor."""
    if kept <= floor:
        return None
    nxt = (kept - 1) // step * step if kept % step else kept - step
    return max(floor, nxt) if nxt >= 1 else None


def blend(uniform_ratio: float, allocation: dict[str, float], weight: float) -> dict[str, float]:
    """Keep ratios ``weight`` of the way from one ratio everywhere to ``allocation`` (before the
    caller rescales them to the budget): 0 is uniform pruning, 1 the allocation."""
    return {g: (1 - weight) * uniform_ratio + weight * r for g, r in allocation.items()}


def scale_to_budget(keep: dict[str, float], resource: Callable[[dict[str, float]], float],
                    min_keep_ratio: float, target: float = 1.0, iterations: int = 24) -> dict[str, float] | None:
    """``keep`` scaled by the largest common factor (≤ 1/max ratio) that meets ``target``."""
    top = max(keep.values())

    def scaled(s: float) -> dict[str, float]:
        return {g: min(1.0, max(min_keep_ratio, r * s)) for g, r in keep.items()}

    lo, hi = 0.0, 1.0 / max(top, 1e-9)
    if resource(scaled(lo)) > target:
        return None
    if resource(scaled(hi)) <= target:
        return scaled(hi)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if resource(scaled(mid)) <= target:
            lo = mid
        else:
            hi = mid
    return scaled(lo)


def uniform_bits(info: ModelInfo, bits: int = FLOAT_BITS) -> dict[str, tuple[int, int]]:
    return {layer.name: (bits, bits) for layer in info.layers}


def policy_resource(problem, bits: int) -> Callable[[dict[str, float]], float]:
    """``keep -> problem.resource`` of the policy with those keep ratios at ``bits`` everywhere."""
    layer_bits = uniform_bits(problem.info, bits)

    def resource(keep: dict[str, float]) -> float:
        return problem.resource(problem.costs(problem.policy_from(keep, layer_bits)))

    return resource


def blended_policies(problem, scores: ChannelScores, bits: int, weights: Sequence[float]) -> list[tuple[float, Policy]]:
    """(weight, policy) within budget for each blend weight between uniform (0) and the
    latency-aware allocation (1), every one scaled up to the budget's edge."""
    from .problem import largest_feasible_ratio

    resource = policy_resource(problem, bits)
    alloc = allocate(problem.info, scores, resource, problem.channel_step, problem.min_keep_ratio)
    r = largest_feasible_ratio(problem, lambda x: problem.uniform_policy(x, bits))
    if alloc is None or r is None:
        return []
    out = []
    layer_bits = uniform_bits(problem.info, bits)
    for w in weights:
        keep = scale_to_budget(blend(r, alloc, w), resource, problem.min_keep_ratio)
        if keep is not None:
            out.append((w, problem.policy_from(keep, layer_bits)))
    return out
