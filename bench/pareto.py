"""The measured accuracy–latency front: hwcompress against what a user would pick instead, in one
run, on the same data, the same budgets and the same fine-tune.

    python -m bench.pareto [--models resnet20 mobilenetv2_050] [--fractions 0.5 0.35 0.25]
                           [--seeds 0 1 2] [--methods ...] [--table] [--plot]

Methods (``--methods``):
  optuna-tpe          our search (Optuna TPE, joint pruning + int8), its distilled fine-tune
  optuna-tpe-taylor   the same with --importance taylor (the latency-aware allocation's starts)
  ddpg-joint          our DDPG agent (AMC/HAQ-style, joint mode)
  tp-global           Torch-Pruning MagnitudePruner, global ranking, ratio bisected to the budget
  tp-uniform          Torch-Pruning MagnitudePruner, one ratio for every layer, bisected
  ort-ptq             ONNX Runtime quantize_static of the unpruned model (no training)
  tp-global+ort-ptq   tp-global bisected so that its ORT int8 graph meets the budget, then PTQ

Every answer is an ONNX graph; all are judged alike: latency as the ratio to the uncompressed
fp32 graph timed side by side in this process (the machine drifts, the ratio holds), accuracy of
the graph itself in ONNX Runtime on the whole test set. Every pruned model gets the same
recovery (``automl.train.finetune``: distilled from the original, cosine, ``--finetune-epochs``).

Data: Fashion-MNIST by default (``--data``), where compression costs accuracy and methods can be
told apart; on MNIST every method ties within noise. Every method and seed starts from one
baseline trained until validation stopped improving (``bench.baselines``; ``--baseline epochs``
trains each seed its own for ``--epochs``, as the MNIST rows were made), with one train/val
split; the seed varies the search, the peers' fine-tune and the recovery.

Resumable: one row per cell (model × budget × method × seed) in ``bench/results/pareto-fashion.json``
(``bench/results/pareto.json`` for MNIST);
a cell that has a row is skipped (``--force`` re-runs it). ``--table`` prints the Markdown of
BENCHMARKS.md, ``--plot`` writes ``bench/results/pareto.png``, ``--retime`` times every stored
answer of a model again, all of them together beside the unpruned graph in one interleaved
measurement, so the table's ratios are read in the same stretch of the machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from automl.peers import BUDGET_TOLERANCE as TOLERANCE
from automl.peers import PEER_METHODS, PeerRunner
from automl.search.runner import SearchConfig, run_search
from automl.workflow import LoadedModel, load_trained
from latency_models.onnx_runtime import INT8_EXPORT
from latency_models.profile import DEFAULT_PROFILE, get_profile

from .rows import load_rows, row_key, save_row

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST = "mnist:" + str(SHARED_DATA / "mnist.npz")
FASHION = "mnist:" + str(SHARED_DATA / "fashion_mnist.npz")
METHODS = ["optuna-tpe", "optuna-tpe-taylor", "ddpg-joint", *PEER_METHODS]
OURS = ("optuna-tpe", "optuna-tpe-taylor", "ddpg-joint")
BASELINE_SEED = 0   # --baseline plateau: the one baseline and split every seed starts from
TIMING_PROTOCOL = "fastest-chunk"   # latency_models.sampling; rows without it were read by the old one
RETIME_S_PER_GRAPH = 2.0
# --retime refuses above this 1-minute load average (--force overrides): interleaving cancels the
# machine's drift, not another job's contention, which slows small graphs more than the unpruned
# one (a retime just after a search's Ray workers exited, load 1.6, read pruned MobileNetV2-0.5
# graphs 10-25% slow; BENCHMARKS.md, issue 12)
RETIME_MAX_LOAD = 0.8
RETIME_MAX_SPREAD = 0.05   # identical graphs must agree this well in one re-timing (identical_graph_spread)
RETIME_PASSES = 3          # passes whose median ratio is saved (retime_passes)
RETIME_ATTEMPTS = 6        # measurements per (model, seed) before giving up: noisy spells pass in minutes

log = logging.getLogger("bench.pareto")


class Context:
    """One (model, seed): the trained baseline and the peers' runner every cell measures by."""

    def __init__(self, model: str, seed: int, args: argparse.Namespace) -> None:
        self.model_name, self.seed, self.args = model, seed, args
        self.weights, self.baseline = None, None
        if args.baseline == "plateau":
            from .baselines import plateau_baseline

            path, self.baseline = plateau_baseline(model, args.data, BASELINE_SEED, args.max_train)
            self.weights = str(path)
        self.data_seed = BASELINE_SEED if self.weights else seed
        self.loaded: LoadedModel = load_trained(model, args.data, seed=self.data_seed, epochs=args.epochs,
                                                weights=self.weights, max_train=args.max_train,
                                                progress=False)
        self.peers = PeerRunner(self.loaded, args.finetune_epochs, seed=seed, test_limit=args.test_limit)

    @functools.cached_property
    def accuracy_original(self) -> float:
        """Scored once, when a cell needs it (``--retime`` only times graphs)."""
        return self.peers.accuracy(self.peers.fp32)


def _ours(ctx: Context, fraction: float, method: str, out: Path) -> dict[str, Any]:
    strategy, _, mode = method.partition("-")
    importance = "taylor" if method.endswith("-taylor") else "magnitude"
    if strategy == "optuna":
        strategy, mode = "optuna-tpe", "joint"
    a = ctx.args
    if a.force:  # otherwise a cell cut short resumes from its evaluation log and Optuna study
        shutil.rmtree(out, ignore_errors=True)
    config = SearchConfig(model=ctx.model_name, data=a.data, budgets=[f"latency_ms={fraction}x"],
                          strategy=strategy, rl_mode=mode or "joint", trials=a.trials, seed=ctx.seed,
                          data_seed=ctx.data_seed, weights=ctx.weights,
                          finetune_epochs=a.finetune_epochs, out_dir=str(out), epochs=a.epochs,
                          max_train=a.max_train, val_limit=a.val_limit, workers=a.workers,
                          recovery_steps=a.recovery_steps, importance=importance)
    r = run_search(config)
    onnx_bytes = (out / "compressed.onnx").read_bytes()
    bits = [lp.w_bits for lp in r.policy.layers.values()]
    return {"onnx": onnx_bytes, "int8_layer_share": sum(b <= 8 for b in bits) / max(1, len(bits)),
            "policy": r.policy.to_dict(), "channel_step": get_profile(r.hardware or DEFAULT_PROFILE).channel_step,
            "search_accuracy_after_finetune_torch": r.accuracy_after_finetune,
            "importance": r.importance, "start_scores": r.start_scores,
            "accuracy_val_search": r.accuracy_val_search, "precision_notes": r.precision_notes,
            "search_latency_ms_measured": r.latency_ms_measured,
            "search_within_budget": r.latency_within_budget_measured,
            "evaluations": r.evaluations}


def _peer(ctx: Context, fraction: float, method: str) -> dict[str, Any]:
    onnx_bytes, ratio = ctx.peers.graph(method, fraction)
    return {"onnx": onnx_bytes, "pruning_ratio": ratio,
            "int8_layer_share": 1.0 if method.endswith("ort-ptq") else 0.0}


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    **{m: (lambda ctx, f, out, m=m: _peer(ctx, f, m)) for m in PEER_METHODS},
    "optuna-tpe": lambda ctx, f, out: _ours(ctx, f, "optuna-tpe", out),
    "ddpg-joint": lambda ctx, f, out: _ours(ctx, f, "ddpg-joint", out),
    "optuna-tpe-taylor": lambda ctx, f, out: _ours(ctx, f, "optuna-tpe-taylor", out),
}


def run_cell(ctx: Context, fraction: float, method: str) -> dict[str, Any]:
    out = _cell_dir({"model": ctx.model_name, "budget_fraction": fraction, "strategy": method,
                     "seed": ctx.seed}, ctx.args)
    t0 = time.perf_counter()
    row: dict[str, Any] = {"model": ctx.model_name, "budget_fraction": fraction, "strategy": method,
                           "seed": ctx.seed, "accuracy_original": ctx.accuracy_original,
                           "finetune_epochs": ctx.args.finetune_epochs, "epochs": ctx.args.epochs,
                           "max_train": ctx.args.max_train, "trials": ctx.args.trials,
                           "int8_export": INT8_EXPORT, "data": data_label(ctx.args.data),
                           "baseline": ctx.baseline and {k: v for k, v in ctx.baseline.items()
                                                         if k not in ("data", "model")}}
    try:
        got = RUNNERS[method](ctx, fraction, out)
    except Exception as exc:  # noqa: BLE001 - an unreachable budget is a result too
        log.exception("%s %s %s s%d", ctx.model_name, fraction, method, ctx.seed)
        return {**row, "error": f"{type(exc).__name__}: {exc}"[:500], "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    onnx_bytes = got.pop("onnx")
    ratio, ms = ctx.peers.timed(onnx_bytes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "answer.onnx").write_bytes(onnx_bytes)
    row.update(got)
    row.update({"accuracy": ctx.peers.accuracy(onnx_bytes), "latency_ratio_measured": ratio,
                "latency_ms_measured": ms, "within_budget": ratio <= fraction * TOLERANCE,
                "wall_s": wall, "timing_protocol": TIMING_PROTOCOL})
    return row


def retime(models: list[str], seeds: list[int], args: argparse.Namespace) -> None:
    """Time every stored answer of a (model, seed) again, all together with the unpruned fp32
    graph in interleaved measurements (:func:`latency_models.sampling.sample_times`, each
    answer ``RETIME_S_PER_GRAPH`` of the budget; the median ratio over :func:`retime_passes`),
    and rewrite the rows' latency ratio. Why: the answers are the cells' products and do not
    change, but a ratio is only comparable with its
    peers' when both were read in the same stretch of this shared machine by the same protocol;
    rows read by the old one (median of 50 calls) keep that figure as
    ``latency_ratio_measured_v1``."""
    from latency_models.onnx_runtime import session_callables
    from latency_models.sampling import SESSIONS

    load = os.getloadavg()[0]
    if load > RETIME_MAX_LOAD and not args.force:
        raise SystemExit(f"--retime: the 1-minute load average is {load:.2f} (> {RETIME_MAX_LOAD}): "
                         "another job shares the cores and would slow the small graphs more than "
                         "the unpruned one; wait until it is idle, or pass --force")
    rows = load_rows(rows_path(args))
    for seed in seeds:
        for model in models:
            cells = [r for r in rows if r["model"] == model and r["seed"] == seed and not r.get("error")]
            if not cells:
                continue
            ctx = Context(model, seed, args)
            graphs = [(r, answer_graph(ctx, r)) for r in cells]
            for r, g in graphs:
                if g is None:
                    log.warning("%s %sx %s seed %d: its graph is gone and cannot be rebuilt (no "
                                "policy stored); left out of the re-timing", model, r["budget_fraction"],
                                r["strategy"], seed)
            timed = [(r, g) for r, g in graphs if g is not None]
            mine, answers = [r for r, _ in timed], [g for _, g in timed]
            shape, threads = ctx.peers.shape, ctx.peers.threads
            groups = [session_callables(g, shape, threads, 1, SESSIONS) for g in [ctx.peers.fp32, *answers]]
            passes, spreads, attempts = retime_passes(groups, answers, f"{model} seed {seed}", args.force)
            for i, r in enumerate(mine):
                ratios = [p[i + 1] / p[0] for p in passes]
                ratio = float(statistics.median(ratios))
                if r.get("timing_protocol") != TIMING_PROTOCOL:
                    r["latency_ratio_measured_v1"] = r["latency_ratio_measured"]
                r.update({"latency_ratio_measured": ratio,
                          "latency_ms_measured": float(statistics.median([p[i + 1] for p in passes])),
                          "reference_ms_measured": float(statistics.median([p[0] for p in passes])),
                          "within_budget": ratio <= r["budget_fraction"] * TOLERANCE,
                          "timing_protocol": TIMING_PROTOCOL, "retimed_together": len(mine),
                          "retime_load_1min": load, "retime_identical_spread": max(spreads),
                          "retime_pass_ratios": ratios, "retime_attempts": attempts})
                save_row(rows_path(args), r)


def retime_passes(groups: list, graphs: list[bytes], what: str,
                  force: bool) -> tuple[list[list[float]], list[float], int]:
    """``RETIME_PASSES`` interleaved measurements of ``groups`` (the unpruned graph first, then
    ``graphs``) that each pass the identical-graph check, trying at most ``RETIME_ATTEMPTS``:
    per pass, every group's ``uncontended_ms``; the kept passes' spreads; the attempts made.
    Why several passes and their median ratio: passes that pass the check still read a small
    graph's ratio up to ~10% apart (MobileNetV2-0.5 TP-uniform 0.35x: 0.366 then 0.333, a
    minute apart)."""
    from latency_models.sampling import sample_times

    passes: list[list[float]] = []
    spreads: list[float] = []
    kept: list[float] = []
    for attempt in range(1, RETIME_ATTEMPTS + 1):
        log.info("retiming %d answers of %s beside the unpruned graph (pass %d, attempt %d)",
                 len(graphs), what, len(passes) + 1, attempt)
        times = [st.uncontended_ms for st in sample_times(groups, RETIME_S_PER_GRAPH * len(groups))]
        spread = identical_graph_spread(graphs, times[1:])
        spreads.append(spread)
        if spread <= RETIME_MAX_SPREAD or force:
            passes.append(times)
            kept.append(spread)
            if len(passes) == RETIME_PASSES:
                return passes, kept, attempt
        else:
            log.warning("identical graphs read %.0f%% apart: the host is unsteady; pass dropped",
                        100 * spread)
    raise SystemExit(f"--retime {what}: identical graphs (ORT PTQ of the same unpruned model, one "
                     f"per budget) read {', '.join(f'{x:.0%}' for x in spreads)} apart in "
                     f"{RETIME_ATTEMPTS} interleaved measurements, {len(passes)} of the "
                     f"{RETIME_PASSES} passes needed within {RETIME_MAX_SPREAD:.0%}: the host is "
                     "unsteady; nothing saved (re-run when it settles, or pass --force)")


def identical_graph_spread(graphs: list[bytes], times_ms: list[float]) -> float:
    """The largest relative spread (max/min − 1) between timings of byte-identical graphs in
    one measurement (0 when no graph repeats): a built-in repeatability check of a re-timing.
    Why: on an unsteady host one interleaved run read the same ORT PTQ graph at 0.607× and
    0.744× of its unpruned model (BENCHMARKS.md, issue 12); such a run says nothing about the
    answers' ratios."""
    by_graph: dict[bytes, list[float]] = {}
    for g, t in zip(graphs, times_ms):
        by_graph.setdefault(g, []).append(t)
    return max((max(ts) / min(ts) - 1 for ts in by_graph.values() if len(ts) > 1), default=0.0)


def answer_graph(ctx: Context, row: dict) -> bytes | None:
    """A cell's deployed graph for timing: the stored one (``bench/results/pareto/`` is not
    tracked, so a fresh checkout lacks it), else rebuilt from the row (a peer from its pruning
    ratio, ours from its stored policy; the latency depends on the architecture, not on the
    recovered weights); None when neither is possible (rows of ours from before the policy was
    stored)."""
    stored = _cell_dir(row, ctx.args).joinpath("answer.onnx")
    if stored.is_file():
        return stored.read_bytes()
    if row["strategy"] in PEER_METHODS:
        return ctx.peers.deployed(row["strategy"], row.get("pruning_ratio"))
    if row.get("policy"):
        from automl.compress import apply_policy, export_deployable
        from automl.core import Policy

        loaded, policy = ctx.loaded, Policy.from_dict(row["policy"])
        calib = loaded.data.calibration_batches()
        model = apply_policy(loaded.model, policy, loaded.info, calib, row["channel_step"])
        return export_deployable(model, policy, loaded.info, loaded.data.input_shape, calib)
    return None


def data_label(data: str) -> str:
    """``fashion_mnist`` / ``mnist`` / ...: the data file's stem (or the spec's name)."""
    name, _, path = data.partition(":")
    return Path(path.partition("@")[0]).stem if path else name


def rows_path(args: argparse.Namespace) -> Path:
    """MNIST keeps its historical file; any other data set has its own."""
    label = data_label(args.data)
    return RESULTS / ("pareto.json" if label == "mnist" else f"pareto-{label.replace('_', '-')}.json")


def _cell_dir(row: dict, args: argparse.Namespace) -> Path:
    label = data_label(args.data)
    root = RESULTS / ("pareto" if label == "mnist" else f"pareto-{label.replace('_', '-')}")
    return root / f"{row['model']}-{row['budget_fraction']}-{row['strategy']}-s{row['seed']}"


# ---- reporting -------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def summarize(rows: list[dict]) -> list[dict]:
    """Per (model, budget, method): mean/std of accuracy over seeds, mean latency ratio."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["model"], r["budget_fraction"], r["strategy"]), []).append(r)
    out = []
    for (model, frac, method), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        ok = [r for r in rs if not r.get("error")]
        out.append({"model": model, "budget_fraction": frac, "strategy": method, "seeds": len(ok),
                    "errors": [r["error"] for r in rs if r.get("error")],
                    "accuracy": [r["accuracy"] for r in ok],
                    "accuracy_original": [r["accuracy_original"] for r in rs],
                    "latency_ratio": [r["latency_ratio_measured"] for r in ok],
                    "within": sum(bool(r["within_budget"]) for r in ok),
                    "wall_s": [r["wall_s"] for r in ok]})
    return out


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | budget | method | seeds | accuracy (ONNX, test) | Δ vs unpruned | "
             "latency ratio measured | within budget | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summarize(rows):
        if not s["seeds"]:
            lines.append(f"| {s['model']} | {s['budget_fraction']}x | {s['strategy']} | 0 | "
                         f"{'; '.join(s['errors'])[:160]} | | | | |")
            continue
        delta = statistics.fmean(s["accuracy"]) - statistics.fmean(s["accuracy_original"])
        lines.append(f"| {s['model']} | {s['budget_fraction']}x | {s['strategy']} | {s['seeds']} | "
                     f"{_mean_std(s['accuracy'])} | {delta * 100:+.2f} pt | "
                     f"{statistics.fmean(s['latency_ratio']):.3f} | {s['within']}/{s['seeds']} | "
                     f"{statistics.fmean(s['wall_s']):.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, data: str = "MNIST") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        summ = [s for s in summarize([r for r in rows if r["model"] == model]) if s["seeds"]]
        for method in METHODS:
            pts = sorted((statistics.fmean(s["latency_ratio"]), statistics.fmean(s["accuracy"]))
                         for s in summ if s["strategy"] == method)
            if pts:
                ax.plot(*zip(*pts), marker="o" if method in OURS else "s",
                        linestyle="-" if method in OURS else "--", label=method)
        orig = [r["accuracy_original"] for r in rows if r["model"] == model]
        ax.axhline(statistics.fmean(orig), color="grey", linewidth=0.8, label="unpruned fp32")
        for frac in sorted({r["budget_fraction"] for r in rows}):
            ax.axvline(frac, color="grey", linestyle=":", linewidth=0.6)
        ax.set_title(f"{model} on {data}")
        ax.set_xlabel("measured latency / unpruned fp32 (ORT, 1 thread)")
        ax.set_ylabel("test accuracy (deployed ONNX)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mobilenetv2_050", "resnet20"])
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.35, 0.25, 0.15])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--data", default=FASHION)
    ap.add_argument("--baseline", choices=("plateau", "epochs"), default="plateau",
                    help="plateau: one baseline trained until validation stops improving, shared "
                         "by every seed; epochs: each seed trains its own for --epochs")
    ap.add_argument("--epochs", type=int, default=2, help="baseline training epochs (--baseline epochs)")
    ap.add_argument("--max-train", type=int, default=10000)
    ap.add_argument("--val-limit", type=int, default=None,
                    help="validation images each candidate is scored on (default: all, 9,000 on "
                         "Fashion-MNIST: ±0.3 pt of sampling noise instead of ±0.9 pt at 1,000)")
    ap.add_argument("--test-limit", type=int, default=None, help="test images scored (all: 10000)")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--finetune-epochs", type=float, default=3.0)
    ap.add_argument("--recovery-steps", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="re-run cells that have a row; --retime even on a loaded machine")
    ap.add_argument("--table", action="store_true", help="print the recorded table and stop")
    ap.add_argument("--plot", action="store_true", help="write bench/results/pareto.png and stop")
    ap.add_argument("--retime", action="store_true",
                    help="time every stored answer of --models/--seeds again, all together beside "
                         "the unpruned graph, and stop")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.table or args.plot:
        rows = load_rows(rows_path(args))
        if args.plot:
            png = rows_path(args).with_suffix(".png")
            plot(rows, png, data_label(args.data))
            print(f"wrote {png}")
        if args.table:
            print(markdown_table(rows))
        return 0
    if args.retime:
        retime(args.models, args.seeds, args)
        return 0
    done = {row_key(r) for r in load_rows(rows_path(args))}
    for seed in args.seeds:
        for model in args.models:
            todo = [(f, m) for f in args.fractions for m in args.methods
                    if args.force or (model, f, m, seed) not in done]
            if not todo:
                continue
            ctx = Context(model, seed, args)
            for fraction, method in todo:
                log.info("cell %s %sx %s seed %d", model, fraction, method, seed)
                row = run_cell(ctx, fraction, method)
                save_row(rows_path(args), row)
                log.info("-> %s", json.dumps({k: row.get(k) for k in (
                    "accuracy", "latency_ratio_measured", "within_budget", "wall_s", "error")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
