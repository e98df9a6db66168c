"""The compression environment: one episode walks the model's layers, one step decides one layer.

AMC (He et al., 2018) and HAQ (Wang et al., 2019) frame compression as a layer-by-layer
decision process; this is that process for a :class:`~automl.search.problem.CompressionProblem`
with three action modes:

``prune``     one step per coupled prune group (in layer order), action = keep ratio.
``quantize``  one step per layer, action = (weight bits, activation bits).
``joint``     one step per layer, action = (keep ratio, weight bits, activation bits); the keep
              part only counts on the layer that leads a prune group (later members of a group
              follow their leader, the classifier is never pruned).

Where the hardware does not price per-layer precision (ORT on a CPU, where every int8↔fp32
switch costs a quantize/dequantize), the first step's bits action sets one precision for the
whole model and later steps decide channels only.

**Budgets hold by construction**, for every budget of the problem at once (latency, energy,
size, MACs: the problem's ``resource`` is the tightest one's cost over its limit):

* pruning uses AMC's action wall: this layer keeps the most channels (at most what the agent
  asked for, on the hardware's channel step) such that the decided layers plus every later
  layer at its most compressed (smallest keep ratio, cheapest bit-width) still meet the budgets.
* in ``joint`` mode a layer's bits are bounded the same way first (lowered, activations then
  weights, until the layer at its smallest keep ratio leaves a feasible completion), so the
  invariant "a feasible completion exists" holds after every step and the finished policy is
  feasible.
* quantization bits are finished by HAQ's final pass: while over budget, lower activation bits
  one step per layer from the last layer back, then weight bits, re-checking the table after
  each change. It is the whole mechanism in ``quantize`` mode and a no-op safety net in
  ``joint`` mode.

The reward is AMC's, at the last step only (zero before): ``-error`` of the finished policy
(``1 - accuracy`` on the validation slice, no fine-tune) or the ``-error·log(MACs)`` variant.
The accuracy is expensive and measured elsewhere (on Ray, by the search runner), so the env
takes a pluggable ``reward_fn(policy) -> accuracy``: with one, ``step`` is a complete gymnasium
env (``check_env`` uses a cheap proxy); without one, the terminal reward is 0 and
``info["pending_reward"]`` says the caller will supply it later (the ask/tell strategy does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from automl.core import DEFAULT_RL_MODE, BudgetError, LayerInfo, Policy, kept_channels
from automl.search.problem import CompressionProblem

MODES = ("prune", "quantize", "joint")
REWARDS = ("error", "error_log_macs")

RewardFn = Callable[[Policy], float]
"""Accuracy (0..1) of a finished policy; the env turns it into the reward."""


def bits_from_action(a: float, choices: tuple[int, ...]) -> int:
    """HAQ's mapping of an action in [0, 1] to a bit-width, generalised to any sorted set of
    choices: ``b = round(b_min - 0.5 + a·(b_max - b_min + 1))`` is the same as taking the
    ``floor(a·n)``-th of the n widths (2..8 for a bit-flexible accelerator, {8, 32} on a CPU)."""
    ordered = sorted(choices)
    return ordered[min(len(ordered) - 1, max(0, int(math.floor(float(a) * len(ordered)))))]


def reward_from_accuracy(accuracy: float | None, macs: float, kind: str = "error") -> float:
    """AMC's rewards: ``-error`` (R_err) or ``-error·log(MACs)`` (R_FLOPs). A failed evaluation
    (no accuracy) earns the worst possible error."""
    error = 1.0 if accuracy is None else 1.0 - float(accuracy)
    if kind == "error":
        return -error
    if kind == "error_log_macs":
        return -error * math.log(max(macs, 2.0))
    raise ValueError(f"reward {kind!r}: unknown (known: {list(REWARDS)})")


@dataclass(frozen=True)
class LayerStep:
    """One decision of an episode: which layer, and whether its keep ratio is free (it leads a
    prune group and the mode prunes)."""

    layer: LayerInfo
    group: str | None

    @property
    def decides_keep(self) -> bool:
        return self.group is not None


class CompressionEnv(gym.Env):
    """Gymnasium env over one compression problem (see the module docstring).

    Observation (all in [0, 1]): layer index, layer type (one-hot conv/depthwise/linear), in and
    out channels, kernel, stride, input feature-map size, parameters, MACs and the layer's
    latency at full width from the table (min-max normalised over the episode's layers, as AMC
    does), whether this step's keep ratio is free, resource already reduced, resource still to
    reduce, slack left for the remaining layers, and the previous action.
    """

    metadata = {"render_modes": []}

    def __init__(self, problem: CompressionProblem, mode: str = DEFAULT_RL_MODE,
                 reward_fn: RewardFn | None = None, reward: str = "error") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"rl mode {mode!r}: unknown (known: {list(MODES)})")
        if reward not in REWARDS:
            raise ValueError(f"reward {reward!r}: unknown (known: {list(REWARDS)})")
        if mode in ("quantize", "joint") and len(problem.bits_choices) < 2:
            raise ValueError(f"rl mode {mode!r}: the {problem.profile.name} profile offers no bit-widths "
                             f"to choose from ({list(problem.bits_choices)}); use --rl-mode prune")
        self.problem = problem
        self.mode = mode
        self.reward_fn = reward_fn
        self.reward_kind = reward
        self.choices = tuple(sorted(problem.bits_choices))
        # Prune mode keeps every layer at the widest bit-width the hardware searches (float on a
        # CPU, 8 bits on the accelerator): the fixed-precision baseline HAQ compares against.
        self.top_bits = max(self.choices)
        self.cautious_factor = self._cautious_factor()
        self.cautious = True
        self.floor_bits = self._cheapest_bits() if mode != "prune" else self.top_bits
        leaders = {members[0]: g for g, members in problem.groups.items()}
        layers = problem.info.layers
        if mode == "prune":
            self.steps = [LayerStep(l, leaders[l.name]) for l in layers if l.name in leaders]
        elif mode == "quantize":
            self.steps = [LayerStep(l, None) for l in layers]
        else:
            self.steps = [LayerStep(l, leaders.get(l.name)) for l in layers]
        if not self.steps:
            raise ValueError(f"rl mode {mode!r}: {problem.info.model_name} has no layer to decide")
        self.action_dim = {"prune": 1, "quantize": 2, "joint": 3}[mode]
        self.action_space = spaces.Box(0.0, 1.0, shape=(self.action_dim,), dtype=np.float32)
        self._static = self._static_features()
        n_obs = self._static.shape[1] + 4 + self.action_dim
        self.observation_space = spaces.Box(0.0, 1.0, shape=(n_obs,), dtype=np.float32)
        self.full_resource = problem.resource(problem.costs(self._policy({}, {}, rest_min=False)))
        self._check_reachable()
        self._reset_state()

    # --- policies -------------------------------------------------------------------------
    def _policy(self, keep: dict[str, float], bits: dict[str, tuple[int, int]], rest_min: bool) -> Policy:
        """Decided groups/layers as given; the rest at their most compressed (``rest_min``: the
        smallest keep ratio, the cheapest bits) or untouched (keep 1, the widest bits)."""
        p = self.problem
        prunes = self.mode != "quantize"
        rest_keep = p.min_keep_ratio if (rest_min and prunes) else 1.0
        rest_bits = self.floor_bits if rest_min else self.top_bits
        full_keep = {g: keep.get(g, rest_keep) for g in p.groups}
        full_bits = {l.name: bits.get(l.name, (rest_bits, rest_bits)) for l in p.info.layers}
        return p.policy_from(full_keep, full_bits)

    def _cautious_factor(self) -> float:
        """The largest device correction any policy of this mode can end up with.

        The problem corrects predicted latency per precision and shape (uniform or mixed keep
        ratios, one bit-width or several: ``CompressionProblem.correction_for``). An episode's
        "a feasible completion exists" check looks at completions that are uniform (the rest at
        its most compressed) while the finished policy is usually mixed, which gets a larger
        correction: checked with the smaller one, every finished policy of a tight budget came
        out infeasible (DDPG joint at 0.25x on MobileNetV2-0.5: 80 episodes, 0 scored). Checked
        with the largest, whatever the episode finishes as holds the budget."""
        corrections = self.problem.latency_correction
        if self.mode == "prune":
            corrections = {k: v for k, v in corrections.items() if k.startswith(f"{self.top_bits}/")}
        return max(corrections.values(), default=1.0)

    def _resource(self, policy: Policy) -> float:
        costs = self.problem.costs(policy)
        if self.cautious and "latency_ms" in costs:
            costs = {**costs, "latency_ms": costs["latency_ms"] / self.problem.correction_for(policy)
                     * self.cautious_factor}
        return self.problem.resource(costs)

    def _feasible(self, policy: Policy) -> bool:
        return self._resource(policy) <= 1.0

    def _cheapest_bits(self) -> int:
        """The uniform bit-width with the least resource at the smallest keep ratio (on a CPU
        int8 is not always faster than float, so this is measured, not assumed)."""
        p = self.problem
        keep = p.min_keep_ratio if self.mode != "quantize" else 1.0
        return min(self.choices, key=lambda b: (self._resource(
            p.policy_from({g: keep for g in p.groups}, {l.name: (b, b) for l in p.info.layers})), b))

    def _check_reachable(self) -> None:
        smallest = self._resource(self._policy({}, {}, rest_min=True))
        if smallest > 1.0 and self.cautious:
            # only the cautious reading is out of reach: decide with each policy's own correction
            # (final_policy then still returns a feasible one, see its fallback)
            self.cautious = False
            self.floor_bits = self._cheapest_bits() if self.mode != "prune" else self.top_bits
            smallest = self._resource(self._policy({}, {}, rest_min=True))
        if smallest > 1.0:
            raise BudgetError(
                f"budget {', '.join(map(str, self.problem.budget.terms))}: rl mode {self.mode!r} cannot "
                f"meet it on {self.problem.profile.name} (its most compressed policy is at "
                f"{smallest:.3g}× the tightest limit); use --rl-mode joint or a looser budget")

    def _toward_floor(self, b: int) -> int:
        i, f = self.choices.index(b), self.choices.index(self.floor_bits)
        return self.choices[i + (1 if f > i else -1)] if i != f else b

    # --- features ---------------------------------------------------------------------------
    def _static_features(self) -> np.ndarray:
        p = self.problem
        full = p.policy_from({}, {l.name: (self.top_bits, self.top_bits) for l in p.info.layers})
        shapes = p.predictor.plan(p.info).shapes(full)
        latency = {}
        for layer, (key, cin, cout, w, a, _, _) in zip(p.info.layers, shapes):
            try:
                latency[layer.name] = p.predictor.layer_cost(key, p.profile.precision_for(w, a), cin, cout)[0]
            except Exception:  # noqa: BLE001 - a feature, not a requirement
                latency[layer.name] = 0.0
        rows = []
        n = len(self.steps)
        for i, s in enumerate(self.steps):
            l = s.layer
            rows.append([i / max(1, n - 1), l.op == "conv", l.op == "depthwise", l.op == "linear",
                         l.in_channels, l.out_channels, l.kernel, l.stride, l.in_hw[0], l.params,
                         l.macs, latency[l.name], s.decides_keep])
        x = np.asarray(rows, dtype=np.float64)
        lo, hi = x.min(axis=0), x.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        x = np.where(hi > lo, (x - lo) / span, np.clip(x, 0.0, 1.0))
        return x.astype(np.float32)

    def _obs(self) -> np.ndarray:
        t = min(self.t, len(self.steps) - 1)
        now = self._resource(self._policy(self.keep, self.bits, rest_min=False))
        least = self._resource(self._policy(self.keep, self.bits, rest_min=True))
        r0 = max(self.full_resource, 1e-12)
        dynamic = [(r0 - now) / r0, max(0.0, now - 1.0) / r0, max(0.0, 1.0 - least), 0.0]
        dynamic[3] = self.t / len(self.steps)
        obs = np.concatenate([self._static[t], np.asarray(dynamic, dtype=np.float32), self.prev_action])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)

    # --- gymnasium API --------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.t = 0
        self.keep: dict[str, float] = {}
        self.bits: dict[str, tuple[int, int]] = {}
        self.prev_action = np.zeros(self.action_dim, dtype=np.float32)
        self.actions: list[list[float]] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._reset_state()
        return self._obs(), {}

    def step(self, action):
        if self.t >= len(self.steps):
            raise RuntimeError("step() after the episode ended; call reset()")
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), 0.0, 1.0)
        s = self.steps[self.t]
        if self.mode == "prune":
            self._decide_keep(s, float(a[0]))
        elif self.mode == "quantize":
            if not self.problem.per_layer_bits:
                if self.t == 0:
                    self._decide_model_bits(float(a[0]))
            else:
                self.bits[s.layer.name] = (bits_from_action(a[0], self.choices),
                                           bits_from_action(a[1], self.choices))
        else:
            self._decide_joint(s, a)
        self.prev_action = a.astype(np.float32)
        self.actions.append([float(v) for v in a])
        self.t += 1
        terminated = self.t == len(self.steps)
        if not terminated:
            return self._obs(), 0.0, False, False, {}
        policy = self.final_policy()
        costs = self.problem.costs(policy)
        info: dict[str, Any] = {"policy": policy, "costs": costs, "actions": list(self.actions),
                                "resource": self.problem.resource(costs)}
        if self.reward_fn is None:
            info["pending_reward"] = True
            reward = 0.0
        else:
            info["accuracy"] = acc = float(self.reward_fn(policy))
            reward = reward_from_accuracy(acc, costs["macs"], self.reward_kind)
        return self._obs(), float(reward), True, False, info

    def actions_for(self, keep_ratio: float, bits: int) -> np.ndarray:
        """The per-step actions that ask for one keep ratio and one bit-width everywhere (the
        walls still apply): how a uniform policy is expressed as an episode."""
        p = self.problem
        a_keep = (keep_ratio - p.min_keep_ratio) / (1.0 - p.min_keep_ratio)
        a_bits = (self.choices.index(bits) + 0.5) / len(self.choices) if bits in self.choices else 1.0
        row = {"prune": [a_keep], "quantize": [a_bits, a_bits], "joint": [a_keep, a_bits, a_bits]}[self.mode]
        return np.clip(np.tile(np.asarray(row, dtype=np.float32), (len(self.steps), 1)), 0.0, 1.0)

    # --- the walls ------------------------------------------------------------------------
    def _decide_keep(self, s: LayerStep, a: float, layer_bits: tuple[int, int] | None = None) -> None:
        """AMC's action wall on the channel-step grid: the largest channel count at most the
        asked one for which the decided layers plus the rest at their most compressed fit."""
        p = self.problem
        assert s.group is not None
        full = s.layer.out_channels
        asked = p.min_keep_ratio + a * (1.0 - p.min_keep_ratio)
        lowest = kept_channels(full, p.min_keep_ratio, p.channel_step)
        c = kept_channels(full, asked, p.channel_step)
        bits = dict(self.bits)
        if layer_bits is not None:
            bits[s.layer.name] = layer_bits
        while True:
            ratio = 1.0 if c >= full else c / full
            if c <= lowest or self._feasible(self._policy({**self.keep, s.group: ratio}, bits, rest_min=True)):
                break
            c = max(lowest, c - p.channel_step)
        self.keep[s.group] = 1.0 if c >= full else (c / full if c > lowest else p.min_keep_ratio)

    def _decide_model_bits(self, a_bits: float) -> None:
        """One precision for the whole model (where the hardware does not price per-layer
        precision, e.g. ORT on a CPU: see ``CompressionProblem.per_layer_bits``): decided at
        the first step, lowered toward the cheapest until the model at its smallest keep ratios
        fits, and kept by every later step."""
        b = bits_from_action(a_bits, self.choices)
        everywhere = lambda bits: {l.name: (bits, bits) for l in self.problem.info.layers}  # noqa: E731
        while b != self.floor_bits and not self._feasible(self._policy({}, everywhere(b), rest_min=True)):
            b = self._toward_floor(b)
        self.bits = everywhere(b)

    def _decide_joint(self, s: LayerStep, a: np.ndarray) -> None:
        """Bits first (bounded so this layer at its smallest keep ratio still leaves a feasible
        completion), then the keep ratio under AMC's wall with those bits."""
        if not self.problem.per_layer_bits:
            if self.t == 0:
                self._decide_model_bits(float(a[1]))
            if s.decides_keep:
                self._decide_keep(s, float(a[0]), self.bits[s.layer.name])
            return
        w, act = bits_from_action(a[1], self.choices), bits_from_action(a[2], self.choices)
        probe_keep = dict(self.keep)
        if s.decides_keep:
            probe_keep[s.group] = self.problem.min_keep_ratio
        lower_act = True
        while (w, act) != (self.floor_bits, self.floor_bits) and not self._feasible(
                self._policy(probe_keep, {**self.bits, s.layer.name: (w, act)}, rest_min=True)):
            if (lower_act and act != self.floor_bits) or w == self.floor_bits:
                act = self._toward_floor(act)
            else:
                w = self._toward_floor(w)
            lower_act = not lower_act
        if s.decides_keep:
            self._decide_keep(s, float(a[0]), (w, act))
        self.bits[s.layer.name] = (w, act)

    def final_policy(self) -> Policy:
        """The finished policy after HAQ's final pass (see the module docstring), made to hold
        the budget as the problem itself judges it (:meth:`_held_to_budget`)."""
        return self._held_to_budget(self._final_pass())

    def _held_to_budget(self, policy: Policy) -> Policy:
        """``policy`` if the problem finds it feasible; else its keep ratios shrunk by the largest
        common factor that is; else the largest feasible uniform policy at the cheapest bits.
        Only reached when the cautious reading was given up (``_check_reachable``)."""
        p = self.problem
        if self.mode == "quantize" or p.feasible(p.costs(policy)):
            return policy   # quantize mode prunes nothing; its bits pass is all it has
        from automl.search.measured_budget import shrink_policy
        from automl.search.strategies.uniform import largest_feasible_ratio

        lo, hi = 0.0, 1.0
        for _ in range(12):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if p.feasible(p.costs(shrink_policy(p, policy, mid))) else (lo, mid)
        shrunk = shrink_policy(p, policy, lo)
        if p.feasible(p.costs(shrunk)):
            return shrunk
        ratio = largest_feasible_ratio(p, lambda r: p.uniform_policy(r, self.floor_bits))
        return p.uniform_policy(p.min_keep_ratio if ratio is None else ratio, self.floor_bits)

    def _final_pass(self) -> Policy:
        policy = self._policy(self.keep, self.bits, rest_min=False)
        if self.mode == "prune":
            return policy
        layers = [l.name for l in self.problem.info.layers]
        bits = {n: (policy[n].w_bits, policy[n].a_bits) for n in layers}
        keep = {g: self.keep.get(g, 1.0) for g in self.problem.groups} if self.mode == "joint" else {}

        def current() -> Policy:
            return self.problem.policy_from(keep, bits)

        policy = current()
        while not self._feasible(policy):
            changed = False
            for which in (1, 0):  # activations, then weights
                for n in reversed(layers):
                    b = bits[n][which]
                    lowered = self._toward_floor(b)
                    if lowered == b:
                        continue
                    bits[n] = (lowered, bits[n][1]) if which == 0 else (bits[n][0], lowered)
                    changed = True
                    policy = current()
                    if self._feasible(policy):
                        return policy
            if not changed:
                break  # every layer at its cheapest width: the walls make this unreachable
        return policy
