"""``hwcompress compress``, ``hwcompress policy template`` and ``hwcompress demo``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from automl.core import LayerPolicy, Policy
from automl.data import DEFAULT_DATASET
from automl.space import canonical_policy, policy_template
from automl.workflow import compress_with_policy, format_comparison, load_trained


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="zoo name (lenet5, vgg, resnet20, resnet56, mobilenetv2, mobilenetv2_050) "
                        "or package.module:function")
    p.add_argument("--data", default=DEFAULT_DATASET,
                   help="digits | digits@SIZE | mnist:PATH[@SIZE] (default: digits)")
    p.add_argument("--weights", help="weights file (.safetensors, or a state dict loaded with "
                                     "weights_only=True); default: train a baseline (cached)")
    p.add_argument("--epochs", type=int, default=10, help="baseline training epochs (cache key)")
    p.add_argument("--seed", type=int, default=0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="apply a given policy and measure before/after")
    _add_model_args(p)
    p.add_argument("--policy", required=True, help="policy JSON (see `hwcompress policy template`)")
    p.add_argument("--out", required=True, help="output directory (result.json, compressed.onnx)")
    p.add_argument("--channel-step", type=int, default=1, help="round kept channels to this multiple")
    p.add_argument("--finetune-epochs", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1, help="ORT threads when measuring latency")
    p.set_defaults(func=cmd_compress)

    pp = sub.add_parser("policy", help="policy helpers")
    psub = pp.add_subparsers(dest="policy_command", required=True)
    t = psub.add_parser("template", help="print a valid full-size policy JSON to edit")
    t.add_argument("--model", required=True)
    t.add_argument("--data", default=DEFAULT_DATASET, help="input shape comes from the data")
    t.set_defaults(func=cmd_policy_template)

    d = sub.add_parser("demo", help="the main job end to end on the embedded defaults")
    d.add_argument("--model", default="resnet20")
    d.add_argument("--data", default=DEFAULT_DATASET)
    d.add_argument("--out", default="out/demo")
    d.set_defaults(func=cmd_demo)


def cmd_compress(args: argparse.Namespace) -> int:
    policy = Policy.from_json(Path(args.policy).read_text())
    loaded = load_trained(args.model, args.data, seed=args.seed, epochs=args.epochs,
                          weights=args.weights, allow_import=True)
    result = compress_with_policy(loaded, policy, args.out, channel_step=args.channel_step,
                                  finetune_epochs=args.finetune_epochs, seed=args.seed,
                                  threads=args.threads)
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
    """Train (or load) a ResNet-20 on digits, apply a hand-given policy, print before/after."""
    loaded = load_trained(args.model, args.data)
    policy = canonical_policy(loaded.info, Policy({
        layer.name: LayerPolicy(0.5 if layer.prunable else 1.0, 8, 8) for layer in loaded.info.layers}))
    print(f"policy: keep 50% of the channels of every prunable layer, 8-bit weights and activations "
          f"({len(loaded.info.layers)} layers)")
    result = compress_with_policy(loaded, policy, args.out, finetune_epochs=1.0)
    print(format_comparison(result))
    print(f"accuracy before the 1-epoch fine-tune: {result['compressed']['accuracy_before_finetune']:.4f}")
    print(f"wrote {args.out}/result.json and {args.out}/compressed.onnx")
    return 0
