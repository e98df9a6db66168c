"""``hwcompress profile`` and ``hwcompress lut {list,show,merge,kernels,calibrate,validate}``.

``services/cli/main.py`` calls :func:`register` with its subparsers; every handler takes the
argparse namespace and returns an exit code (0 ok, 2 bad input such as an unusable or
mismatched table). Run standalone with ``python -m services.cli.lut_cmds ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from latency_models.profile import DEFAULT_PROFILE, PROFILES, get_profile
from latency_models.table import LatencyTable, TableError

from automl.data import DEFAULT_DATASET


def tables_dir() -> Path:
    """Where tables built on first use are kept: ``$HWCOMPRESS_CACHE/tables``."""
    import os
    root = Path(os.environ.get("HWCOMPRESS_CACHE", Path.home() / ".cache" / "hwcompress"))
    return root / "tables"


def _input_shape(args: argparse.Namespace) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) and class count: from --input-shape, else from the dataset's shape."""
    if getattr(args, "input_shape", None):
        try:
            c, h, w = (int(v) for v in args.input_shape.replace("x", ",").split(","))
        except ValueError:
            raise ValueError(f"--input-shape {args.input_shape!r}: expected C,H,W such as 1,32,32") from None
        return (c, h, w), args.num_classes
    from automl.data import load_dataset
    data = load_dataset(args.data)
    return data.input_shape, data.num_classes


def _alias(p: argparse.ArgumentParser, old: str, new: str, dest: str) -> None:
    """``old`` still accepted (hidden from --help; says ``new`` replaces it)."""
    class Warn(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"hwcompress: {old} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, self.dest, values)
    p.add_argument(old, dest=dest, action=Warn, help=argparse.SUPPRESS)


def _json_flag(p: argparse.ArgumentParser, always: bool = False) -> None:
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON on stdout" + (" (it always does)" if always else ""))


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_profile(args: argparse.Namespace) -> int:
    from automl.profiling import profile_model
    from latency_models.profiler import table_stats

    try:
        profile = get_profile(args.hardware, args.threads)
        shape, num_classes = _input_shape(args)
        kernels_from = LatencyTable.load(args.kernels_from) if args.kernels_from else None
        table = profile_model(args.model, shape, profile, args.out, num_classes=num_classes,
                              quick=args.quick, points=args.grid_points, resume=not args.fresh,
                              progress=not args.no_progress, kernels_from=kernels_from)
    except (TableError, ValueError) as exc:
        return _err(str(exc))
    summary = {**table.summary(), **table_stats(table), "out": str(args.out)}
    print(json.dumps(summary, indent=1))
    return 0


def _table_files(paths: list[str]) -> list[Path]:
    if paths:
        out = []
        for p in map(Path, paths):
            out += sorted(p.glob("*.json")) if p.is_dir() else [p]
        return out
    d = tables_dir()
    return sorted(d.glob("*.json")) if d.is_dir() else []


def cmd_kernels(args: argparse.Namespace) -> int:
    from automl.profiling import profile_kernel_sample
    from latency_models.profiler import table_stats

    try:
        profile = get_profile(args.hardware, args.threads)
        if args.into_cache:
            from automl.search.problem import device_kernels_path

            args.out = device_kernels_path(profile)
            args.out.parent.mkdir(parents=True, exist_ok=True)
        table = profile_kernel_sample(profile, args.out, samples=args.samples, max_hw=args.max_hw,
                                      seed=args.seed, resume=not args.fresh,
                                      progress=not args.no_progress)
    except (TableError, ValueError) as exc:
        return _err(str(exc))
    print(json.dumps({**table.summary(), **table_stats(table), "out": str(args.out)}, indent=1))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    files = _table_files(args.paths)
    if args.json:
        rows = []
        for f in files:
            try:
                t = LatencyTable.load(f)
            except TableError as exc:
                rows.append({"file": str(f), "error": str(exc)})
                continue
            rows.append({"file": str(f), "metadata": t.metadata.to_dict(), "entries": len(t.entries)})
        print(json.dumps(rows, indent=1))
        return 0
    if not files:
        print(f"no latency tables (looked in {', '.join(args.paths) or tables_dir()})")
        return 0
    print(f"{'file':40s} {'device':14s} {'thr':>3s} {'entries':>7s} {'models':30s} created")
    for f in files:
        try:
            t = LatencyTable.load(f)
        except TableError as exc:
            print(f"{str(f):40s} UNUSABLE: {exc}")
            continue
        md = t.metadata
        print(f"{str(f):40s} {md.device:14s} {md.threads:>3d} {len(t.entries):>7d} "
              f"{','.join(sorted(md.input_shapes))[:30]:30s} {md.created}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        table = LatencyTable.load(args.table)
    except TableError as exc:
        return _err(str(exc))
    out = {"metadata": table.metadata.to_dict(), "summary": table.summary(),
           "remainders": [r.to_dict() for r in table.remainders]}
    if args.entries:
        out["entries"] = [e.to_dict() for e in sorted(table.entries.values(), key=lambda e: e.ident)
                          if args.key is None or args.key in e.key]
    print(json.dumps(out, indent=1))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    try:
        tables = [LatencyTable.load(p) for p in args.inputs]
        merged = tables[0]
        for t in tables[1:]:
            merged = merged.merge(t, prefer=args.prefer)
        merged.save(args.out)
    except TableError as exc:
        return _err(str(exc))
    if args.json:
        print(json.dumps({"out": str(args.out), "inputs": len(tables), "entries": len(merged.entries)}))
    else:
        print(f"merged {len(tables)} tables into {args.out}: {len(merged.entries)} entries")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from automl.profiling import recalibrate

    try:
        table = LatencyTable.load(args.table)
        models = args.model or sorted(table.metadata.input_shapes)
        out = {m: recalibrate(table, m, args.num_classes) for m in models}
        table.save(args.out or args.table)
    except (TableError, ValueError) as exc:
        return _err(str(exc))
    print(json.dumps({"table": str(args.out or args.table), "kernel_multipliers": out}, indent=1))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from automl.profiling import validate_model

    try:
        table = LatencyTable.load(args.table)
        shape = None
        num_classes = args.num_classes
        if args.input_shape or args.data:
            if args.data is None:
                args.data = DEFAULT_DATASET
            shape, num_classes = _input_shape(args)
        if isinstance(args.json, str):
            print("hwcompress: lut validate --json FILE is deprecated; use --out FILE", file=sys.stderr)
            args.out = args.out or args.json
        png = args.png or (str(Path(args.out).with_suffix(".png")) if args.out else None)
        report = validate_model(args.model, table, args.samples, args.seed, threads=args.threads,
                          input_shape=shape, num_classes=num_classes, json_out=args.out,
                          png_out=png, progress=not args.no_progress, passes=args.passes,
                          unseen=args.unseen, relative=args.relative)
    except (TableError, ValueError) as exc:
        return _err(str(exc))
    keys = ("n", "mape", "rmse_ms", "within_5pct", "within_10pct", "spearman",
            "predict_us_per_policy", "measure_ms_per_policy", "relative_to_reference",
            "reference_ms_table", "repeatability", "repeatability_raw", "absolute")
    print(json.dumps({k: report[k] for k in keys}, indent=1))
    return 0


def register(subparsers) -> None:
    """Add ``profile`` and ``lut`` to the hwcompress CLI."""
    p = subparsers.add_parser("profile", help="measure a model's per-layer latency table on this device")
    p.add_argument("--model", required=True, help="zoo name or package.module:factory")
    p.add_argument("--out", required=True, help="table file (JSON); an existing one is resumed")
    p.add_argument("--quick", action="store_true", help="coarse grid (3 points per axis), 2 widths")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--hardware", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                   help="hardware profile (bitfusion-sim: simulated bit-flexible accelerator)")
    _alias(p, "--device", "--hardware", "hardware")
    p.add_argument("--data", default=DEFAULT_DATASET, help="input shape from this dataset")
    _alias(p, "--dataset", "--data", "data")
    p.add_argument("--input-shape", default=None, help="C,H,W (overrides --data)")
    p.add_argument("--num-classes", type=int, default=10, help="with --input-shape")
    p.add_argument("--grid-points", type=int, default=None, help="points per channel axis (default 5)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming --out")
    p.add_argument("--kernels-from", default=None, metavar="TABLE",
                   help="time no layer: regress the model's kernels from TABLE's measured entries "
                        "(other models, a kernel sample: `lut kernels`, merged) and measure only "
                        "its whole-model remainder (minutes faster; see docs/lut-format.md)")
    p.add_argument("--no-progress", action="store_true")
    _json_flag(p, always=True)
    p.set_defaults(func=cmd_profile)

    lut = subparsers.add_parser("lut", help="list, inspect, merge and validate latency tables")
    sub = lut.add_subparsers(dest="lut_command", required=True)
    ls = sub.add_parser("list", help="tables in the given paths or in the cache's tables/")
    ls.add_argument("paths", nargs="*")
    _json_flag(ls)
    ls.set_defaults(func=cmd_list)
    sh = sub.add_parser("show", help="metadata, summary and remainders of a table")
    sh.add_argument("table")
    sh.add_argument("--entries", action="store_true", help="also print every entry")
    sh.add_argument("--key", default=None, help="only entries whose layer key contains this")
    _json_flag(sh, always=True)
    sh.set_defaults(func=cmd_show)
    mg = sub.add_parser("merge", help="merge tables taken under the same conditions")
    mg.add_argument("out")
    mg.add_argument("inputs", nargs="+")
    mg.add_argument("--prefer", choices=("tighter", "other"), default="tighter")
    _json_flag(mg)
    mg.set_defaults(func=cmd_merge)
    kn = sub.add_parser("kernels", help="measure a model-independent kernel sample (for nets never "
                                        "profiled: merge it into a table, then predict --unseen)")
    out = kn.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="table file (JSON); an existing one is resumed")
    out.add_argument("--into-cache", action="store_true",
                     help="write this device's kernel table into the cache: every later search "
                          "of a model without a table of its own prices its layers from it and "
                          "times only the model's whole-model remainder")
    kn.add_argument("--samples", type=int, default=300, help="kernels drawn (each timed at every precision)")
    kn.add_argument("--max-hw", type=int, default=224, help="largest input resolution drawn")
    kn.add_argument("--seed", type=int, default=0)
    kn.add_argument("--threads", type=int, default=1)
    kn.add_argument("--hardware", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    kn.add_argument("--fresh", action="store_true", help="start over instead of resuming --out")
    kn.add_argument("--no-progress", action="store_true")
    _json_flag(kn, always=True)
    kn.set_defaults(func=cmd_kernels)
    ca = sub.add_parser("calibrate", help="fit each model's per-kind kernel multipliers on the "
                                          "whole-model timings the table stored (nothing is timed; "
                                          "for tables built before them)")
    ca.add_argument("table")
    ca.add_argument("--model", action="append", default=None,
                    help="a model of the table (repeatable; default: every model it profiled)")
    ca.add_argument("--out", default=None, help="write here instead of over the table")
    ca.add_argument("--num-classes", type=int, default=10)
    _json_flag(ca, always=True)
    ca.set_defaults(func=cmd_calibrate)
    va = sub.add_parser("validate", help="predicted vs measured latency on random policies")
    va.add_argument("--model", required=True)
    va.add_argument("--table", required=True)
    va.add_argument("--samples", type=int, default=100)
    va.add_argument("--out", default=None, help="write the full report (JSON) here")
    # --json alone: the grammar's flag (the summary is JSON anyway); --json FILE: the old --out
    va.add_argument("--json", nargs="?", const=True, default=False, metavar="",
                    help="print the summary as JSON on stdout (it always does)")
    va.add_argument("--png", default=None, help="scatter plot (default: next to --out)")
    va.add_argument("--seed", type=int, default=0)
    va.add_argument("--unseen", action="store_true",
                    help="predict --model as a net the table never profiled: drop its remainders "
                         "and every entry at its layer shapes, predict from the table's other "
                         "models (works for your own package.module:factory with --input-shape)")
    va.add_argument("--passes", type=int, default=2,
                    help="times each policy is built and measured, interleaved (default 2): the "
                         "share of policies whose passes agree is the noise floor")
    va.add_argument("--relative", action="store_true",
                    help="time each policy beside the unpruned model and scale it to that "
                         "model's latency when the table was built, so a machine's drift since "
                         "then cancels (default: each policy timed alone)")
    va.add_argument("--threads", type=int, default=None, help="default: the table's")
    va.add_argument("--data", default=None, help="default: the input size the table was profiled at")
    _alias(va, "--dataset", "--data", "data")
    va.add_argument("--input-shape", default=None)
    va.add_argument("--num-classes", type=int, default=10)
    va.add_argument("--no-progress", action="store_true")
    va.set_defaults(func=cmd_validate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hwcompress")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
