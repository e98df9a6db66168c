"""Reinforcement-learning strategies (``ddpg``, ``td3``, ``sac``, ``ppo``) in the ask/tell interface.

AMC's reward exists only at the end of an episode and costs an accuracy measurement, which the
search runner makes on Ray, several episodes in parallel. So the agent does not run SB3's
``learn()`` loop (which wants the reward from ``env.step``); it uses SB3's algorithm classes,
networks, buffers and ``train()`` and drives the loop itself:

* ``ask(n)`` rolls out ``n`` episodes in :class:`~agents.env.CompressionEnv` with the current
  actor plus exploration (uniform random actions during the warm-up; truncated-normal noise
  with a decaying sigma after it for DDPG/TD3; the policy's own sampling for SAC and PPO),
  each giving a budget-feasible policy; one trial per episode.
* ``tell`` turns the accuracy into AMC's reward (minus the moving-average baseline) at the
  episode's last transition. When the batch is complete its transitions go into the replay
  buffer (off-policy) or rollout buffer (PPO, every ``episodes_per_update`` episodes), SB3's
  ``train`` runs, the agent is checkpointed and the learning curve is written.
* SB3's logger writes TensorBoard event files to ``OUT/tensorboard/<algo>/`` (the job's output
  folder): per episode its reward, accuracy, best so far and exploration sigma, and SB3's own
  ``train/*`` losses; ``tensorboard --logdir OUT/tensorboard`` shows them.

A policy scored before (an episode can repeat one, especially with coarse channel steps) is
answered from memory without a trial: repeats do not consume the evaluation budget, but the
number of episodes is capped at ``max_episode_factor`` × the evaluations allowed.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.logger import Logger, configure

from automl.core import DEFAULT_RL_MODE, Evaluation, Policy
from automl.search.base import Strategy, StrategyOptions, Trial
from automl.search.problem import CompressionProblem

from .checkpoint import AgentCheckpoint
from .curve import write_curve
from .env import CompressionEnv, reward_from_accuracy
from .hparams import AgentHyperParams, hyperparams
from .noise import TruncatedNormalNoise

log = logging.getLogger(__name__)


def policy_key(policy: Policy) -> str:
    """The same key the runner's evaluation log uses, so "scored before" means the same."""
    return json.dumps(policy.to_dict(), sort_keys=True)


@dataclass
class Transition:
    obs: np.ndarray
    next_obs: np.ndarray
    action: np.ndarray              # as applied to the env, in [0, 1]
    done: bool
    raw_action: np.ndarray | None = None   # PPO: the Gaussian sample before squashing
    value: th.Tensor | None = None
    log_prob: th.Tensor | None = None


@dataclass
class Episode:
    number: int
    transitions: list[Transition]
    policy: Policy
    costs: dict[str, float]
    warmup: bool
    sigma: float
    actions: list[list[float]] = field(default_factory=list)
    accuracy: float | None = None
    reward: float | None = None


@contextmanager
def single_thread():
    """Run the agent's tiny networks on one intra-op thread. A 300×300 MLP gains nothing from
    more, and on a busy machine torch's thread pool oversubscribes: measured on this 2-core box
    under load, one DDPG gradient step took ~300 ms with 2 threads and ~6 ms with 1."""
    before = th.get_num_threads()
    th.set_num_threads(1)
    try:
        yield
    finally:
        th.set_num_threads(before)


class _SplitLearningRate:
    """AMC trains the actor at 1e-4 and the critic at 1e-3; SB3's off-policy algorithms have
    one learning rate, so this sets each optimiser's own before every ``train``."""

    lr_actor: float
    lr_critic: float

    def _update_learning_rate(self, optimizers) -> None:  # type: ignore[override]
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt, lr in zip(optimizers, (self.lr_actor, self.lr_critic)):
            for group in opt.param_groups:
                group["lr"] = lr
        self.logger.record("train/learning_rate", self.lr_actor)  # type: ignore[attr-defined]


class AMCDDPG(_SplitLearningRate, DDPG):
    """SB3's DDPG with separate actor/critic learning rates."""


class SplitTD3(_SplitLearningRate, TD3):
    """SB3's TD3 with separate actor/critic learning rates."""


class RLStrategy(Strategy):
    """Shared ask/tell driver of the RL agents; subclasses make the SB3 model and act."""

    algo: ClassVar[str] = "ddpg"
    off_policy: ClassVar[bool] = True

    def __init__(self, problem: CompressionProblem, options: StrategyOptions) -> None:
        super().__init__(problem, options)
        extra = options.extra or {}
        self.mode: str = extra.get("rl_mode") or DEFAULT_RL_MODE
        if self.mode == "joint" and len(problem.bits_choices) < 2:
            log.info("rl mode joint: %s offers one precision only; pruning", problem.profile.name)
            self.mode = "prune"
        self.hp: AgentHyperParams = hyperparams(self.algo, extra.get("agent_kwargs"))
        self.env = CompressionEnv(problem, self.mode, reward=self.hp.reward)
        self.warmup = self.hp.warmup(options.trials) if self.off_policy else 0
        self.max_episodes = max(1, options.trials) * max(1, self.hp.max_episode_factor)
        self.noise = TruncatedNormalNoise(self.hp.sigma, self.hp.sigma_decay, self.warmup,
                                          seed=options.seed)
        self.episodes = 0          # episodes rolled out
        self.evaluations = 0       # accuracy evaluations spent (repeats excluded)
        self.baseline: float | None = None
        self.seen: dict[str, float | None] = {}
        self.curve: list[dict[str, Any]] = []
        self._pending: dict[int, Episode] = {}
        self._waiting: dict[str, list[Episode]] = {}
        self._finished: list[Episode] = []
        self._ppo_queue: list[Episode] = []
        self.demos = self._demonstrations() if self.hp.demonstrations else []
        self.warmup = max(self.warmup, len(self.demos)) if self.off_policy else 0
        self.noise.warmup = self.warmup
        self.checkpoint = AgentCheckpoint(options.state_dir / "agent") if options.state_dir else None
        if self.checkpoint is not None and self.checkpoint.exists():
            self._restore()
        else:
            self.model = self._make_model()
        self.model.set_logger(self._logger())

    def _logger(self) -> Logger:
        """SB3's logger writing TensorBoard events into the job's output folder (nothing when the
        strategy runs without one, as in unit tests)."""
        if self.options.state_dir is None:
            return Logger(None, [])
        folder = self.options.state_dir.parent / "tensorboard" / self.algo
        try:
            return configure(str(folder), ["tensorboard"])
        except ImportError:  # tensorboard missing: the curve JSON still has every number
            log.warning("tensorboard is not installed; no TensorBoard logs in %s", folder)
            return Logger(None, [])

    def _log_episodes(self, episodes: list[Episode]) -> None:
        """One TensorBoard step per finished episode (its number), then SB3's train/* values."""
        by_number = {e["episode"]: e for e in self.curve}
        logger = self.model.logger
        for ep in episodes:
            row = by_number.get(ep.number, {})
            for key in ("reward", "accuracy", "best_reward", "best_accuracy", "sigma", "resource"):
                if isinstance(row.get(key), (int, float)):
                    logger.record(f"episode/{key}", float(row[key]))
            logger.dump(step=ep.number)

    # --- per-algorithm hooks --------------------------------------------------------------
    def _make_model(self):
        raise NotImplementedError

    def _model_class(self):
        raise NotImplementedError

    def _act(self, obs: np.ndarray, episode: int) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    @property
    def _buffer_steps(self) -> int:
        return max(1, self.hp.buffer_episodes * len(self.env.steps))

    def _demonstrations(self) -> list[np.ndarray]:
        """The uniform baselines as episodes: for each searchable bit-width (one in ``prune``
        mode), the largest uniform keep ratio meeting the budget, widest bits first. With a
        few dozen evaluations an agent cannot afford to rediscover what a bisection finds for
        free, and the replay buffer then holds good episodes to learn around. Off-policy only
        (PPO must sample its own actions); disable with ``demonstrations=False``."""
        if not self.off_policy:
            return []
        from automl.search.strategies.uniform import largest_feasible_ratio

        p, env = self.problem, self.env
        widths = [env.top_bits] if self.mode == "prune" else sorted(env.choices, reverse=True)
        demos = []
        for b in widths:
            if self.mode == "quantize":
                ok = p.feasible(p.costs(p.uniform_policy(1.0, b)))
                r = 1.0 if ok else None
            else:
                r = largest_feasible_ratio(p, lambda r, b=b: p.uniform_policy(r, b))
            if r is not None:
                demos.append(env.actions_for(r, b))
        return demos[: max(1, self.options.trials // 2)]

    # --- rollouts -------------------------------------------------------------------------
    def _rollout(self) -> Episode:
        number = self.episodes
        self.episodes += 1
        warm = number < self.warmup
        obs, _ = self.env.reset()
        transitions: list[Transition] = []
        while True:
            extras: dict[str, Any] = {}
            if number < len(self.demos):
                action = self.demos[number][len(transitions)]
            elif warm:
                action = self.noise.uniform((self.env.action_dim,))
            else:
                action, extras = self._act(obs, number)
            next_obs, _, terminated, _, info = self.env.step(action)
            transitions.append(Transition(obs, next_obs, np.asarray(action, dtype=np.float32), terminated,
                                          extras.get("raw_action"), extras.get("value"), extras.get("log_prob")))
            obs = next_obs
            if terminated:
                break
        sigma = 1.0 if warm else (self.noise.sigma(number) if self._uses_noise else 0.0)
        return Episode(number, transitions, info["policy"], info["costs"], warm, sigma, info["actions"])

    _uses_noise: ClassVar[bool] = True

    # --- ask / tell -----------------------------------------------------------------------
    def ask(self, n: int) -> list[Trial]:
        out: list[Trial] = []
        batch: set[str] = set()
        room = self.options.trials - self.evaluations
        while len(out) < min(n, room) and self.episodes < self.max_episodes:
            with single_thread():
                ep = self._rollout()
            key = policy_key(ep.policy)
            if key in self.seen:
                self._complete(ep, self.seen[key], evaluated=False)
            elif key in batch:
                self._waiting.setdefault(key, []).append(ep)
            else:
                batch.add(key)
                trial = self._trial(ep.policy, {"episode": ep.number, "rl_mode": self.mode,
                                                "warmup": ep.warmup, "sigma": ep.sigma,
                                                "actions": ep.actions}, handle=ep)
                self._pending[trial.number] = ep
                out.append(trial)
        if not out and self._finished:
            self._end_batch()
        return out

    def tell(self, trial: Trial, evaluation: Evaluation) -> None:
        ep = self._pending.pop(trial.number, None)
        if ep is None:
            return
        key = policy_key(ep.policy)
        scored = evaluation.accuracy is not None or evaluation.error is not None
        if scored:
            self.evaluations += 1
        if evaluation.accuracy is not None or not evaluation.feasible:
            self.seen[key] = evaluation.accuracy
        self._complete(ep, evaluation.accuracy, evaluated=scored)
        for dup in self._waiting.pop(key, []):
            self._complete(dup, evaluation.accuracy, evaluated=False)
        if not self._pending:
            self._end_batch()

    def _complete(self, ep: Episode, accuracy: float | None, evaluated: bool) -> None:
        ep.accuracy = accuracy
        ep.reward = reward_from_accuracy(accuracy, ep.costs["macs"], self.hp.reward)
        best_r = max([e["reward"] for e in self.curve] + [ep.reward])
        accs = [e["accuracy"] for e in self.curve if e["accuracy"] is not None]
        accs += [accuracy] if accuracy is not None else []
        self.curve.append({"episode": ep.number, "reward": ep.reward, "accuracy": accuracy,
                           "best_reward": best_r, "best_accuracy": max(accs) if accs else None,
                           "warmup": ep.warmup, "sigma": ep.sigma, "evaluated": evaluated,
                           "resource": self.problem.resource(ep.costs),
                           **{m: ep.costs[m] for m in ("latency_ms", "energy_mj", "size_mb", "macs")}})
        self._finished.append(ep)

    def _end_batch(self) -> None:
        """Learn from the episodes finished since the last batch, then checkpoint."""
        done, self._finished = sorted(self._finished, key=lambda e: e.number), []
        for ep in done:
            assert ep.reward is not None
            # AMC's moving-average baseline, subtracted from the terminal reward
            baseline = ep.reward if self.baseline is None else self.baseline
            self.baseline = baseline + self.hp.moving_alpha * (ep.reward - baseline)
            ep.reward_adjusted = ep.reward - baseline  # type: ignore[attr-defined]
        with single_thread():
            self._learn(done)
        self._log_episodes(done)
        self._save()

    def _learn(self, episodes: list[Episode]) -> None:
        rb = self.model.replay_buffer
        mc = self.hp.returns == "monte_carlo"
        steps = 0
        for ep in episodes:
            for tr in ep.transitions:
                # With a discount of 1 and the only reward at the end, every step's return is the
                # episode's reward: Monte-Carlo targets (stored as terminal transitions) give the
                # critic that value directly instead of bootstrapping it back through L steps.
                r = ep.reward_adjusted if (tr.done or mc) else 0.0  # type: ignore[attr-defined]
                rb.add(tr.obs[None], tr.next_obs[None], self.model.policy.scale_action(tr.action[None]),
                       np.array([r], dtype=np.float32), np.array([tr.done or mc]), [{}])
                steps += 1
        if self.episodes > self.warmup and rb.size() > 0 and steps:
            n = max(steps * self.hp.gradient_steps_per_step,
                    len(episodes) * self.hp.min_gradient_steps_per_episode)
            self.model.train(gradient_steps=n, batch_size=self.hp.batch_size)

    # --- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"episode": self.episodes, "rl_mode": self.mode,
                "sigma": self.noise.sigma(self.episodes) if self.episodes >= self.warmup else 1.0}

    def _meta(self) -> dict[str, Any]:
        p = self.problem
        return {"strategy": self.algo, "mode": self.mode, "model": p.info.model_name,
                "hardware": p.profile.name, "budgets": [str(t) for t in p.budget.terms],
                "limits": p.limits, "reward": self.hp.reward, "seed": self.options.seed,
                "warmup_episodes": self.warmup, "hyperparams": self.hp.to_dict(),
                "evaluations": self.evaluations, "episodes_total": self.episodes}

    def _save(self) -> None:
        if self.checkpoint is None:
            return
        state = {"algo": self.algo, "mode": self.mode, "episodes": self.episodes,
                 "evaluations": self.evaluations, "baseline": self.baseline,
                 "noise": self.noise.state_dict(), "seen": self.seen, "curve": self.curve}
        self.checkpoint.save(self.model, state, replay_buffer=self.off_policy)
        assert self.options.state_dir is not None
        write_curve(self.options.state_dir.parent, self._meta(), self.curve)

    def _restore(self) -> None:
        assert self.checkpoint is not None
        state = self.checkpoint.load_state()
        if state.get("algo") != self.algo or state.get("mode") != self.mode:
            raise ValueError(f"the checkpoint in {self.checkpoint.dir} is of {state.get('algo')} "
                             f"in {state.get('mode')} mode, not {self.algo} in {self.mode} mode")
        self.model = self.checkpoint.load_model(self._model_class(), self.env, self.off_policy)
        self.episodes = int(state["episodes"])
        self.evaluations = int(state["evaluations"])
        self.baseline = state["baseline"]
        self.noise.load_state_dict(state["noise"])
        self.seen = dict(state["seen"])
        self.curve = list(state["curve"])
        log.info("%s: resumed at episode %d (%d evaluations)", self.algo, self.episodes, self.evaluations)

    # --- shared model construction ----------------------------------------------------------
    def _off_policy_kwargs(self) -> dict[str, Any]:
        hp = self.hp
        return dict(buffer_size=self._buffer_steps, learning_starts=0, batch_size=hp.batch_size,
                    tau=hp.tau, gamma=hp.gamma, seed=self.options.seed, device="cpu", verbose=0,
                    policy_kwargs={"net_arch": {"pi": list(hp.hidden), "qf": list(hp.hidden)}})

    def _deterministic_action(self, obs: np.ndarray) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(action, dtype=np.float32)


class DDPGStrategy(RLStrategy):
    """``ddpg``: AMC's and HAQ's agent (the default)."""

    name = "ddpg"
    algo = "ddpg"

    def _model_class(self):
        return AMCDDPG

    def _make_model(self):
        model = AMCDDPG("MlpPolicy", self.env, learning_rate=self.hp.lr_critic, **self._off_policy_kwargs())
        model.lr_actor, model.lr_critic = self.hp.lr_actor, self.hp.lr_critic
        return model

    def _act(self, obs, episode):
        return self.noise.sample(self._deterministic_action(obs), episode), {}


class TD3Strategy(DDPGStrategy):
    """``td3``: twin critics, delayed actor updates, target smoothing (Fujimoto et al., 2018)."""

    name = "td3"
    algo = "td3"

    def _model_class(self):
        return SplitTD3

    def _make_model(self):
        hp = self.hp
        model = SplitTD3("MlpPolicy", self.env, learning_rate=hp.lr_critic, policy_delay=hp.policy_delay,
                         target_policy_noise=hp.target_policy_noise, target_noise_clip=hp.target_noise_clip,
                         **self._off_policy_kwargs())
        model.lr_actor, model.lr_critic = hp.lr_actor, hp.lr_critic
        return model


class SACStrategy(RLStrategy):
    """``sac``: a stochastic actor explores by itself (no added noise after the warm-up)."""

    name = "sac"
    algo = "sac"
    _uses_noise = False

    def _model_class(self):
        return SAC

    def _make_model(self):
        return SAC("MlpPolicy", self.env, learning_rate=self.hp.lr_actor, ent_coef=self.hp.ent_coef,
                   **self._off_policy_kwargs())

    def _act(self, obs, episode):
        action, _ = self.model.predict(obs, deterministic=False)
        return np.asarray(action, dtype=np.float32), {}


class PPOStrategy(RLStrategy):
    """``ppo``: on-policy. Episodes are rolled out with the current policy's own sampling; every
    ``episodes_per_update`` finished episodes fill SB3's rollout buffer (``n_steps`` is exactly
    that many episodes of transitions), returns and GAE advantages are computed with the
    terminal reward, and ``train`` runs its epochs. There is no warm-up (random actions would
    be off-policy). Episodes finished but not yet used when a job stops are not checkpointed:
    a resumed PPO search starts its next rollout batch afresh."""

    name = "ppo"
    algo = "ppo"
    off_policy = False
    _uses_noise = False

    def _model_class(self):
        return PPO

    def _make_model(self):
        hp = self.hp
        n_steps = len(self.env.steps) * max(1, hp.episodes_per_update)
        return PPO("MlpPolicy", self.env, learning_rate=hp.lr_actor, n_steps=n_steps,
                   batch_size=min(hp.batch_size, n_steps), n_epochs=hp.n_epochs, gamma=hp.gamma,
                   gae_lambda=hp.gae_lambda, clip_range=hp.clip_range, ent_coef=hp.ppo_ent_coef,
                   seed=self.options.seed, device="cpu", verbose=0,
                   policy_kwargs={"net_arch": {"pi": list(hp.hidden), "vf": list(hp.hidden)}})

    def _act(self, obs, episode):
        with th.no_grad():
            actions, values, log_probs = self.model.policy(th.as_tensor(obs[None]))
        raw = actions.numpy()[0].astype(np.float32)
        # the Gaussian is centred on 0 at first: map [-1, 1] onto the [0, 1] action box
        return np.clip((raw + 1.0) / 2.0, 0.0, 1.0), {"raw_action": raw, "value": values, "log_prob": log_probs}

    def _learn(self, episodes: list[Episode]) -> None:
        self._ppo_queue.extend(episodes)
        k = max(1, self.hp.episodes_per_update)
        while len(self._ppo_queue) >= k:
            batch, self._ppo_queue = self._ppo_queue[:k], self._ppo_queue[k:]
            buf = self.model.rollout_buffer
            buf.reset()
            for ep in batch:
                for i, tr in enumerate(ep.transitions):
                    r = ep.reward_adjusted if tr.done else 0.0  # type: ignore[attr-defined]
                    buf.add(tr.obs[None], tr.raw_action[None], np.array([r], dtype=np.float32),
                            np.array([i == 0]), tr.value, tr.log_prob)
            buf.compute_returns_and_advantage(last_values=th.zeros(1, 1), dones=np.array([True]))
            self.model.train()
