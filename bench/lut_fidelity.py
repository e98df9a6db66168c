"""LUT fidelity benchmark (issues 3 and 14): predicted vs measured latency of random compressed
models, read against the noise floor, at 32×32 and at deployment scale, and on unseen nets.

    python -m bench.lut_fidelity [--quick] [--models resnet20@1x32x32,mobilenetv2_100@3x224x224]
                                 [--samples N] [--passes 2] [--holdout-only] [--table-only]

For each model at its input shape, on this CPU with ONNX Runtime, 1 intra-op thread, batch 1:
build the table (``hwcompress profile``: cached under bench/results/tables/, resumed, its build
time recorded the first time), then ``hwcompress lut validate`` (every policy measured ``passes``
times, interleaved: the repeatability is the ceiling prediction can reach). Then
**leave-one-family-out**: each model's measured policies predicted again from a table made of
the *other* families only (its layer shapes and remainders never seen: ``latency_models.unseen``).
Writes bench/results/lut_fidelity.json (one cell per model, resumable: a model already in it is
not re-measured; ``--force`` re-runs) and one scatter PNG per model; ``--table`` prints the rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from automl.core import ModelInfo
    from latency_models.table import LatencyTable

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "lut_fidelity.json"
DEFAULT_MODELS = ("resnet20@1x32x32,mobilenetv2_050@1x32x32,vgg@1x32x32,"
                  "mobilenetv2_100@3x224x224,resnet18@3x224x224")
FAMILIES = {"resnet": ("resnet20", "resnet56", "resnet18"), "vgg": ("vgg",),
            "mobilenet": ("mobilenetv2_050", "mobilenetv2", "mobilenetv2_100"), "lenet": ("lenet5",)}
SUMMARY_KEYS = ("n", "mape", "within_5pct", "within_10pct", "spearman", "predict_us_per_policy",
                "measure_ms_per_policy")


def family_of(model: str) -> str:
    return next((f for f, names in FAMILIES.items() if model in names), model)


def parse_cell(spec: str) -> tuple[str, tuple[int, ...]]:
    name, _, shape = spec.partition("@")
    return name, tuple(int(v) for v in (shape or "1x32x32").split("x"))


def cell_id(name: str, shape: tuple[int, ...]) -> str:
    return f"{name}@{'x'.join(map(str, shape))}"


def table_path(name: str, shape: tuple[int, ...], quick: bool) -> Path:
    return RESULTS / "tables" / f"{name}-{'x'.join(map(str, shape))}-{'quick' if quick else 'full'}.json"


def table_file(cell: dict[str, Any]) -> Path:
    """A cell's table under this checkout's bench/results/tables/ (cells record the path they
    were built at, which may be another worktree's)."""
    return RESULTS / "tables" / Path(cell["table"]).name


def this_hardware() -> str:
    from latency_models.profile import get_profile
    return get_profile("cpu-ort").hardware


def load_results() -> dict[str, Any]:
    """The results of this machine's CPU. Cells measured on another CPU (this VM is not always
    the same host) are refused, not mixed in: a leave-one-family-out across two CPUs' tables
    would predict one machine from another's."""
    hardware = this_hardware()
    if OUT.is_file():
        data = json.loads(OUT.read_text())
        if data.get("schema") == 2:
            if data.setdefault("hardware", hardware) != hardware:
                raise SystemExit(f"{OUT}: measured on {data['hardware']!r}, this machine is "
                                 f"{hardware!r}; move it and bench/results/tables/ to "
                                 "bench/results/archive/ to start this CPU's cells")
            return data
    return {"schema": 2, "threads": 1, "batch": 1, "hardware": hardware, "cells": {}}


def save_results(data: dict[str, Any]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1))


def measure_cell(name: str, shape: tuple[int, ...], args: argparse.Namespace) -> dict[str, Any]:
    from automl.profiling import profile_model, validate_model
    from latency_models.profile import get_profile

    profile = get_profile("cpu-ort", args.threads)
    path = table_path(name, shape, args.quick)
    fresh = not path.is_file()
    t0 = time.perf_counter()
    table = profile_model(name, shape, profile, path, quick=args.quick, num_classes=10)
    build_s = time.perf_counter() - t0
    cell: dict[str, Any] = {"model": name, "input_shape": list(shape), "family": family_of(name),
                            "table": str(path), "table_entries": len(table.entries),
                            "table_build_s": build_s if fresh else None}
    if args.table_only:
        return cell
    tag = cell_id(name, shape).replace("@", "_")
    t0 = time.perf_counter()
    rep = validate_model(name, table, args.samples, seed=0, input_shape=shape,
                         json_out=RESULTS / f"lut_fidelity_{tag}.json",
                         png_out=RESULTS / f"lut_fidelity_{tag}.png", passes=args.passes,
                         relative=args.relative)
    cell.update({k: v for k, v in rep.items() if k != "samples"}, validate_s=time.perf_counter() - t0)
    return cell


def refit_remainders(data: dict[str, Any], cid: str, threads: int, relative: bool = False) -> None:
    """Re-measure a cell's remainders with the current procedure (its layer entries kept) and
    predict its already-measured policies again: the measured side and the noise floor stay,
    except that a cell measured ``--relative`` is compared by its unscaled timings unless
    ``relative`` (its scaled figures kept under ``"relative"``)."""
    from automl.profiling import load_model_and_info, profile_model
    from latency_models.profile import get_profile
    from latency_models.table import LatencyTable

    cell = data["cells"][cid]
    path = table_file(cell)
    table = LatencyTable.load(path)
    table.remainders = [r for r in table.remainders if r.model != cell["model"]]
    table.save(path)
    shape = tuple(cell["input_shape"])
    table = profile_model(cell["model"], shape, get_profile("cpu-ort", threads), path)
    info = load_model_and_info(cell["model"], shape, 10)[1]
    samples_path = RESULTS / f"lut_fidelity_{cid.replace('@', '_')}.json"
    report = json.loads(samples_path.read_text())
    if report.get("relative_to_reference") and not relative:
        report["relative"] = {k: report[k] for k in ("within_5pct", "within_10pct", "mape", "spearman",
                                                      "repeatability")}
        for smp in report["samples"]:
            smp["measured_ms_passes"] = smp["measured_ms_raw_passes"]
            smp["measured_ms"] = min(smp["measured_ms_raw_passes"])
        report["repeatability"] = report["repeatability_raw"]
        report["relative_to_reference"] = False
    report["remainders_refit"] = True
    repredict_report(cell, samples_path, report, table, info, "remainders refit")


def repredict_report(cell: dict[str, Any], samples_path: Path, report: dict[str, Any],
                     table: "LatencyTable", info: "ModelInfo", why: str) -> None:
    """Predict a cell's measured policies again from ``table``; its metrics, scatter and the
    results row follow (the measured side is kept as it is)."""
    from automl.core import Policy
    from latency_models.predictor import Predictor
    from latency_models.validate import fidelity_metrics, metrics_by_mode

    pred = Predictor(table, warn=False)
    for smp in report["samples"]:
        smp["predicted_ms"] = pred.predict(info, Policy.from_dict(smp["policy"]))[0]
    pm = [smp["predicted_ms"] for smp in report["samples"]]
    mm = [smp["measured_ms"] for smp in report["samples"]]
    report.update(fidelity_metrics(pm, mm))
    if all("measured_ms_raw_passes" in smp for smp in report["samples"]):
        report["absolute"] = fidelity_metrics(pm, [min(smp["measured_ms_raw_passes"])
                                                   for smp in report["samples"]])
    report["by_mode"] = metrics_by_mode(report["samples"])
    samples_path.write_text(json.dumps(report, indent=1))
    png = Path(report.get("png") or samples_path.with_suffix(".png"))
    if png.is_file():   # the scatter re-drawn with the new predictions
        from latency_models.plots import scatter_png
        scatter_png(pm, mm, png, f"{cell['model']} {list(info.input_shape)} ({why}): "
                    f"{report['within_10pct']:.0%} within ±10%, Spearman {report['spearman']:.3f}",
                    [smp["mode"] for smp in report["samples"]])
    cell.update({k: v for k, v in report.items() if k != "samples"})


def calibrate_stored(data: dict[str, Any], cid: str) -> None:
    """``--calibrate-stored``: a cell's own table gets its kernels calibrated per kind
    (``latency_models.kernel_calibration``) on the whole-model timings it stored, its remainder
    re-fitted on them, and its measured policies predicted again; nothing is timed."""
    from automl.profiling import load_model_and_info, recalibrate
    from latency_models.table import LatencyTable

    cell = data["cells"][cid]
    path = table_file(cell)
    table = LatencyTable.load(path)
    info = load_model_and_info(cell["model"], tuple(cell["input_shape"]), 10)[1]
    recalibrate(table, cell["model"])
    table.save(path)
    samples_path = RESULTS / f"lut_fidelity_{cid.replace('@', '_')}.json"
    report = json.loads(samples_path.read_text())
    report["kernel_multipliers"] = table.metadata.kernel_multipliers.get(info.model_name)
    repredict_report(cell, samples_path, report, table, info, "kernels calibrated")


HOLDOUT_TABLE_FACTS = ("trained_on", "table", "build_s", "remainder_points")
"""What a cell's ``holdout_calibrated`` record says of its cached hold-out table, not of its policies."""


def import_cell(name: str, shape: tuple[int, ...], table: Path, report: Path,
                build_s: float | None, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cell from a table built by ``hwcompress profile`` and a report written by ``hwcompress
    lut validate --out`` (the same ``profile_model`` / ``validate_model`` :func:`measure_cell`
    runs, run by hand or by another bench), copied under the results so the hold-out and
    ``--table`` read it like a measured cell; nothing is timed. Refused when the report is of
    another model, shape or CPU.

    ``previous``: the cell this one replaces. Its hold-out figures were of the policies it had,
    so they go; what describes its cached hold-out *table* (trained on, build time, remainder
    points) stays, so ``--holdout-calibrated`` re-predicts the new policies on that table and
    still reports what building it cost."""
    import shutil

    rep = json.loads(report.read_text())
    if rep.get("model") != name or list(rep.get("input_shape", [])) != list(shape):
        raise SystemExit(f"{report}: a report of {rep.get('model')}@{rep.get('input_shape')}, "
                         f"not {cell_id(name, shape)}")
    if rep.get("hardware") != this_hardware():
        raise SystemExit(f"{report}: measured on {rep.get('hardware')!r}, not this CPU")
    path = table_path(name, shape, False)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (path.is_file() and path.samefile(table)):   # re-importing a cell's table: new policies
        shutil.copyfile(table, path)
    tag = cell_id(name, shape).replace("@", "_")
    shutil.copyfile(report, RESULTS / f"lut_fidelity_{tag}.json")
    if report.with_suffix(".png").is_file():
        shutil.copyfile(report.with_suffix(".png"), RESULTS / f"lut_fidelity_{tag}.png")
    entries = len(json.loads(path.read_text())["entries"])
    cell = {"model": name, "input_shape": list(shape), "family": family_of(name),
            "table": str(path), "table_entries": entries, "table_build_s": build_s,
            **{k: v for k, v in rep.items() if k != "samples"}, "validate_s": None,
            "imported_from": {"table": str(table), "report": str(report)}}
    held_out_table = (previous or {}).get("holdout_calibrated")
    if held_out_table:
        cell["holdout_calibrated"] = {k: held_out_table[k] for k in HOLDOUT_TABLE_FACTS
                                      if k in held_out_table}
    return cell


def merged_table(tables: "list[LatencyTable]", kernels: Path | None = None) -> "LatencyTable":
    """One training table: ``tables`` merged, with the kernel sample ``kernels`` if given."""
    from latency_models.table import LatencyTable

    out = tables[0]
    for t in tables[1:]:
        out = out.merge(t)
    return out.merge(LatencyTable.load(kernels)) if kernels is not None else out


def holdout(data: dict[str, Any], quick: bool, kernels: Path | None = None,
            remainder: str = "none") -> None:
    """Leave-one-family-out, re-predicting each cell's measured policies (no new measurement).
    ``kernels``: a kernel sample (``hwcompress lut kernels``) merged into every training table,
    recorded as ``holdout_kernels``; without it the figures are recorded as ``holdout``."""
    import numpy as np

    from automl.core import Policy
    from automl.profiling import load_model_and_info
    from latency_models.predictor import Predictor
    from latency_models.table import LatencyTable
    from latency_models.unseen import UnseenModel, table_without
    from latency_models.validate import fidelity_metrics, metrics_by_mode, table_profile

    cells = data["cells"]
    tables = {cid: LatencyTable.load(table_file(c)) for cid, c in cells.items() if table_file(c).is_file()}
    infos = {cid: load_model_and_info(c["model"], c["input_shape"], 10)[1] for cid, c in cells.items()}
    for cid, cell in cells.items():
        samples_path = RESULTS / f"lut_fidelity_{cid.replace('@', '_')}.json"
        if not samples_path.is_file() or cid not in tables:
            continue
        others = [o for o in tables if cells[o]["family"] != cell["family"]]
        if not others:
            continue
        info = infos[cid]
        train = table_without(merged_table([tables[o] for o in others], kernels), [info])
        fallback = UnseenModel.fit(train, {cells[o]["model"]: infos[o] for o in others}, remainder=remainder)
        pred = Predictor(train, table_profile(tables[cid]), warn=False, unseen=fallback)
        samples = json.loads(samples_path.read_text())["samples"]
        predicted = [pred.predict(info, Policy.from_dict(s["policy"]))[0] for s in samples]
        measured = [s["measured_ms"] for s in samples]
        modes = metrics_by_mode([{**s, "predicted_ms": p} for p, s in zip(predicted, samples)])
        cell["holdout_kernels" if kernels is not None else "holdout"] = {
                           "trained_on": [cells[o]["model"] + "@" + "x".join(map(str, cells[o]["input_shape"]))
                                          for o in others] + ([str(kernels)] if kernels is not None else []),
                           **fidelity_metrics(predicted, measured), "by_mode": modes,
                           "remainder": remainder,
                           "median_signed_error": float(np.median(
                               (np.array(predicted) - np.array(measured)) / np.array(measured)))}


def holdout_calibrated(data: dict[str, Any], kernels: Path | None, threads: int,
                       only: set[str] | None = None) -> None:
    """Leave-one-family-out, the product's way for a net it never saw: ``hwcompress profile
    --kernels-from`` (its kernels regressed from the other families' tables and ``kernels``,
    none of its layers timed; its whole-model remainder measured), then its already-measured
    policies predicted from that table. Recorded as ``holdout_calibrated`` with the build time
    (the remainder timing, on this machine); the table is cached under
    bench/results/tables/holdout-<cell>.json (delete it to re-measure). A cached table whose
    training set is no longer the other families' (a family added since) is rebuilt: its
    regressed kernels and the remainder that absorbed their bias came from other tables.
    ``only``: the cell ids to run (the others keep their recorded figures)."""
    import numpy as np

    from automl.core import Policy
    from automl.profiling import calibrate_if_missing, load_model_and_info, profile_model
    from latency_models.predictor import Predictor
    from latency_models.profile import get_profile
    from latency_models.table import LatencyTable
    from latency_models.unseen import table_without
    from latency_models.validate import fidelity_metrics, metrics_by_mode

    cells = data["cells"]
    tables = {cid: LatencyTable.load(table_file(c)) for cid, c in cells.items() if table_file(c).is_file()}
    for cid, cell in cells.items():
        samples_path = RESULTS / f"lut_fidelity_{cid.replace('@', '_')}.json"
        others = [o for o in tables if cells[o]["family"] != cell["family"]]
        if not samples_path.is_file() or cid not in tables or not others:
            continue
        if only is not None and cid not in only:
            continue
        shape = tuple(cell["input_shape"])
        info = load_model_and_info(cell["model"], shape, 10)[1]
        train = table_without(merged_table([tables[o] for o in others], kernels), [info])
        trained_on = list(others) + ([str(kernels)] if kernels is not None else [])
        path = RESULTS / "tables" / f"holdout-{cid.replace('@', '_')}.json"
        before = (cell.get("holdout_calibrated") or {}).get("trained_on")
        if path.is_file() and before is not None and sorted(before) != sorted(trained_on):
            print(f"{cid}: its hold-out table was regressed from {before}, now {trained_on}: rebuilt")
            path.unlink()
        fresh = not path.is_file()
        t0 = time.perf_counter()
        profile = get_profile("cpu-ort", threads)
        table = profile_model(cell["model"], shape, profile, path, kernels_from=train)
        build_s = time.perf_counter() - t0 if fresh else (cell.get("holdout_calibrated") or {}).get("build_s")
        calibrate_if_missing(table, info, path)   # a table cached before the calibration
        pred = Predictor(table, warn=False)
        samples = json.loads(samples_path.read_text())["samples"]
        predicted = [pred.predict(info, Policy.from_dict(s["policy"]))[0] for s in samples]
        measured = [s["measured_ms"] for s in samples]
        cell["holdout_calibrated"] = {
            "trained_on": trained_on,
            "table": path.name, "build_s": build_s,
            "remainder_points": len(table.remainders_for(cell["model"], shape)),
            **fidelity_metrics(predicted, measured),
            "by_mode": metrics_by_mode([{**s, "predicted_ms": p} for p, s in zip(predicted, samples)]),
            "median_signed_error": float(np.median(
                (np.array(predicted) - np.array(measured)) / np.array(measured)))}
        if all("measured_ms_raw_passes" in s for s in samples):   # a cell timed --relative
            cell["holdout_calibrated"]["absolute"] = fidelity_metrics(
                predicted, [min(s["measured_ms_raw_passes"]) for s in samples])
        save_results(data)
        print(cid, "holdout_calibrated", json.dumps({k: cell["holdout_calibrated"][k] for k in
                                                     ("within_5pct", "within_10pct", "spearman", "build_s")}))


def user_net(data: dict[str, Any], spec: str, kernels: Path | None, args: argparse.Namespace) -> None:
    """A user's own ``package.module:factory`` net that no table profiled (issue 14), both ways:
    ``hwcompress profile --kernels-from`` (every zoo cell's table and ``kernels`` merged; the
    net's remainder measured), then ``hwcompress lut validate`` on it (policies measured
    ``passes`` times); and the same measured policies predicted zero-shot (``lut validate
    --unseen``: kernels regressed, no remainder). Recorded under ``user_nets``."""
    import numpy as np

    from automl.core import Policy
    from automl.profiling import load_model_and_info, profile_model, validate_model
    from latency_models.predictor import Predictor
    from latency_models.profile import get_profile
    from latency_models.table import LatencyTable
    from latency_models.unseen import UnseenModel, table_without
    from latency_models.validate import fidelity_metrics, metrics_by_mode, table_profile

    name, shape = parse_cell(spec)
    cells = data["cells"]
    paths = [table_file(c) for c in cells.values() if table_file(c).is_file()]
    if not paths:
        raise SystemExit("--user-net: no zoo cell has a table yet to regress its kernels from")
    info = load_model_and_info(name, shape, 10)[1]
    train = table_without(merged_table([LatencyTable.load(p) for p in paths], kernels), [info])
    tag = f"user-{name.replace(':', '.')}-{'x'.join(map(str, shape))}"
    path = RESULTS / "tables" / f"{tag}.json"
    if getattr(args, "repredict", False):
        repredict_user_net(data, name, shape, info, path, tag)
        return
    fresh = not path.is_file()
    t0 = time.perf_counter()
    table = profile_model(name, shape, get_profile("cpu-ort", args.threads), path, kernels_from=train)
    build_s = time.perf_counter() - t0 if fresh else None
    t0 = time.perf_counter()
    rep = validate_model(name, table, args.samples, seed=0, input_shape=shape,
                         json_out=RESULTS / f"lut_fidelity_{tag}.json",
                         png_out=RESULTS / f"lut_fidelity_{tag}.png", passes=args.passes)
    infos = {m: load_model_and_info(m, s, 10)[1] for m, s in train.metadata.input_shapes.items()}
    zero = Predictor(train, table_profile(table), warn=False, unseen=UnseenModel.fit(train, infos))
    samples = json.loads((RESULTS / f"lut_fidelity_{tag}.json").read_text())["samples"]
    predicted = [zero.predict(info, Policy.from_dict(s["policy"]))[0] for s in samples]
    measured = [s["measured_ms"] for s in samples]
    previous = data.setdefault("user_nets", {}).get(cell_id(name, shape), {})
    data["user_nets"][cell_id(name, shape)] = {
        "model": name, "input_shape": list(shape), "table": path.name,
        "trained_on": [p.name for p in paths] + ([str(kernels)] if kernels is not None else []),
        "build_s": build_s if build_s is not None else previous.get("build_s"),
        "validate_s": time.perf_counter() - t0,
        **{k: v for k, v in rep.items() if k != "samples"},
        "zero_shot": {**fidelity_metrics(predicted, measured),
                      "by_mode": metrics_by_mode([{**s, "predicted_ms": p} for p, s in zip(predicted, samples)]),
                      "median_signed_error": float(np.median(
                          (np.array(predicted) - np.array(measured)) / np.array(measured)))}}
    save_results(data)
    u = data["user_nets"][cell_id(name, shape)]
    print(cell_id(name, shape), json.dumps({k: u.get(k) for k in ("within_5pct", "within_10pct", "spearman",
                                                                   "build_s", "repeatability")}),
          "zero-shot", json.dumps({k: u["zero_shot"][k] for k in ("within_10pct", "spearman")}))


def repredict_user_net(data: dict[str, Any], name: str, shape: tuple[int, ...], info: "ModelInfo",
                       path: Path, tag: str) -> None:
    """``--user-net … --repredict``: its cached table calibrated if it was built before the
    per-kind calibration, and its already-measured policies predicted again; nothing is timed,
    the zero-shot figures stay."""
    from automl.profiling import calibrate_if_missing
    from latency_models.table import LatencyTable

    cid = cell_id(name, shape)
    record = data.get("user_nets", {}).get(cid)
    samples_path = RESULTS / f"lut_fidelity_{tag}.json"
    if not path.is_file() or record is None or not samples_path.is_file():
        raise SystemExit(f"--repredict: {cid} has no table and measured policies yet; run it without")
    table = LatencyTable.load(path)
    calibrate_if_missing(table, info, path)
    report = json.loads(samples_path.read_text())
    repredict_report(record, samples_path, report, table, info, "kernels calibrated")
    record["kernel_multipliers"] = table.metadata.kernel_multipliers.get(info.model_name)
    save_results(data)
    print(cid, "repredicted", json.dumps({k: record.get(k) for k in ("within_5pct", "within_10pct", "spearman")}))


def table_rows(data: dict[str, Any]) -> str:
    lines = ["| model | input | table entries (build s) | noise floor ±5% / ±10% | within ±5% | "
             "within ±10% | MAPE | Spearman | mixed within ±10% | unseen (leave-one-family-out) ±10% / Spearman | "
             "unseen + kernel sample ±10% / Spearman | unseen, kernels regressed + remainder measured "
             "±10% / ±5% / Spearman (build s) | timed how | unscaled: noise floor ±10% / within ±10% |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in data["cells"].values():
        if "n" not in cell:
            lines.append(f"| {cell['model']} | {'x'.join(map(str, cell['input_shape']))} | "
                         f"{cell['table_entries']} ({_s(cell.get('table_build_s'))}) | | | | | | | | | | | |")
            continue
        noise = cell.get("repeatability") or {}
        mixed = cell.get("by_mode", {}).get("mixed", {})
        ho = cell.get("holdout") or {}
        hk = cell.get("holdout_kernels") or {}
        hc = cell.get("holdout_calibrated") or {}
        calibrated = (f"{_p(hc.get('within_10pct'))} / {_p(hc.get('within_5pct'))} / "
                      f"{hc.get('spearman', float('nan')):.3f} ({_s(hc.get('build_s'))})")
        relative = bool(cell.get("relative_to_reference"))
        # a cell timed alone (every cell before the reference timing) is its own unscaled figure
        raw_noise = cell.get("repeatability_raw") or ({} if relative else noise)
        absolute = cell.get("absolute") or ({} if relative else cell)
        how = "beside the reference, scaled" if relative else "alone"
        lines.append(
            f"| {cell['model']} | {'x'.join(map(str, cell['input_shape']))} | {cell['table_entries']} "
            f"({_s(cell.get('table_build_s'))}) | {_p(noise.get('within_5pct'))} / {_p(noise.get('within_10pct'))} | "
            f"{_p(cell['within_5pct'])} | {_p(cell['within_10pct'])} | {_p(cell['mape'])} | "
            f"{cell['spearman']:.3f} | {_p(mixed.get('within_10pct'))} | "
            f"{_p(ho.get('within_10pct'))} / {ho.get('spearman', float('nan')):.3f} | "
            f"{_p(hk.get('within_10pct'))} / {hk.get('spearman', float('nan')):.3f} | {calibrated} | {how} | "
            f"{_p(raw_noise.get('within_10pct'))} / {_p(absolute.get('within_10pct'))} |")
    return "\n".join(lines)


def user_net_rows(data: dict[str, Any]) -> str:
    """The user nets' rows (``--user-net``), beside the zoo's table."""
    lines = ["| user net | input | noise floor ±5% / ±10% | kernels regressed + remainder measured: "
             "±10% / ±5% / Spearman | build s | zero-shot (kernels only): ±10% / Spearman |",
             "|---|---|---|---|---|---|"]
    for u in data.get("user_nets", {}).values():
        noise, zero = u.get("repeatability") or {}, u["zero_shot"]
        lines.append(f"| {u['model']} | {'x'.join(map(str, u['input_shape']))} | "
                     f"{_p(noise.get('within_5pct'))} / {_p(noise.get('within_10pct'))} | "
                     f"{_p(u['within_10pct'])} / {_p(u['within_5pct'])} / {u['spearman']:.3f} | "
                     f"{_s(u.get('build_s'))} | {_p(zero['within_10pct'])} / {zero['spearman']:.3f} |")
    return "\n".join(lines)


def _p(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def _s(v: float | None) -> str:
    return "cached" if v is None else f"{v:.0f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="lenet5 and resnet20 at 1x16x16, quick grid, 6 samples")
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated NAME@CxHxW")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="re-measure cells already in the results")
    ap.add_argument("--relative", action="store_true",
                    help="time each policy beside the unpruned model, scaled to its latency when "
                         "the table was built (hwcompress lut validate --relative)")
    ap.add_argument("--table-only", action="store_true", help="build (and time) the tables only")
    ap.add_argument("--holdout-only", action="store_true", help="only re-run leave-one-family-out")
    ap.add_argument("--remainder", choices=("none", "cross-model"), default="none",
                    help="the unseen net's remainder in the hold-out (latency_models.unseen.UnseenModel)")
    ap.add_argument("--kernels", type=Path, default=None,
                    help="a kernel sample table (hwcompress lut kernels): leave-one-family-out is "
                         "run again with it merged into every training table")
    ap.add_argument("--holdout-calibrated", action="store_true",
                    help="leave-one-family-out as `hwcompress profile --kernels-from`: kernels "
                         "regressed from the other families (and --kernels), the held-out net's "
                         "whole-model remainder measured on this machine (needs it idle)")
    ap.add_argument("--user-net", default=None, metavar="PKG.MOD:FACTORY@CxHxW",
                    help="a net outside the zoo (e.g. bench.user_net:hybrid_net@3x64x64): priced "
                         "with profile --kernels-from all the cells' tables (and --kernels), "
                         "validated, and predicted zero-shot (needs the machine idle)")
    ap.add_argument("--table", action="store_true", help="print the markdown table and exit")
    ap.add_argument("--calibrate-stored", action="store_true",
                    help="calibrate the cells' tables' kernels per kind on the whole-model timings "
                         "they stored, re-fit their remainders and predict their measured policies "
                         "again (nothing is timed)")
    ap.add_argument("--repredict", action="store_true",
                    help="with --user-net: calibrate its cached table's regressed kernels on the "
                         "whole-model timings it stored and predict its measured policies again "
                         "(nothing is timed)")
    ap.add_argument("--refit-remainders", action="store_true",
                    help="re-measure the cells' remainders (current procedure) and re-predict their "
                         "measured policies; nothing else is re-measured")
    ap.add_argument("--results-dir", type=Path, default=None,
                    help="keep this CPU's cells there (results JSON, reports, tables/) instead of "
                         "bench/results: another host's cells stay where they are")
    ap.add_argument("--import-cell", default=None, metavar="NAME@CxHxW",
                    help="record a cell from --from-table and --from-report (a CLI profile and "
                         "lut validate) instead of measuring it")
    ap.add_argument("--from-table", type=Path, default=None)
    ap.add_argument("--from-report", type=Path, default=None)
    ap.add_argument("--build-s", type=float, default=None, help="with --import-cell: the table's build time")
    args = ap.parse_args(argv)

    global RESULTS, OUT
    if args.results_dir is not None:
        RESULTS, OUT = args.results_dir, args.results_dir / "lut_fidelity.json"
    data = load_results()
    if args.import_cell:
        if args.from_table is None or args.from_report is None:
            ap.error("--import-cell needs --from-table and --from-report")
        name, shape = parse_cell(args.import_cell)
        cid = cell_id(name, shape)
        data["cells"][cid] = import_cell(name, shape, args.from_table, args.from_report,
                                         args.build_s, previous=data["cells"].get(cid))
        save_results(data)
        print(table_rows(data))
        return 0
    if args.table:
        print(table_rows(data))
        if data.get("user_nets"):
            print("\n" + user_net_rows(data))
        return 0
    specs = ["lenet5@1x16x16", "resnet20@1x16x16"] if args.quick else args.models.split(",")
    if args.quick:
        args.samples = 6
    if args.calibrate_stored:
        for spec in specs:
            cid = cell_id(*parse_cell(spec))
            if "n" in data["cells"].get(cid, {}):
                calibrate_stored(data, cid)
                save_results(data)
                print(cid, "calibrated", json.dumps({k: data["cells"][cid].get(k) for k in SUMMARY_KEYS}))
        return 0
    if args.refit_remainders:
        for spec in specs:
            cid = cell_id(*parse_cell(spec))
            if "n" in data["cells"].get(cid, {}):
                refit_remainders(data, cid, args.threads, args.relative)
                save_results(data)
                print(cid, json.dumps({k: data["cells"][cid].get(k) for k in SUMMARY_KEYS}))
    elif not (args.holdout_only or args.holdout_calibrated or args.user_net):
        for spec in specs:
            name, shape = parse_cell(spec)
            cid = cell_id(name, shape)
            done = data["cells"].get(cid, {})
            if not args.force and ("n" in done or (args.table_only and done)):
                continue
            data["cells"][cid] = measure_cell(name, shape, args)
            save_results(data)
            print(cid, json.dumps({k: data["cells"][cid].get(k) for k in
                                   ("table_entries", "table_build_s", *SUMMARY_KEYS, "repeatability")}))
    if args.user_net:
        user_net(data, args.user_net, args.kernels, args)
        print(user_net_rows(data))
        return 0
    if args.holdout_calibrated:
        holdout_calibrated(data, args.kernels, args.threads,
                           only={cell_id(*parse_cell(spec)) for spec in specs})
        print(table_rows(data))
        return 0
    holdout(data, args.quick, remainder=args.remainder)
    if args.kernels is not None:
        holdout(data, args.quick, args.kernels, remainder=args.remainder)
    save_results(data)
    print(table_rows(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
