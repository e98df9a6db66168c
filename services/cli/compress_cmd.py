"""``hwcompress compress``, ``hwcompress policy template`` and ``hwcompress demo`` (a search)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from automl.core import DEFAULT_BASELINE_EPOCHS, DEFAULT_SEED, Policy
from automl.data import DEFAULT_DATASET
from automl.records import JobEvent, TrialEvent
from automl.space import policy_template
from automl.workflow import compress_with_policy, format_comparison, load_trained

from .common import add_json_flag, print_json
from .service_cmds import (DEMO_BUDGET, DEMO_DATA, DEMO_MODEL, DEMO_STRATEGY, DEMO_TRIALS, print_peers,
                           relative_latency_fraction)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="zoo name (lenet5, vgg, resnet20, resnet56, mobilenetv2, mobilenetv2_050) "
                        "or package.module:function")
    p.add_argument("--data", default=DEFAULT_DATASET,
                   help="digits | digits@SIZE | mnist:PATH[@SIZE] (default: digits)")
    p.add_argument("--weights", help="weights file (.safetensors, or a state dict loaded with "
                                     "weights_only=True); default: train a baseline (cached)")
    p.add_argument("--epochs", type=int, default=DEFAULT_BASELINE_EPOCHS,
                   help="baseline training epochs (cache key)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="apply a given policy and measure before/after")
    _add_model_args(p)
    p.add_argument("--policy", required=True, help="policy JSON (see `hwcompress policy template`)")
    p.add_argument("--out", required=True, help="output directory (result.json, compressed.onnx)")
    p.add_argument("--channel-step", type=int, default=1, help="round kept channels to this multiple")
    p.add_argument("--finetune-epochs", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1, help="ORT threads when measuring latency")
    add_json_flag(p, "result.json")
    p.set_defaults(func=cmd_compress)

    pp = sub.add_parser("policy", help="policy helpers")
    psub = pp.add_subparsers(dest="policy_command", required=True)
    t = psub.add_parser("template", help="print a valid full-size policy JSON to edit")
    t.add_argument("--model", required=True)
    t.add_argument("--data", default=DEFAULT_DATASET, help="input shape comes from the data")
    add_json_flag(t, "the policy (it always does)")
    t.set_defaults(func=cmd_policy_template)

    d = sub.add_parser("demo", help="the main job end to end on the embedded defaults")
    d.add_argument("--model", default=DEMO_MODEL)
    d.add_argument("--data", default=DEMO_DATA)
    d.add_argument("--budget", default=DEMO_BUDGET)
    d.add_argument("--strategy", default=DEMO_STRATEGY)
    d.add_argument("--trials", type=int, default=DEMO_TRIALS)
    d.add_argument("--no-peers", action="store_true",
                   help="skip the side-by-side with Torch-Pruning and ORT int8 at the same budget")
    d.add_argument("--out", default="out/demo")
    add_json_flag(d, "the result and the peers' answers (progress and tables go to stderr)")
    d.set_defaults(func=cmd_demo)


def cmd_compress(args: argparse.Namespace) -> int:
    policy = Policy.from_json(Path(args.policy).read_text())
    loaded = load_trained(args.model, args.data, seed=args.seed, epochs=args.epochs,
                          weights=args.weights, allow_import=True)
    result = compress_with_policy(loaded, policy, args.out, channel_step=args.channel_step,
                                  finetune_epochs=args.finetune_epochs, seed=args.seed,
                                  threads=args.threads)
    if args.json:
        print_json(result)
        return 0
    print(format_comparison(result))
    print(f"wrote {Path(args.out) / 'result.json'} and {Path(args.out) / 'compressed.onnx'}")
    return 0


def cmd_policy_template(args: argparse.Namespace) -> int:
    from automl.data import load_dataset
    from automl.models import build_model
    from automl.space import trace_model

    data = load_dataset(args.data)
    model = build_model(args.model, data.in_channels, data.num_classes, allow_import=True)
    print(policy_template(trace_model(model, data.input_shape, args.model)).to_json())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train (or load) a model on digits, search a policy for half its measured latency on this
    CPU, and print the before/after comparison."""
    from tqdm.auto import tqdm

    from automl.search.runner import SearchConfig, run_search

    config = SearchConfig(model=args.model, data=args.data, budgets=[args.budget],
                          strategy=args.strategy, trials=args.trials, out_dir=args.out,
                          progress=True)
    say = sys.stderr if args.json else sys.stdout   # with --json, stdout holds the JSON alone
    print(f"searching {args.model} on {args.data}: budget {args.budget} (of the measured "
          f"uncompressed latency), strategy {args.strategy}, {args.trials} evaluations on Ray", file=say)
    bar = tqdm(total=args.trials, desc=f"search {args.strategy}", unit="eval")

    def on_event(e: JobEvent) -> None:
        if isinstance(e, TrialEvent) and e.accuracy is not None:
            bar.update(1)
            if e.best_accuracy is not None:
                bar.set_postfix(best_val_acc=f"{e.best_accuracy:.4f}")

    try:
        r = run_search(config, on_event)
    finally:
        bar.close()
    rows = [("accuracy (test)", f"{r.accuracy_original:.4f}",
             f"{r.accuracy_before_finetune:.4f} -> {r.accuracy_after_finetune:.4f} (fine-tuned)"),
            ("latency_ms_measured (ORT, CPU, b=1)", f"{r.latency_ms_original_measured:.4f}",
             f"{r.latency_ms_measured:.4f} (predicted {r.latency_ms_predicted:.4f}, "
             f"budget {r.latency_ms_budget:.4f})"),
            ("MACs", "", f"{r.macs:,}"), ("size_mb", "", f"{r.size_mb:.4f}"),
            ("evaluations / wall_s", "", f"{r.evaluations} / {r.wall_s:.1f}")]
    w = max(len(x[0]) for x in rows)
    print(f"{'':{w}}  {'original':>10}  compressed", file=say)
    for a, b, c in rows:
        print(f"{a:{w}}  {b:>10}  {c}", file=say)
    print(f"wrote {args.out}/result.json, trace.json, search.png and compressed.onnx", file=say)
    fraction = relative_latency_fraction([args.budget])
    peers: list = []
    if not args.no_peers and fraction is not None:
        peers = print_peers(args.model, args.data, fraction, r, str(Path(args.out) / "compressed.onnx"),
                            file=say)
    if args.json:
        print_json({"result": r.to_dict(), "peers": peers})
    return 0
