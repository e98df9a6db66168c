"""Agent hyper-parameters, named and defaulted from the papers, all overridable.

``ddpg`` takes AMC's values (``amc_search.py`` / ``lib/agent.py``): actor and critic with two
hidden layers of 300, lr 1e-4 (actor) / 1e-3 (critic), tau 0.01, batch 64, discount 1.0, a
moving-average reward baseline with alpha 0.5, truncated-normal exploration with sigma 0.5
decaying ×0.95 per episode after 100 warm-up episodes of 800. ``td3`` takes Fujimoto et al.'s
(400/300, lr 1e-3, policy delay 2, target noise 0.2 clipped at 0.5), ``sac`` Haarnoja et
al.'s (256/256, lr 3e-4, tau 0.005, automatic entropy), ``ppo`` Schulman et al.'s / SB3's
(clip 0.2, 10 epochs, GAE lambda 0.95, lr 3e-4) with the AMC discount of 1.0: an episode's only
reward is at its end. Overrides come from ``StrategyOptions.extra["agent_kwargs"]``.

The warm-up is AMC's *fraction* (100 of 800 episodes, 1/8) of the evaluations a job allows,
at least one episode and at most AMC's 100: a 40-evaluation job cannot spend 100 on random
actions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping


@dataclass(frozen=True)
class AgentHyperParams:
    hidden: tuple[int, ...] = (300, 300)
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    gamma: float = 1.0
    buffer_episodes: int = 100        # replay memory, in episodes (AMC's rmsize of 100)
    moving_alpha: float = 0.5          # reward baseline: b += alpha·(R - b)
    sigma: float = 0.5                 # exploration noise
    sigma_decay: float = 0.95          # per episode after the warm-up (HAQ: 0.99)
    warmup_fraction: float = 1 / 8     # AMC: 100 of 800 episodes
    warmup_episodes: int | None = None  # overrides warmup_fraction
    max_warmup: int = 100
    gradient_steps_per_step: int = 1   # AMC updates once per transition after the warm-up
    min_gradient_steps_per_episode: int = 0  # more updates when episodes are few (see README)
    returns: str = "monte_carlo"       # or "td": bootstrap the critic through the episode
    max_episode_factor: int = 4        # episodes allowed per evaluation (repeats are free)
    reward: str = "error"              # or "error_log_macs" (AMC's R_FLOPs)
    demonstrations: bool = True        # first episodes replay the uniform baselines (see strategy)
    # TD3
    policy_delay: int = 1
    target_policy_noise: float = 0.0
    target_noise_clip: float = 0.0
    # SAC
    ent_coef: str | float = "auto"
    # PPO
    episodes_per_update: int = 4
    n_epochs: int = 10
    clip_range: float = 0.2
    gae_lambda: float = 0.95
    ppo_ent_coef: float = 0.0

    def warmup(self, trials: int) -> int:
        if self.warmup_episodes is not None:
            return max(0, int(self.warmup_episodes))
        return max(1, min(self.max_warmup, int(round(trials * self.warmup_fraction))))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


PAPER_DEFAULTS: dict[str, AgentHyperParams] = {
    "ddpg": AgentHyperParams(),
    "td3": AgentHyperParams(hidden=(400, 300), lr_actor=1e-3, lr_critic=1e-3, tau=0.005, batch_size=100,
                            policy_delay=2, target_policy_noise=0.2, target_noise_clip=0.5),
    "sac": AgentHyperParams(hidden=(256, 256), lr_actor=3e-4, lr_critic=3e-4, tau=0.005, batch_size=256),
    "ppo": AgentHyperParams(hidden=(64, 64), lr_actor=3e-4, lr_critic=3e-4, batch_size=64),
}


def hyperparams(algo: str, overrides: Mapping[str, Any] | None = None) -> AgentHyperParams:
    """``algo``'s paper defaults with ``overrides`` applied; unknown names are an error (a typo
    must not silently run with the default)."""
    base = PAPER_DEFAULTS[algo]
    overrides = dict(overrides or {})
    known = {f.name for f in fields(AgentHyperParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"agent_kwargs: unknown hyper-parameters {unknown} (known: {sorted(known)})")
    if "hidden" in overrides:
        overrides["hidden"] = tuple(int(h) for h in overrides["hidden"])
    return replace(base, **overrides)
