"""Channel importance beyond weight magnitude, comparable across layers.

First-order Taylor (Molchanov et al. 2019): per channel, |weight × gradient| summed over its
coupled group's parameters, averaged over a few training batches. It estimates the loss
increase of removing that channel in one unit for every layer (weight magnitude's scale differs
per layer), so the latency-aware allocation (``automl.search.allocation``) can compare channels
of different layers, and pruning removes the channels the allocation priced.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch_pruning as tp
from torch import nn

from .core import ModelInfo

PRUNE_OUT = {"conv": tp.prune_conv_out_channels, "linear": tp.prune_linear_out_channels,
             "depthwise": tp.prune_depthwise_conv_out_channels}


@dataclass(frozen=True)
class ChannelScores:
    """Per coupled group (by its leader), the importance of each of the leader's output channels
    (higher = keep). ``criterion`` names how they were computed."""

    scores: dict[str, list[float]]
    criterion: str

    def order(self, group: str) -> list[int]:
        """The group's channels, least important first (the order pruning removes them in)."""
        s = self.scores[group]
        return sorted(range(len(s)), key=lambda i: s[i])


def taylor_scores(model: nn.Module, info: ModelInfo, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> ChannelScores:
    """First-order Taylor importance of every group's channels on ``batches`` (x, y): per batch
    torch-pruning's ``GroupTaylorImportance`` summed over the group's layers, not normalised
    within the group (so scores of different groups stay comparable), averaged over batches."""
    work = _copy_for_scoring(model)
    graph = tp.DependencyGraph().build_dependency(work, example_inputs=torch.zeros(1, *info.input_shape))
    modules = dict(work.named_modules())
    importance = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)
    groups = {}
    for leader in info.prune_groups:
        layer = info.layer(leader)
        groups[leader] = graph.get_pruning_group(modules[leader], PRUNE_OUT[layer.op],
                                                 list(range(layer.out_channels)))
    totals: dict[str, torch.Tensor] = {}
    loss_fn = nn.CrossEntropyLoss()
    work.eval()   # BN in inference mode: the gradients of the deployed function
    for xb, yb in batches:
        work.zero_grad(set_to_none=True)
        loss_fn(work(xb), yb).backward()
        with torch.no_grad():
            for leader, group in groups.items():
                s = importance(group).detach().abs()
                totals[leader] = totals.get(leader, torch.zeros_like(s)) + s
    n = max(1, len(batches))
    return ChannelScores({g: (t / n).tolist() for g, t in totals.items()}, "taylor")


def _copy_for_scoring(model: nn.Module) -> nn.Module:
    work = copy.deepcopy(model)
    for p in work.parameters():
        p.requires_grad_(True)
    return work


IMPORTANCE_CRITERIA = ("magnitude", "taylor")
DEFAULT_IMPORTANCE = "magnitude"
"""The search's default until the Fashion-MNIST front shows Taylor winning: on MobileNetV2-0.5
at 0.25x (one seed, bench.allocation_ablation, BENCHMARKS.md) uniform widths pruned by Taylor
recovered to 0.8531 against 0.8594 pruned by magnitude, and the full allocation to 0.8500.
``taylor`` is opt-in (``--importance taylor``)."""
SCORING_IMAGES = 512


def channel_scores_for(criterion: str, model: nn.Module, info: ModelInfo, x: torch.Tensor,
                       y: torch.Tensor, seed: int = 0, images: int = SCORING_IMAGES,
                       batch_size: int = 64) -> ChannelScores | None:
    """The job's channel scores by ``criterion`` on ``images`` seeded training rows; None for
    ``magnitude`` (pruning then ranks by weight magnitude as it always did)."""
    if criterion not in IMPORTANCE_CRITERIA:
        raise ValueError(f"importance {criterion!r}: expected one of {IMPORTANCE_CRITERIA}")
    if criterion == "magnitude":
        return None
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:images]
    batches = [(x[rows[i:i + batch_size]], y[rows[i:i + batch_size]]) for i in range(0, len(rows), batch_size)]
    return taylor_scores(model, info, batches)
