"""The RL agents (issue 5): the env passes SB3's check_env in every mode, every episode meets
its budgets by construction, DDPG learns on LeNet-5 + digits, checkpoints resume the episode
count, and the agents run end to end through the search runner."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env

from agents.env import MODES, CompressionEnv, bits_from_action
from agents.strategy import DDPGStrategy, PPOStrategy, SACStrategy, TD3Strategy, single_thread
from automl.core import Evaluation, Policy
from automl.search.base import StrategyOptions
from automl.search.evaluator import EvalPayload, score_policy
from automl.search.problem import build_problem
from automl.search.runner import SearchConfig, run_search

# (hardware, budgets): several budgets at once, every metric covered
PROBLEMS = {
    "cpu-size": ("cpu-ort", ["size_mb=0.4x"]),
    "cpu-size-macs": ("cpu-ort", ["size_mb=0.5x", "macs=0.9x"]),
    "sim-latency-energy": ("bitfusion-sim", ["latency_ms=0.25x", "energy_mj=0.3x"]),
    "sim-size-macs": ("bitfusion-sim", ["size_mb=0.1x", "macs=0.8x"]),
}
_problems: dict[str, object] = {}


@pytest.fixture(scope="module")
def problems(lenet_digits):
    if not _problems:
        for name, (hw, budgets) in PROBLEMS.items():
            _problems[name] = build_problem(lenet_digits, budgets, hardware=hw, quick_table=True)
    return _problems


def _proxy_accuracy(policy: Policy) -> float:
    """A cheap, deterministic stand-in for accuracy: more channels and bits score higher."""
    lps = list(policy.layers.values())
    return 0.5 * np.mean([lp.keep_ratio for lp in lps]) + 0.5 * np.mean([min(lp.w_bits, 8) / 8 for lp in lps])


def _envs(problems):
    for name, problem in problems.items():
        for mode in MODES:
            try:
                yield name, mode, CompressionEnv(problem, mode, reward_fn=_proxy_accuracy)
            except Exception as exc:  # a mode that cannot meet the budget must say so up front
                assert "cannot meet" in str(exc) or "no bit-widths" in str(exc), exc


def test_check_env_passes_in_every_mode(problems):
    modes = set()
    for _, mode, env in _envs(problems):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*symmetric and normalized Box action space.*")
            check_env(env)
        modes.add(mode)
    assert modes == set(MODES)


def test_bits_mapping_is_haqs():
    choices = (2, 3, 4, 5, 6, 7, 8)
    for a in np.linspace(0, 1, 101):
        assert bits_from_action(a, choices) == min(8, max(2, int(np.floor(2 - 0.5 + a * 7 + 0.5))))
    assert bits_from_action(0.0, (32, 8)) == 8 and bits_from_action(1.0, (32, 8)) == 32


def _run_episode(env: CompressionEnv, actions: np.ndarray) -> dict:
    env.reset()
    for t in range(len(env.steps)):
        _, reward, done, _, info = env.step(actions[t % len(actions)])
    assert done
    return info


ACTIONS = st.lists(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
@example(actions=[[0.0, 0.0, 0.0]])
@example(actions=[[1.0, 1.0, 1.0]])
@example(actions=[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
def test_every_episode_meets_every_budget(problems, actions):
    a = np.asarray(actions, dtype=np.float32)
    for name, mode, env in _envs_cached(problems):
        info = _run_episode(env, a[:, :env.action_dim])
        problem = env.problem
        costs = problem.costs(info["policy"])
        assert problem.feasible(costs), (name, mode, actions, problem.violation(costs))
        info["policy"].validate(problem.info)
        if mode == "prune":
            assert {lp.w_bits for lp in info["policy"].layers.values()} == {max(problem.bits_choices)}
        if mode == "quantize":
            assert all(lp.keep_ratio == 1.0 for lp in info["policy"].layers.values())


_env_cache: list = []


def _envs_cached(problems):
    if not _env_cache:
        _env_cache.extend(_envs(problems))
    return _env_cache


def test_joint_mode_produces_per_layer_bits_and_ratios(problems):
    env = CompressionEnv(problems["sim-latency-energy"], "joint", reward_fn=_proxy_accuracy)
    rng = np.random.default_rng(0)
    seen_bits, seen_keeps = set(), set()
    for _ in range(20):
        info = _run_episode(env, rng.uniform(0, 1, (len(env.steps), 3)).astype(np.float32))
        layers = info["policy"].layers
        assert set(layers) == set(env.problem.info.layer_names)
        seen_bits |= {(n, lp.w_bits, lp.a_bits) for n, lp in layers.items()}
        seen_keeps |= {(n, lp.keep_ratio) for n, lp in layers.items() if lp.keep_ratio < 1.0}
        # mixed precision within one policy: not every layer at the same widths
    assert len({b for _, b, _ in seen_bits}) >= 3 and len({a for _, _, a in seen_bits}) >= 3
    assert len({n for n, _ in seen_keeps}) >= 2


def _drive(strategy, accuracy_of, batch: int = 1, max_batches: int = 1000) -> list[Evaluation]:
    """The runner's ask/tell loop without the runner: accuracy from ``accuracy_of``."""
    evals = []
    for _ in range(max_batches):
        trials = strategy.ask(batch)
        if not trials:
            break
        for t in trials:
            p = strategy.problem
            c = p.costs(t.policy)
            assert p.feasible(c)
            ev = Evaluation(t.policy, accuracy_of(t.policy), c["latency_ms"], c["energy_mj"], c["size_mb"],
                            int(c["macs"]), True)
            strategy.tell(t, ev)
            evals.append(ev)
    return evals


def test_ddpg_improves_the_best_reward_over_its_warmup(lenet_digits, problems):
    """Real accuracies (validation slice, no fine-tune) on the bit-flexible accelerator at a
    25% latency budget, joint mode: after 10 random warm-up episodes the agent finds a better
    policy than the warm-up did, and its episodes are better on average."""
    problem = problems["sim-latency-energy"]
    data = lenet_digits.data
    payload = EvalPayload(lenet_digits.model, lenet_digits.info, data.x_val, data.y_val,
                          data.calibration_batches(), data.x_train, data.y_train, problem.channel_step)
    options = StrategyOptions(trials=40, seed=0, extra={"rl_mode": "joint",
                                                         "agent_kwargs": {"warmup_episodes": 10, "demonstrations": False}})
    strategy = DDPGStrategy(problem, options)

    def accuracy(pol):
        with single_thread():  # LeNet on 360 images: threads only contend on a busy machine
            return score_policy(payload, pol.to_dict())["accuracy"]

    _drive(strategy, accuracy, batch=2)
    curve = strategy.curve
    warm = [e["reward"] for e in curve if e["warmup"]]
    agent = [e["reward"] for e in curve if not e["warmup"]]
    assert len(warm) == 10 and len(agent) >= 30
    # the best can tie: a reward is an accuracy on 360 images (steps of 1/360) and a lucky warm-up
    # may already hit the best feasible policy (on this AVX-512 VM it does, -0.0231 both); learning
    # shows in the agent's late episodes, better on average than the random warm-up
    assert max(agent) >= max(warm)
    assert np.mean(agent[-10:]) > np.mean(warm) + 0.02


@pytest.mark.parametrize("cls", [DDPGStrategy, TD3Strategy, SACStrategy, PPOStrategy])
def test_every_agent_runs_and_learns_without_error(cls, problems):
    options = StrategyOptions(trials=12, seed=1, extra={"rl_mode": "joint",
                                                         "agent_kwargs": {"warmup_episodes": 3,
                                                                          "episodes_per_update": 4}
                                                         if cls is PPOStrategy else {"warmup_episodes": 3}})
    strategy = cls(problems["sim-latency-energy"], options)
    evals = _drive(strategy, _proxy_accuracy, batch=3)
    assert strategy.evaluations == len(evals) <= 12 and len(evals) >= 6
    assert strategy.model._n_updates > 0


def test_repeated_policies_are_answered_without_an_evaluation(problems):
    # on the CPU profile LeNet's convs cannot be pruned at a channel step of 16: few policies
    options = StrategyOptions(trials=20, seed=0, extra={"rl_mode": "prune"})
    strategy = DDPGStrategy(problems["cpu-size"], options)
    evals = _drive(strategy, _proxy_accuracy, batch=4)
    keys = [json.dumps(e.policy.to_dict(), sort_keys=True) for e in evals]
    assert len(keys) == len(set(keys)) == strategy.evaluations
    assert strategy.episodes <= 20 * strategy.hp.max_episode_factor
    assert len(strategy.curve) == strategy.episodes


def _checkpointed_ddpg(problems, tmp_path, trials: int):
    """A factory of joint-mode DDPG agents sharing one state dir: each call is a (re)started job."""
    state = tmp_path / "state"
    state.mkdir()

    def make():
        return DDPGStrategy(problems["sim-latency-energy"], StrategyOptions(
            trials=trials, seed=0, state_dir=state, extra={"rl_mode": "joint", "agent_kwargs": {"warmup_episodes": 2}}))
    return make


def test_checkpoint_and_resume_continue_the_episode_count(problems, tmp_path):
    make = _checkpointed_ddpg(problems, tmp_path, trials=10)

    first = make()
    _drive(first, _proxy_accuracy, batch=2, max_batches=3)          # a job stopped after 6
    assert first.episodes == 6 and first.evaluations == 6
    buffer_size = first.model.replay_buffer.size()
    sigma = first.noise.sigma(first.episodes)
    resumed = make()
    assert resumed.episodes == 6 and resumed.evaluations == 6
    assert resumed.model.replay_buffer.size() == buffer_size > 0
    assert resumed.noise.rng.bit_generator.state == first.noise.rng.bit_generator.state
    assert resumed.noise.sigma(resumed.episodes) == sigma
    _drive(resumed, _proxy_accuracy, batch=2)
    assert resumed.evaluations == 10
    numbers = [e["episode"] for e in resumed.curve]
    assert numbers == list(range(len(numbers))) and numbers[-1] >= 9
    curve = json.loads((tmp_path / "learning_curve.json").read_text())
    assert len(curve["episodes"]) == len(numbers) and (tmp_path / "learning_curve.png").stat().st_size > 0
    # SB3's logger wrote TensorBoard events into the job's folder: one step per episode, train losses
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    runs = sorted((tmp_path / "tensorboard" / "ddpg").iterdir())
    assert runs, "no TensorBoard run"
    steps: set[int] = set()
    tags: set[str] = set()
    for run in runs:
        acc = EventAccumulator(str(run))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
        steps |= {e.step for e in acc.Scalars("episode/reward")}
    assert {"episode/reward", "episode/best_accuracy", "train/critic_loss"} <= tags, tags
    assert steps == set(numbers)


def test_a_batch_cut_by_a_crash_is_rolled_out_again_identically(problems, tmp_path):
    """A job killed mid-batch has logged some evaluations after the agent's last checkpoint.
    The resumed agent re-rolls exactly those episodes (restored actor, noise state and episode
    count), so the runner answers them from its evaluation log instead of scoring them again
    and the agent still learns from them."""
    make = _checkpointed_ddpg(problems, tmp_path, trials=12)

    first = make()
    _drive(first, _proxy_accuracy, batch=3, max_batches=2)            # checkpointed after 6
    cut = first.ask(3)                                                # then killed mid-batch
    c = first.problem.costs(cut[0].policy)
    first.tell(cut[0], Evaluation(cut[0].policy, _proxy_accuracy(cut[0].policy), c["latency_ms"],
                                  c["energy_mj"], c["size_mb"], int(c["macs"]), True))
    resumed = make()
    again = resumed.ask(3)
    assert [t.policy.to_dict() for t in again] == [t.policy.to_dict() for t in cut]
    assert resumed.episodes == first.episodes == 9


def test_ddpg_joint_end_to_end_through_the_runner(tmp_path, lenet_digits):
    result = run_search(SearchConfig(model="lenet5", data="digits", budgets=["latency_ms=0.25x"],
                                     hardware="bitfusion-sim", strategy="ddpg", rl_mode="joint", trials=8,
                                     quick_table=True, use_ray=False, finetune_epochs=0.2,
                                     out_dir=str(tmp_path)))
    assert result.strategy == "ddpg" and result.evaluations == 8
    assert result.latency_ms_predicted <= result.latency_ms_budget * 1.0001
    assert result.accuracy_before_finetune > 0.5
    assert json.loads((tmp_path / "result.json").read_text())["policy"] == result.policy.to_dict()
    bits = {(lp.w_bits, lp.a_bits) for lp in result.policy.layers.values()}
    assert all(w <= 8 and a <= 8 for w, a in bits)
    curve = json.loads((tmp_path / "learning_curve.json").read_text())
    assert len(curve["episodes"]) >= 8 and curve["mode"] == "joint"
    assert Path(tmp_path / "learning_curve.png").is_file()


def test_episodes_hold_a_tight_latency_budget_under_per_shape_corrections(lenet_digits):
    """The device corrections differ by shape (uniform vs mixed keep ratios, one bit-width vs
    several), as calibration measures them (mixed ~1.4-1.8x uniform on MobileNetV2 here). An
    episode checks its completions on uniform policies but usually finishes mixed: with a
    budget just above the smallest uniform policy, every finished episode must still hold it
    as the problem judges it (it did not: DDPG joint at 0.25x scored 0 of 80 episodes)."""
    # The budget given here only has to be reachable; the limit the test means is set below from
    # the smallest uniform policy (on a tiny net the host's timing noise can make even the
    # smallest policy slower than the uncompressed one, as on CI: 0.026 vs 0.018 ms).
    problem = build_problem(lenet_digits, ["latency_ms=0.95x"], hardware="cpu-ort", quick_table=True,
                            measured_reference_ms=1000.0)
    problem.latency_correction.update({"32/uniform": 1.0, "32/mixed": 1.6, "8/uniform": 1.1,
                                       "8/mixed": 1.8})
    smallest = problem.smallest_costs()["latency_ms"]
    problem.limits["latency_ms"] = smallest * 1.3   # reachable uniformly, tight for mixed shapes
    rng = np.random.default_rng(0)
    for mode in ("prune", "joint"):
        env = CompressionEnv(problem, mode, reward_fn=_proxy_accuracy)
        for _ in range(25):
            info = _run_episode(env, rng.uniform(0, 1, size=(len(env.steps), env.action_dim)).astype(np.float32))
            costs = problem.costs(info["policy"])
            assert problem.feasible(costs), (mode, problem.violation(costs), info["policy"].to_dict())
