"""``netadapt``: NetAdapt's loop (Yang et al., ECCV 2018) on our latency table.

Each iteration lowers the resource target by a decaying step; for every coupled group it makes
one proposal: the fewest channels removed from that group alone (on the hardware's channel
step) for which the table says the target is met. Each proposal is scored (accuracy on the
validation slice after the evaluator's short-term fine-tune, if one is configured), the best
is kept, and the loop repeats until every budget holds. The long-term fine-tune is the final
fine-tune every strategy's result gets.

The "resource" is the tightest budget's cost over its limit, so several budgets are handled at
once. NetAdapt's schedule (initial step, ×0.96 per iteration) is scaled so that the budget is
reached within the evaluations allowed; when no single group can reach an iteration's target
(large reductions in few iterations), the target is relaxed to what the best few groups reach
alone; if evaluations run out first, the current policy is shrunk uniformly to the budget and
scored once more.

**Joint with precision** (issue 12: pruning + int8 by default): where the problem searches bits
(``quantize``, the CPU target's default), each iteration also proposes one precision step — the
whole model at the next narrower bit-width, channels as they are — beside the channel proposals,
scored like them; NetAdapt keeps whichever does best. The final shrink tries every bit-width and
keeps the one that leaves the most channels. A model-wide step, not per layer: on the CPU every
precision switch between layers costs a quantize/dequantize (see BENCHMARKS.md, int8 export).
"""

from __future__ import annotations

from ...core import FLOAT_BITS, Evaluation, Policy, kept_channels
from ..base import Strategy, Trial
from .uniform import largest_feasible_ratio

DECAY = 0.96


class NetAdaptStrategy(Strategy):
    name = "netadapt"

    def __init__(self, problem, options) -> None:
        super().__init__(problem, options)
        self.keep = {g: 1.0 for g in problem.groups}
        self.bits = FLOAT_BITS if FLOAT_BITS in problem.bits_choices else max(problem.bits_choices)
        self.iteration = 0
        self.evaluations = 0
        self.resource = problem.resource(problem.costs(self._policy(self.keep)))
        # NetAdapt proposes for every layer each iteration; with few evaluations that leaves no
        # second iteration, so propose for the groups whose best proposal saves the most
        self.proposals_per_iteration = max(2, min(len(problem.groups), options.trials // 4))
        n_iters = max(1, options.trials // self.proposals_per_iteration - 1)
        gap = max(0.0, self.resource - 1.0)
        self.step = gap * (1 - DECAY) / (1 - DECAY ** n_iters) if gap > 0 else 0.0
        self._proposals: list[Trial] = []
        self._told: list[tuple[Trial, Evaluation]] = []
        self._finished = self.resource <= 1.0
        self._final_pending = False

    def _channels(self, group: str) -> int:
        return self.problem.info.layer(group).out_channels

    def _policy(self, keep: dict[str, float], bits: int | None = None) -> Policy:
        b = self.bits if bits is None else bits
        return self.problem.policy_from(keep, {layer.name: (b, b) for layer in self.problem.info.layers})

    def _precision_proposal(self) -> list[tuple[float, Trial]]:
        """The whole model at the next narrower bit-width, if that lowers the resource."""
        narrower = sorted((b for b in self.problem.bits_choices if b < self.bits), reverse=True)
        if not narrower:
            return []
        p, b = self.problem, narrower[0]
        policy = self._policy(self.keep, b)
        resource = p.resource(p.costs(policy))
        if resource >= self.resource - 1e-9:
            return []
        return [(resource, self._trial(policy, {"bits": b, "keep": dict(self.keep),
                                                "iteration": self.iteration}, intermediate=True))]

    def _propose(self, target: float) -> list[Trial]:
        p = self.problem
        proposals: list[tuple[float, Trial]] = []
        for g in p.groups:
            full = self._channels(g)
            current = kept_channels(full, self.keep[g], p.channel_step)
            # the largest channel count below the current one that meets the target
            for c in range(current - p.channel_step, 0, -p.channel_step):
                ratio = c / full
                if ratio < p.min_keep_ratio:
                    break
                keep = {**self.keep, g: ratio}
                resource = p.resource(p.costs(self._policy(keep)))
                if resource <= target:
                    proposals.append((resource, self._trial(
                        self._policy(keep), {"group": g, "keep": keep, "bits": self.bits,
                                             "iteration": self.iteration},
                        intermediate=True)))
                    break
        proposals.sort(key=lambda rt: rt[0])
        chosen = [t for _, t in proposals[:self.proposals_per_iteration]]
        if chosen:  # the precision step competes with this iteration's channel proposals
            chosen += [t for _, t in self._precision_proposal()]
        return chosen

    def _propose_relaxed(self) -> list[Trial]:
        """When no single group can reach this iteration's target (a 4x reduction in a handful
        of iterations asks more of one layer than it has), lower the target to what the
        ``proposals_per_iteration``-th best group can reach on its own at its fewest channels, so
        the iteration still learns which groups to cut hardest instead of giving up and
        shrinking everything uniformly."""
        p = self.problem
        reachable = sorted(
            p.resource(p.costs(self._policy({**self.keep, g: p.min_keep_ratio}))) for g in p.groups
            if kept_channels(self._channels(g), self.keep[g], p.channel_step)
            > kept_channels(self._channels(g), p.min_keep_ratio, p.channel_step))
        if not reachable:
            return []
        target = reachable[min(len(reachable), self.proposals_per_iteration) - 1]
        return self._propose(target) if target < self.resource - 1e-9 else []

    def ask(self, n: int) -> list[Trial]:
        if self._finished:
            return []
        if not self._proposals and not self._told:
            remaining = self.options.trials - self.evaluations
            target = max(1.0, self.resource - self.step * DECAY ** self.iteration)
            proposals = self._propose(target) if remaining >= 1 else []
            if not proposals and remaining >= 1:
                proposals = self._propose_relaxed()
            # keep one evaluation for the final shrink unless this iteration can end the search
            if not proposals or len(proposals) >= remaining:
                return self._shrink_to_budget()
            self._proposals = proposals
            self._outstanding = len(proposals)
        out, self._proposals = self._proposals[:n], self._proposals[n:]
        return out

    def _shrink_to_budget(self) -> list[Trial]:
        """Out of evaluations (or no single-group proposal reaches the target): scale all groups
        together to the budget and finish with that policy."""
        self._finished = True
        if self.resource <= 1.0:
            return []
        p = self.problem
        base = dict(self.keep)
        best: tuple[float, int] | None = None     # (scale, bits): the most channels kept wins
        for bits in sorted({b for b in p.bits_choices if b <= self.bits}, reverse=True):
            scale = largest_feasible_ratio(
                p, lambda s, b=bits: self._policy({g: max(p.min_keep_ratio, r * s) for g, r in base.items()}, b),
                lo=0.0)
            if scale is not None and (best is None or scale > best[0] + 1e-9):
                best = (scale, bits)
        if best is None:
            return []
        scale, bits = best
        keep = {g: max(p.min_keep_ratio, r * scale) for g, r in base.items()}
        return [self._trial(self._policy(keep, bits), {"keep": keep, "bits": bits,
                                                       "iteration": self.iteration, "final": True})]

    def tell(self, trial: Trial, evaluation: Evaluation) -> None:
        if evaluation.accuracy is not None:
            self.evaluations += 1
        if trial.params.get("final"):
            return
        self._told.append((trial, evaluation))
        if len(self._told) < self._outstanding:
            return
        scored = [(t, e) for t, e in self._told if e.accuracy is not None]
        self._told = []
        if not scored:
            self._finished = True
            return
        best_trial, _ = max(scored, key=lambda te: te[1].accuracy)
        self.keep = dict(best_trial.params["keep"])
        self.bits = int(best_trial.params.get("bits", self.bits))
        self.resource = self.problem.resource(self.problem.costs(best_trial.policy))
        self.iteration += 1
        if self.resource <= 1.0:
            self._finished = True

    def state(self) -> dict:
        return {"iteration": self.iteration, "resource": self.resource, "bits": self.bits}
