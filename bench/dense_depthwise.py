"""How much of MobileNetV2-0.5 @32's int8 error is its depthwise grid? (issue 14; a lead)

    python -m bench.dense_depthwise

Takes the sixteenth session's default table of MobileNetV2-0.5 @1x32x32 and the 100 policies it
was validated on (``bench/results/grid-align-amd-epyc-2-cores/``, AMD EPYC), times every
depthwise layer alone at *every* channel count a policy can keep (int8 and fp32, the profile's
``layer_runner``, as a table entry is timed; only the entries missing are timed, into
``...-dense-depthwise.json`` beside it, so a re-run resumes), and predicts the stored timings
with both tables, remainder and per-kind multipliers re-fitted on the stored whole-model
timings (``automl.profiling.recalibrate``), by precision mode. Why: ORT's int8 depthwise kernel
on that CPU is fast at multiples of 16 channels and slower at odd multiples of 8
(``bench.channel_sweep``), which a 5-point grid interpolates across.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "grid-align-amd-epyc-2-cores"
BASE = RESULTS / "mobilenetv2_050-1x32x32-align1.json"
REPORT = RESULTS / "mobilenetv2_050-1x32x32-report.json"
DENSE = RESULTS / "mobilenetv2_050-1x32x32-dense-depthwise.json"


def densify(info, out: Path) -> int:
    """Time the depthwise entries ``out`` lacks; returns how many."""
    from latency_models.grid import channel_choices, plan_grid
    from latency_models.profile import get_profile
    from latency_models.table import LatencyTable, TableEntry

    profile = get_profile("cpu-ort")
    table = LatencyTable.load(out if out.exists() else BASE)
    table.check_compatible(profile.compat_request())
    todo = [(plan, c, precision)
            for plan in plan_grid(info, profile.channel_step) if plan.layer.op == "depthwise"
            for c in channel_choices(max(plan.out_values), profile.channel_step)
            for precision in profile.precisions if (c, c) not in table.grid(plan.key, precision)]
    for n, (plan, c, precision) in enumerate(todo, 1):
        stats = profile.backend.layer_runner(plan.layer, c, c, precision).time()
        table.add(TableEntry(key=plan.key, in_channels=c, out_channels=c, precision=precision,
                             latency_ms=max(1e-5, stats.uncontended_ms - table.overhead_ms),
                             iqr_ms=stats.iqr_ms, raw_median_ms=stats.uncontended_ms,
                             repeats=stats.repeats, latency_source="measured"))
        if n % 20 == 0 or n == len(todo):
            table.save(out)
    return len(todo)


def fidelity(table_path: Path, info, samples: list[dict]) -> str:
    from latency_models.validate import fidelity_metrics

    from .depthwise_series import predicted_and_measured

    predicted, measured = predicted_and_measured(info.model_name, info.input_shape, table_path,
                                                 samples, refit=True)
    m = fidelity_metrics(predicted, measured)
    cells = [f"{len(json.loads(table_path.read_text())['entries'])}", f"{m['within_10pct']:.0%}",
             f"{m['within_5pct']:.0%}", f"{m['spearman']:.3f}", f"{m['mape']:.1%}"]
    for mode in ("fp32", "int8", "mixed"):
        idx = [i for i, s in enumerate(samples) if s["mode"] == mode]
        mm = fidelity_metrics([predicted[i] for i in idx], [measured[i] for i in idx])
        cells.append(f"{mm['within_10pct']:.0%} / {mm['within_5pct']:.0%}")
    return " | ".join(cells)


def main() -> None:
    from automl.profiling import load_model_and_info

    info = load_model_and_info("mobilenetv2_050", (1, 32, 32), 10)[1]
    timed = densify(info, DENSE)
    samples = json.loads(REPORT.read_text())["samples"]
    print(f"(timed {timed} depthwise entries)")
    print("| table | entries | ±10% | ±5% | Spearman | MAPE | fp32 ±10/±5 | int8 ±10/±5 | mixed ±10/±5 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| default (5 points) | {fidelity(BASE, info, samples)} |")
    print(f"| + every depthwise channel count | {fidelity(DENSE, info, samples)} |")


if __name__ == "__main__":
    main()
