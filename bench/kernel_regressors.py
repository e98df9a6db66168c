"""Which kernel regressor prices a held-out net best? (issue 14, leave-one-family-out)

``profile --kernels-from`` prices a net it never timed with :class:`latency_models.unseen.
KernelRegressor` (non-negative linear in the kernel's work, per op and kernel size). nn-Meter
uses a random forest per kernel type instead. This bench re-prices each cached hold-out table
(bench/results/tables/holdout-*.json, written by ``bench.lut_fidelity --holdout-calibrated``)
with other regressors fitted on the same training set (the other families' tables and the
kernel sample), re-fits its remainder on the whole-model timings the table stored (nothing is
timed), and predicts the cell's stored validation policies, with and without the per-kind
calibration (:mod:`latency_models.kernel_calibration`):

- ``linear``: the product's regressor;
- ``linear×boosted``: linear, times a gradient-boosted correction of its log residual;
- ``boosted``: a gradient-boosted tree on log latency;
- ``forest``: a random forest on log latency (nn-Meter's choice).

Features of the trees: op, precision, kernel, stride, log2 of input size, channels and MACs,
BN and activation. ``python -m bench.kernel_regressors`` writes bench/results/kernel_regressors.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("linear", "linear×boosted", "boosted", "forest")
ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 2}


def features(key: str, precision: str, cin: int, cout: int, ops: dict[str, int]) -> list[float]:
    from latency_models.unseen import KernelShape

    shape = KernelShape.parse(key)
    fields = dict(p.split("=", 1) for p in key.split("|")[1:] if "=" in p)
    macs = shape.features(cin, cout)[1]
    return [ops.setdefault(shape.op, len(ops)), float(precision == "int8"), shape.kernel, shape.stride,
            np.log2(shape.in_hw[0]), np.log2(cin), np.log2(cout), np.log2(max(macs, 1e-9)),
            int(fields.get("bn", 0)), ACTIVATIONS.get(fields.get("act", "none"), 3)]


def fit_regressor(kind: str, train: "Any") -> Callable[[str, str, int, int], float]:
    """A (key, precision, cin, cout) → latency_ms function fitted on ``train``'s measured entries."""
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    from latency_models.unseen import KernelRegressor

    linear = KernelRegressor.fit(train)
    lin = lambda k, p, i, o: linear.predict(k, p, i, o)[0]   # noqa: E731
    if kind == "linear":
        return lin
    ops: dict[str, int] = {}
    rows = [e for e in train.entries.values() if e.latency_ms > 0 and e.latency_source != "regressed"]
    x = np.array([features(e.key, e.precision, e.in_channels, e.out_channels, ops) for e in rows])
    y = np.log2(np.array([max(e.latency_ms, 0.02) for e in rows]))
    if kind == "linear×boosted":
        base = np.log2(np.array([max(lin(e.key, e.precision, e.in_channels, e.out_channels), 0.02)
                                 for e in rows]))
        model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, min_samples_leaf=10,
                                              categorical_features=[0], random_state=0)
        model.fit(np.hstack([x, base[:, None]]), y - base)

        def predict(k: str, p: str, i: int, o: int) -> float:
            b = np.log2(max(lin(k, p, i, o), 0.02))
            return float(2 ** (b + model.predict(np.array([features(k, p, i, o, ops) + [b]]))[0]))
        return predict
    if kind == "boosted":
        model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, min_samples_leaf=10,
                                              categorical_features=[0], random_state=0).fit(x, y)
    else:
        model = RandomForestRegressor(200, min_samples_leaf=3, n_jobs=1, random_state=0).fit(x, y)
    return lambda k, p, i, o: float(2 ** model.predict(np.array([features(k, p, i, o, ops)]))[0])


def run_cell(cid: str, cell: dict[str, Any], cells: dict[str, Any], kernels: Path) -> dict[str, Any]:
    from automl.core import Policy
    from automl.profiling import load_model_and_info, store_remainders, stored_timings
    from bench.lut_fidelity import merged_table, table_file
    from latency_models.predictor import Predictor
    from latency_models.table import LatencyTable, RemainderEntry
    from latency_models.unseen import table_without
    from latency_models.validate import fidelity_metrics, table_profile

    shape = tuple(cell["input_shape"])
    info = load_model_and_info(cell["model"], shape, 10)[1]
    tables = {o: LatencyTable.load(table_file(c)) for o, c in cells.items() if table_file(c).is_file()}
    others = [o for o in tables if cells[o]["family"] != cell["family"]]
    train = table_without(merged_table([tables[o] for o in others], kernels), [info])
    hold = LatencyTable.load(RESULTS / "tables" / f"holdout-{cid.replace('@', '_')}.json")
    profile = table_profile(hold)
    hold.metadata.kernel_multipliers.pop(info.model_name, None)
    timed = stored_timings(hold, info, profile)
    samples = json.loads((RESULTS / f"lut_fidelity_{cid.replace('@', '_')}.json").read_text())["samples"]
    measured = [min(s["measured_ms_raw_passes"]) if "measured_ms_raw_passes" in s else s["measured_ms"]
                for s in samples]
    out: dict[str, Any] = {}
    for kind in KINDS:
        price = fit_regressor(kind, train)
        priced = [replace(e, latency_ms=max(1e-5, price(e.key, e.precision, e.in_channels, e.out_channels)))
                  for e in hold.entries.values()]
        for calibrated in (False, True):
            t = LatencyTable(replace(hold.metadata, kernel_multipliers={}), priced, [],
                             hold.overhead_ms, hold.overhead_source)
            if calibrated:
                store_remainders(t, info, profile, timed)
            else:
                pred = Predictor(t, profile, warn=False)
                rows = []
                for (policy, whole_ms), r in zip(timed, hold.remainders_for(info.model_name, shape)):
                    k, _, k8 = pred.kernel_sums(info, policy)
                    rows.append(RemainderEntry(**{**r.to_dict(), "kernels_ms": k, "int8_kernels_ms": k8,
                                                  "remainder_ms": whole_ms - t.overhead_ms - k}))
                t.set_remainders(info.model_name, shape, rows)
            pred = Predictor(t, profile, warn=False)
            m = fidelity_metrics([pred.predict(info, Policy.from_dict(s["policy"]))[0] for s in samples],
                                 measured)
            out[f"{kind}{' + calibration' if calibrated else ''}"] = {
                k: m[k] for k in ("within_10pct", "within_5pct", "spearman")}
        print(cid, kind, json.dumps({k: v["within_10pct"] for k, v in out.items() if k.startswith(kind)}),
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernels", type=Path, default=RESULTS / "tables" / "kernel-sample-224.json")
    ap.add_argument("--table", action="store_true", help="print the markdown table and exit")
    args = ap.parse_args(argv)
    path = RESULTS / "kernel_regressors.json"
    if not args.table:
        cells = json.loads((RESULTS / "lut_fidelity.json").read_text())["cells"]
        result = {cid: run_cell(cid, cell, cells, args.kernels) for cid, cell in cells.items()
                  if (RESULTS / "tables" / f"holdout-{cid.replace('@', '_')}.json").is_file()}
        path.write_text(json.dumps(result, indent=1))
    result = json.loads(path.read_text())
    methods = list(next(iter(result.values())))
    print("| held-out cell (unscaled timings) | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for cid, row in result.items():
        print(f"| {cid} | " + " | ".join(f"{row[m]['within_10pct']:.0%} / {row[m]['within_5pct']:.0%}"
                                         for m in methods) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
