"""Do two builds of one table agree, entry by entry? And what does a disagreement cost? (issue 14)

    python -m bench.table_repeatability [--model mobilenetv2_050] [--input-shape 1,32,32]
                                        [--builds 2] [--out-dir D] [--tables T ...]
                                        [--reports R ...]

Builds ``--builds`` tables of ``--model`` (``hwcompress profile``'s ``automl.profiling.
profile_model``, the protocol of the day) under ``--out-dir`` (default
``bench/results/table-repeatability``; a table already there is resumed, not rebuilt), adds any
``--tables`` given (e.g. tables built under an earlier protocol), and prints for every pair the
share of entries within ±5% / ±10% of each other and how many are more than 30% apart. With
``--reports`` (``lut validate`` reports of the same model: measured policies), each table also
predicts every report's policies as a user would use it (remainders as stored): ±10% / ±5% /
Spearman. Nothing but the builds is timed.

Why: on 2026-12-06 two MobileNetV2-0.5 @32 tables built the same afternoon, entries timed one at
a time, agreed within ±5% on 94% of entries while 6% were 30–250% apart, and the one with more
outliers predicted the same measured policies at 68% within ±5% where the other read 89%.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "table-repeatability"


def entry_latencies(path: Path) -> dict[tuple, float]:
    """(key, in, out, precision) → the entry's measured figure before the overhead is taken off."""
    return {(e["key"], e["in_channels"], e["out_channels"], e["precision"]): e["raw_median_ms"]
            for e in json.loads(path.read_text())["entries"]}


def agreement(a: dict[tuple, float], b: dict[tuple, float]) -> dict[str, float]:
    """Share of the common entries within ±5% / ±10% of each other, and the count > 30% apart."""
    ratios = [a[k] / b[k] for k in a.keys() & b.keys()]
    if not ratios:
        raise ValueError("the two tables share no entry")
    return {"entries": len(ratios),
            "within_5pct": sum(abs(r - 1) <= 0.05 for r in ratios) / len(ratios),
            "within_10pct": sum(abs(r - 1) <= 0.10 for r in ratios) / len(ratios),
            "off_30pct": sum(abs(r - 1) > 0.30 for r in ratios)}


def build(model: str, shape: tuple[int, ...], out: Path) -> None:
    from automl.profiling import profile_model
    from latency_models.profile import get_profile

    profile_model(model, shape, get_profile("cpu-ort"), out, progress=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenetv2_050")
    ap.add_argument("--input-shape", default="1,32,32")
    ap.add_argument("--builds", type=int, default=2)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--tables", type=Path, nargs="*", default=[])
    ap.add_argument("--reports", type=Path, nargs="*", default=[])
    args = ap.parse_args(argv)
    shape = tuple(int(x) for x in args.input_shape.split(","))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{args.model}-{'x'.join(map(str, shape))}"
    built = [args.out_dir / f"{tag}-build{i}.json" for i in range(1, args.builds + 1)]
    for path in built:
        if not (path.exists() and json.loads(path.read_text()).get("remainders")):
            build(args.model, shape, path)
    tables = built + list(args.tables)
    print("| table A | table B | entries | within ±5% | within ±10% | > 30% apart |")
    print("|---|---|---|---|---|---|")
    for pa, pb in itertools.combinations(tables, 2):
        m = agreement(entry_latencies(pa), entry_latencies(pb))
        print(f"| {pa.name} | {pb.name} | {m['entries']} | {m['within_5pct']:.1%} | "
              f"{m['within_10pct']:.1%} | {m['off_30pct']} |", flush=True)
    if args.reports:
        from bench.depthwise_series import predicted_and_measured
        from latency_models.validate import fidelity_metrics

        print("\n| table | policies (report) | ±10% / ±5% / Spearman |")
        print("|---|---|---|")
        for table, report in itertools.product(tables, args.reports):
            samples = json.loads(report.read_text())["samples"]
            m = fidelity_metrics(*predicted_and_measured(args.model, shape, table, samples, False))
            print(f"| {table.name} | {report.name} | {m['within_10pct']:.0%} / "
                  f"{m['within_5pct']:.0%} / {m['spearman']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
