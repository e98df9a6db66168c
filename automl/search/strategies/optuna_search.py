"""``optuna-tpe`` and ``optuna-nsga2``: per-group keep ratios and per-layer bits suggested by
Optuna, budgets as Optuna constraints.

Budgets go in through ``trial.set_constraint`` (Optuna 5's replacement for ``constraints_func``):
the constraint value is the relative excess over each limit, so the samplers learn where the
feasible region is. An infeasible candidate is told at once with the constraint set and the worst
objective value: it costs a table lookup, never an accuracy evaluation. Studies live in an
Optuna storage (SQLite in the job's state directory), so a stopped search resumes where it was.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna

from ...core import Evaluation, Policy
from ..base import Strategy, StrategyOptions, Trial
from ..problem import CompressionProblem

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)

RATIO_STEP = 0.05
ALLOCATION_BLENDS = (0.5, 1.0)
"""How far from uniform pruning (0) toward the latency-aware allocation (1) the queued starts go."""


class OptunaStrategy(Strategy):
    """An Optuna study as a strategy: the base of TPE and NSGA-II (a subclass names its sampler).

    Runs in process through ask/tell, or on Ray Tune through :class:`tune_runner.StudySearcher`
    (same study, same storage)."""

    directions: tuple[str, ...] = ("maximize",)

    def __init__(self, problem: CompressionProblem, options: StrategyOptions) -> None:
        super().__init__(problem, options)
        storage: Any = None
        if options.state_dir is not None:
            options.state_dir.mkdir(parents=True, exist_ok=True)
            storage = f"sqlite:///{options.state_dir / 'optuna.db'}"
        self.study = optuna.create_study(
            study_name=f"hwcompress-{self.name}", storage=storage, load_if_exists=True,
            directions=list(self.directions), sampler=self.make_sampler(options))
        self._asked_infeasible = 0
        done = [t for t in self.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        self.evaluations = sum(1 for t in done if t.user_attrs.get("evaluated"))
        # trials asked but never told (the process stopped): give them back as failed
        for t in self.study.trials:
            if t.state == optuna.trial.TrialState.RUNNING:
                self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        # the starts' policies by label, so the result can show what each scored
        self.starts: dict[str, Policy] = {}
        fresh = not self.evaluations and not self.study.trials
        for label, params in [*self.uniform_starts(), *self.allocation_starts()]:
            self.starts[label] = self._policy_of(params)
            if fresh:
                self.study.enqueue_trial(params, skip_if_exists=True)
        if self.evaluations:
            log.info("%s: resumed a study with %d evaluations", self.name, self.evaluations)

    def _start_params(self, keep: dict[str, float], bits: int) -> dict[str, Any]:
        p = self.problem
        params: dict[str, Any] = {f"keep:{g}": k for g, k in keep.items()}
        if len(p.bits_choices) > 1:
            params.update({f"bits:{name}": b for name, (b, _) in p.bits_for(lambda _: bits).items()}
                          if p.per_layer_bits else {"bits:all": bits})
        return params

    def _policy_of(self, params: dict[str, Any]) -> Policy:
        """The policy a start's parameters stand for (as ``_suggest`` would build it)."""
        p = self.problem
        keep = {g: float(params[f"keep:{g}"]) for g in p.groups}
        bits = {}
        if len(p.bits_choices) > 1:
            bits = p.bits_for(lambda name: int(params[f"bits:{name}"]))
        return p.policy_from(keep, bits)

    def uniform_starts(self) -> list[tuple[str, dict[str, Any]]]:
        """The study's first trials: the largest uniform policy within budget at each searchable
        bit-width (the ``uniform`` strategy's answers, on the ratio grid), as (label, params).

        Why: TPE's startup trials are random, and with a few dozen evaluations it may never draw
        "every group alike"; yet that is what a user gets from uniform pruning (or from int8
        alone: on ResNet-20 at 0.5x the unpruned int8 graph fits and scores best), so the search
        answer must not lose to it on its own signal. The sampler then learns from them as from
        any trial (``Study.enqueue_trial``, Optuna's own way to seed a study)."""
        from .uniform import largest_feasible_ratio

        p = self.problem
        lo = round(p.min_keep_ratio / RATIO_STEP) * RATIO_STEP
        out = []
        for bits in p.bits_choices:
            r = largest_feasible_ratio(p, lambda r, b=bits: p.uniform_policy(r, b))
            if r is None:
                continue
            # down onto the suggest grid (lo, lo+step, ..., 1.0), so the trial stays within budget
            keep = max(lo, lo + RATIO_STEP * int((r - lo) / RATIO_STEP + 1e-9))
            out.append((f"uniform-{bits}", self._start_params({g: round(keep, 10) for g in p.groups}, bits)))
        return out

    def allocation_starts(self) -> list[tuple[str, dict[str, Any]]]:
        """After the uniform starts, the latency-aware allocations (``allocation``) where the
        problem prices channels by importance: at each bit-width, the policies
        ``ALLOCATION_BLENDS`` of the way from uniform pruning to the allocation, each at the
        budget's edge and put on the suggest grid, as (label, params).

        Why: with 20 evaluations in 20-50 dimensions TPE samples little more than noise around
        its starts, so the starts decide what the search can find; uniform pruning spends the
        same share of every layer, the allocation spends channels where they cost the least
        importance per millisecond, and the blends between hedge the allocation's first-order
        estimate (BENCHMARKS.md, "Fashion-MNIST")."""
        from ..allocation import blended_policies

        p = self.problem
        if p.channel_scores is None:
            return []
        out = []
        for bits in p.bits_choices:
            for weight, policy in blended_policies(p, p.channel_scores, bits, ALLOCATION_BLENDS):
                keep = self._on_grid({g: policy[m[0]].keep_ratio for g, m in p.groups.items()}, bits)
                if keep is not None:
                    out.append((f"allocation-{weight:g}-{bits}", self._start_params(keep, bits)))
        return out

    def _on_grid(self, keep: dict[str, float], bits: int) -> dict[str, float] | None:
        """``keep`` on the suggest grid within budget: each ratio rounded down, then raised a
        step at a time, the largest rounding losses first, while the budget holds."""
        p = self.problem
        lo = round(p.min_keep_ratio / RATIO_STEP) * RATIO_STEP
        layer_bits = {layer.name: (bits, bits) for layer in p.info.layers}

        def feasible(k: dict[str, float]) -> bool:
            return p.feasible(p.costs(p.policy_from(k, layer_bits)))

        down = {g: round(max(lo, lo + RATIO_STEP * int((r - lo) / RATIO_STEP + 1e-9)), 10)
                for g, r in keep.items()}
        if not feasible(down):
            return None
        for g in sorted(keep, key=lambda g: down[g] - keep[g]):
            up = round(min(1.0, down[g] + RATIO_STEP), 10)
            if up > down[g] and feasible({**down, g: up}):
                down[g] = up
        return down

    def make_sampler(self, options: StrategyOptions) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def _suggest(self, trial: optuna.Trial) -> Policy:
        p = self.problem
        lo = round(p.min_keep_ratio / RATIO_STEP) * RATIO_STEP
        keep = {g: trial.suggest_float(f"keep:{g}", lo, 1.0, step=RATIO_STEP) for g in p.groups}
        bits = {}
        if len(p.bits_choices) > 1:
            bits = p.bits_for(lambda name: trial.suggest_categorical(f"bits:{name}", list(p.bits_choices)))
        return p.policy_from(keep, bits)

    def ask_feasible(self) -> tuple[optuna.Trial, Policy] | None:
        """Ask Optuna until it proposes a policy within budget. Each infeasible proposal is told
        at once with its constraint values: a table lookup, no accuracy evaluation. Bounded, so
        a hopeless space cannot spin forever."""
        while self._asked_infeasible < 200 * max(1, self.options.trials):
            ot = self.study.ask()
            policy = self._suggest(ot)
            costs = self.problem.costs(policy)
            for metric, v in self.problem.violation(costs).items():
                ot.set_constraint(metric, v)
            if self.problem.feasible(costs):
                return ot, policy
            self._asked_infeasible += 1
            self.study.tell(ot, self._worst(costs))
        return None

    def ask(self, n: int) -> list[Trial]:
        out: list[Trial] = []
        while len(out) < n and self.evaluations + len(out) < self.options.trials:
            asked = self.ask_feasible()
            if asked is None:
                break
            ot, policy = asked
            out.append(self._trial(policy, dict(ot.params), handle=ot))
        return out

    def _worst(self, costs: dict[str, float]) -> list[float]:
        return [0.0]

    def _values(self, evaluation: Evaluation) -> list[float]:
        return [float(evaluation.accuracy or 0.0)]

    def tell(self, trial: Trial, evaluation: Evaluation) -> None:
        self.tell_optuna(trial.handle, evaluation)

    def tell_optuna(self, ot: optuna.Trial, evaluation: Evaluation) -> None:
        if evaluation.error is not None or evaluation.accuracy is None:
            self.study.tell(ot, state=optuna.trial.TrialState.FAIL)
            return
        self.evaluations += 1
        ot.set_user_attr("evaluated", True)
        self.study.tell(ot, self._values(evaluation))


class OptunaTPEStrategy(OptunaStrategy):
    name = "optuna-tpe"

    def make_sampler(self, options: StrategyOptions) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=min(10, max(2, options.trials // 4)),
                                          multivariate=True, constant_liar=True)


class OptunaNSGA2Strategy(OptunaStrategy):
    """Multi-objective: maximise accuracy, minimise predicted latency (or energy)."""

    name = "optuna-nsga2"
    multi_objective = True
    directions = ("maximize", "minimize")

    def make_sampler(self, options: StrategyOptions) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=options.seed,
                                             population_size=max(4, min(20, options.trials // 3)))

    def _worst(self, costs: dict[str, float]) -> list[float]:
        return [0.0, costs[self.options.objective]]

    def _values(self, evaluation: Evaluation) -> list[float]:
        return [float(evaluation.accuracy or 0.0), float(evaluation.metric(self.options.objective))]
