"""One layer's kernel time at every channel count a policy can keep, int8 and fp32 (issue 14).

    python -m bench.channel_sweep [--model mobilenetv2_050] [--input-shape 1x32x32]
                                  [--layers features.3.conv.3,features.3.conv.0,features.8.conv.0]

Why: a table holds each layer at a 5-point grid and interpolates between the points
(:mod:`latency_models.predictor`); that is right only where a kernel's time is smooth in its
channels. This times each named layer alone, exactly as a table entry is timed (the profile's
``layer_runner``: BN folded, int8 through the deployed QDQ export), at every out-channel choice
of this CPU's channel step (input channels full; a depthwise layer's in = out), and marks which
counts the default grid holds. Writes ``bench/results/channel_sweep-<model>-<hardware>.json``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from automl.profiling import load_model_and_info
from latency_models.grid import DEFAULT_POINTS, channel_choices, plan_grid
from latency_models.profile import get_profile
from latency_models.table import layer_key

RESULTS = Path(__file__).parent / "results"


def sweep(model: str, shape: list[int], layer_names: list[str]) -> list[dict]:
    profile = get_profile("cpu-ort")
    _, info = load_model_and_info(model, shape, 10)
    plans = {p.key: p for p in plan_grid(info, profile.channel_step, DEFAULT_POINTS)}
    by_name = {layer.name: layer for layer in info.layers}
    missing = [n for n in layer_names if n not in by_name]
    if missing:
        raise SystemExit(f"--layers: {missing} are not layers of {model}")
    rows = []
    for name in layer_names:
        layer = by_name[name]
        grid = plans[layer_key(layer)].out_values
        print(f"{name} ({layer.op} {layer.in_channels}->{layer.out_channels} at {layer.in_hw}); "
              f"grid {grid}", flush=True)
        for cout in channel_choices(layer.out_channels, profile.channel_step):
            cin = cout if layer.op == "depthwise" else layer.in_channels
            ms = {prec: profile.backend.layer_runner(layer, cin, cout, prec).time().uncontended_ms
                  for prec in ("int8", "fp32")}
            print(f"  {cout:4d}  int8 {ms['int8']:.4f} ms  fp32 {ms['fp32']:.4f} ms"
                  f"{'  (on the grid)' if cout in grid else ''}", flush=True)
            rows.append({"layer": name, "op": layer.op, "in_channels": cin, "out_channels": cout,
                         "int8_ms": ms["int8"], "fp32_ms": ms["fp32"], "on_grid": cout in grid})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenetv2_050")
    ap.add_argument("--input-shape", default="1x32x32")
    ap.add_argument("--layers", default="features.3.conv.3,features.3.conv.0,features.8.conv.0")
    args = ap.parse_args(argv)
    shape = [int(v) for v in args.input_shape.split("x")]
    rows = sweep(args.model, shape, args.layers.split(","))
    hardware = re.sub(r"[^a-z0-9]+", "-", get_profile("cpu-ort").hardware.lower()).strip("-")
    out = RESULTS / f"channel_sweep-{args.model}-{hardware}.json"
    out.write_text(json.dumps({"model": args.model, "input_shape": shape,
                               "hardware": get_profile("cpu-ort").hardware, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
