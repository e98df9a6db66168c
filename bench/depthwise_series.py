"""Depthwise kernels interpolated within their channel series, against one line through all
grid points, on stored timings (issue 14; nothing is timed, any CPU).

    python -m bench.depthwise_series

For each stored cell (a table and a ``lut validate`` report of policies measured against it,
AMD EPYC, channel step 8) the report's measured policies are predicted by the table with the
predictor of the day (``latency_models.predictor.Grid`` interpolates a depthwise count between
grid points of its own series, ``latency_models.grid.same_residue``) and with the one before it
(all grid points: ``Grid._series`` replaced here by one that returns them all). Each row three
ways: the old predictor (remainder and per-kind multipliers re-fitted on the table's stored
whole-model timings, ``automl.profiling.recalibrate``, which reproduces the reported figures),
the series predictor with the remainders as the table stored them (a table built before the
change, used as is), and the series predictor re-fitted (a table built after it, or after
``hwcompress lut calibrate``).
"""

from __future__ import annotations

import json
from pathlib import Path

R = Path(__file__).parent / "results"
CELLS = [
    ("mobilenetv2_050", (1, 32, 32), R / "grid-align-amd-epyc-2-cores/mobilenetv2_050-1x32x32-align1.json",
     R / "grid-align-amd-epyc-2-cores/mobilenetv2_050-1x32x32-report.json"),
    ("mobilenetv2_100", (3, 224, 224), R / "grid-align-amd-epyc-2-cores/mobilenetv2_100-3x224x224-align1.json",
     R / "grid-align-amd-epyc-2-cores/mobilenetv2_100-3x224x224-report.json"),
    ("mobilenetv2_100", (3, 224, 224), R / "grid-align-amd-epyc-2-cores/mobilenetv2_100-3x224x224-align1.json",
     R / "noise-floor-budget/mobilenetv2_100-seed3-scale3.json"),
    ("mobilenetv2_100", (3, 224, 224), R / "grid-align-amd-epyc-2-cores/mobilenetv2_100-3x224x224-align1.json",
     R / "noise-floor-budget/mobilenetv2_100-seed4-scale3.json"),
    ("mobilenetv2_100", (3, 224, 224), R / "noise-floor-budget/mobilenetv2_100-3x224x224-rule1500-table.json",
     R / "noise-floor-budget/mobilenetv2_100-seed6-rule1500.json"),
    ("mobilenetv2_050", (1, 32, 32), R / "depthwise-series-amd/mobilenetv2_050-1x32x32-table.json",
     R / "depthwise-series-amd/mobilenetv2_050-1x32x32-seed7-report.json"),
]


def predicted_and_measured(model: str, shape: tuple[int, ...], table_path: Path,
                           samples: list[dict], refit: bool) -> tuple[list[float], list[float]]:
    """Each stored policy predicted by the table (its remainder and per-kind multipliers re-fitted
    on the table's stored whole-model timings when ``refit``) and its fastest measured pass."""
    from automl.core import Policy
    from automl.profiling import load_model_and_info, recalibrate
    from latency_models.predictor import Predictor
    from latency_models.table import LatencyTable

    info = load_model_and_info(model, shape, 10)[1]
    table = LatencyTable.load(table_path)
    if refit:
        recalibrate(table, model, info=info)
    predictor = Predictor(table, warn=False)
    return ([predictor.predict(info, Policy.from_dict(s["policy"]))[0] for s in samples],
            [min(s["measured_ms_raw_passes"]) for s in samples])


def fidelity(model: str, shape: tuple[int, ...], table_path: Path, report_path: Path,
             refit: bool) -> str:
    from latency_models.validate import fidelity_metrics

    samples = json.loads(report_path.read_text())["samples"]
    m = fidelity_metrics(*predicted_and_measured(model, shape, table_path, samples, refit))
    return f"{m['within_10pct']:.0%} / {m['within_5pct']:.0%} / {m['spearman']:.3f}"


def main() -> None:
    from latency_models import predictor

    series = predictor.Grid._series

    def all_points(self, cout):   # the predictor before: one line through every grid point
        return self.out_values, self.latency[0], self.energy[0]

    print("| policies (report) | table | old: ±10% / ±5% / Spearman | series, stored remainders | series, re-fitted |")
    print("|---|---|---|---|---|")
    for model, shape, table, report in CELLS:
        predictor.Grid._series = all_points
        try:
            old = fidelity(model, shape, table, report, refit=True)
        finally:
            predictor.Grid._series = series
        print(f"| {report.name} | {table.name} | {old} | {fidelity(model, shape, table, report, False)} | "
              f"{fidelity(model, shape, table, report, True)} |", flush=True)


if __name__ == "__main__":
    main()
