"""Does the latency-aware allocation beat one ratio for every layer, after the same recovery?

For one model and budget, on the plateau-trained baseline (``bench.baselines``), each candidate
gets the recovery every answer gets (``automl.train.finetune``: distilled, cosine,
``--finetune-epochs``) and is judged as the front judges answers: its deployed ONNX graph's
accuracy on the whole test set and its latency timed beside the unpruned graph.

Candidates (``--candidates``):
  tp-uniform       Torch-Pruning, one ratio for every layer, bisected to the measured budget
  tp-global        Torch-Pruning, one global magnitude threshold, bisected likewise
  wW-taylor        our policy W of the way from uniform (0) to the allocation (1), pruned by
                   Taylor importance (the search's starts), its keep ratios then scaled together
                   until the deployed graph *measures* within the budget, as the peers' ratio is
                   bisected on measured latency (the table can err differently on uneven widths:
                   a blend it put at 0.25x measured 0.198x)
  wW-magnitude     the same widths pruned by L2 magnitude

Each of ours also records the search signal it would get (validation accuracy after the
search's 200 distilled recovery steps, on 1,000 and on every validation image), so the table
shows whether the signal ranks the candidates as the final recovery does.

    python -m bench.allocation_ablation --model mobilenetv2_050 --fraction 0.25 [--table]

Resumable: one row per (model, budget, candidate, seed) in
``bench/results/allocation-ablation.json``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from automl.compress import apply_policy, export_deployable
from automl.importance import channel_scores_for
from automl.peers import PeerRunner
from automl.search.allocation import blended_policies
from automl.search.finalize import measure_reference_ms
from automl.search.problem import build_problem
from automl.train import DEFAULT_RECOVERY_STEPS, TeacherLogits, evaluate_accuracy, finetune, recover_steps
from automl.workflow import load_trained

from .baselines import plateau_baseline
from .pareto import FASHION
from .rows import load_rows, row_key, save_row

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = RESULTS / "allocation-ablation.json"
DEFAULT_CANDIDATES = ["tp-uniform", "w0.0-taylor", "w0.5-taylor", "w1.0-taylor"]

log = logging.getLogger("bench.allocation_ablation")


def run(args: argparse.Namespace) -> None:
    done = {row_key(r) for r in load_rows(ROWS)}
    todo = [c for c in args.candidates if (args.model, args.fraction, c, args.seed) not in done]
    if not todo:
        return
    weights, baseline = plateau_baseline(args.model, args.data, 0, args.max_train)
    loaded = load_trained(args.model, args.data, seed=0, weights=str(weights), max_train=args.max_train,
                          progress=False)
    data = loaded.data
    peers = PeerRunner(loaded, args.finetune_epochs, seed=args.seed, test_limit=None)
    reference_ms = measure_reference_ms(loaded)
    problem = build_problem(loaded, [f"latency_ms={args.fraction}x"], measured_reference_ms=reference_ms)
    scores = channel_scores_for("taylor", loaded.model, loaded.info, data.x_train, data.y_train)
    weights_wanted = sorted({float(c.split("-")[0][1:]) for c in todo if c.startswith("w")})
    ours = {f"w{w}": p for w, p in blended_policies(problem, scores, 32, weights_wanted)}
    calib = data.calibration_batches()
    teacher = TeacherLogits(loaded.model, data.x_train)
    for name in todo:
        t0 = time.perf_counter()
        row = {"model": args.model, "budget_fraction": args.fraction, "strategy": name, "seed": args.seed,
               "finetune_epochs": args.finetune_epochs, "baseline_test_accuracy": baseline["test_accuracy"],
               "accuracy_original_torch": evaluate_accuracy(loaded.model, data.x_test, data.y_test)}
        if name.startswith("tp-"):
            onnx_bytes, ratio = peers.graph(name, args.fraction)
            row["pruning_ratio"] = ratio
        else:
            key, criterion = name.split("-")
            by = scores if criterion == "taylor" else None
            policy, scale = hold_to_measured(problem, ours[key], lambda p: peers.timed(
                export_deployable(apply_policy(loaded.model, p, loaded.info, calib, problem.channel_step,
                                               scores=by), p, loaded.info, data.input_shape, calib))[0],
                args.fraction)
            row["measured_scale"] = scale
            model = apply_policy(loaded.model, policy, loaded.info, calib, problem.channel_step, scores=by)
            recover_steps(model, teacher, data.x_train, data.y_train, DEFAULT_RECOVERY_STEPS)
            row["signal_val1000"] = evaluate_accuracy(model, data.x_val[:1000], data.y_val[:1000])
            row["signal_val_all"] = evaluate_accuracy(model, data.x_val, data.y_val)
            model = apply_policy(loaded.model, policy, loaded.info, calib, problem.channel_step, scores=by)
            finetune(model, data, epochs=args.finetune_epochs, seed=args.seed, teacher=loaded.model)
            onnx_bytes = export_deployable(model, policy, loaded.info, data.input_shape, calib)
            row.update({"latency_ratio_predicted": problem.costs(policy)["latency_ms"] / reference_ms,
                        "accuracy_torch": evaluate_accuracy(model, data.x_test, data.y_test),
                        "keep": {g: round(policy[m[0]].keep_ratio, 3) for g, m in problem.groups.items()}})
        row["latency_ratio_measured"] = peers.timed(onnx_bytes)[0]
        row["accuracy"] = peers.accuracy(onnx_bytes)
        row["wall_s"] = time.perf_counter() - t0
        save_row(ROWS, row)
        log.info("%s %sx %s: accuracy %.4f at %.3fx", args.model, args.fraction, name, row["accuracy"],
                 row["latency_ratio_measured"])


def hold_to_measured(problem, policy, measure, target: float, steps: int = 6):
    """``policy`` with every group's keep ratio scaled by the largest factor (bisected in
    [0.5, 2]) whose deployed graph measures ≤ ``target`` × the unpruned model; (policy, factor).
    Why: the peers are bisected on measured latency, so ours must be held to the same
    measured budget from both sides to be compared at matched latency."""
    from automl.search.measured_budget import shrink_policy

    lo, hi = 0.5, 2.0
    best = (shrink_policy(problem, policy, lo), lo)
    if measure(best[0]) > target:
        return best
    for _ in range(steps):
        mid = (lo + hi) / 2
        candidate = shrink_policy(problem, policy, mid)
        if measure(candidate) <= target:
            lo, best = mid, (candidate, mid)
        else:
            hi = mid
    return best


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | budget | candidate | accuracy (ONNX, 10k test) | latency ratio measured | "
             "signal (val 1k / all) |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], -r["budget_fraction"], r["strategy"])):
        signal = (f"{r['signal_val1000']:.4f} / {r['signal_val_all']:.4f}" if "signal_val_all" in r else "–")
        lines.append(f"| {r['model']} | {r['budget_fraction']}x | {r['strategy']} | {r['accuracy']:.4f} | "
                     f"{r['latency_ratio_measured']:.3f} | {signal} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2_050")
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--candidates", nargs="+", default=DEFAULT_CANDIDATES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=FASHION)
    ap.add_argument("--max-train", type=int, default=10000)
    ap.add_argument("--finetune-epochs", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (two budgets side by side: 1)")
    ap.add_argument("--table", action="store_true", help="print the recorded rows and stop")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.table:
        run(args)
    print(markdown_table(load_rows(ROWS)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
