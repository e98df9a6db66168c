"""Turning the best policy of a search into the answer: apply it, recover it (distilled fine-tune), export the
deployable model, measure it on the device, and draw what a person would rather look at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from latency_models.onnx_runtime import export_onnx, int8_weight_bits, measure_onnx_latency

from ..compress import export_deployable, model_cost
from ..core import Policy, SearchFailed
from ..records import JobEvent, LogEvent, ParetoPoint, SearchResult
from ..train import evaluate_accuracy, evaluate_onnx_accuracy, finetune
from ..workflow import LoadedModel
from .front import pareto_front
from .measured_budget import MEASURE_SESSIONS, DeviceProbe, choose_within_measured_budget
from .problem import CompressionProblem


DEPLOYED_ACCURACY_IMAGES = 10_000
"""Test images the exported graph itself is scored on (ORT's int8 may differ from fake-quant):
all of MNIST's and Fashion-MNIST's, so the deployed figure carries the same ±0.3 pt sampling
error as the unpruned model's, not the ±0.7 pt of 2,000 images (a few seconds of ORT calls)."""


def measure_reference_ms(loaded: LoadedModel, threads: int = 1) -> float:
    """The uncompressed model's measured latency (ORT, batch 1): what relative budgets mean."""
    return measure_onnx_latency(export_onnx(loaded.model, loaded.data.input_shape),
                                loaded.data.input_shape, threads=threads, sessions=MEASURE_SESSIONS).uncontended_ms


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The most accurate feasible scored policy; ties go to the faster one."""
    ok = [r for r in rows if r.get("feasible") and r.get("accuracy") is not None]
    return max(ok, key=lambda r: (r["accuracy"], -r["latency_ms"]), default=None)


def finalize(problem: CompressionProblem, rows: list[dict[str, Any]], config, multi_objective: bool,
             out: Path, emit: Callable[[JobEvent], None],
             probe: DeviceProbe | None = None) -> SearchResult:

    best = best_row(rows)
    if best is None:
        failed = sum(1 for r in rows if r.get("error"))
        raise SearchFailed(f"strategy {config.strategy!r} found no feasible policy it could score "
                           f"({len(rows)} evaluations, {failed} failed)")
    emit(LogEvent(f"finalizing the best policy (val accuracy {best['accuracy']:.4f})"))
    loaded = problem.loaded
    probe = probe or DeviceProbe(problem, config.threads, config.val_limit)
    simulated = probe.simulated
    calib = probe.calib
    choice = choose_within_measured_budget(problem, rows, probe.build, probe.measure, probe.score,
                                           details=probe.last_figures)
    for c in choice.checks:
        emit(LogEvent("measured {source}: {latency_ms_measured:.4f} ms (predicted "
                      "{latency_ms_predicted:.4f}), val accuracy {accuracy:.4f}, within budget: "
                      "{within_budget}".format(**c)))
    best, model, measured_ms = choice.row, choice.model, choice.measured_ms
    policy = Policy.from_dict(best["policy"])
    acc_before = evaluate_accuracy(model, loaded.data.x_test, loaded.data.y_test)
    if config.finetune_epochs > 0:
        emit(LogEvent(f"fine-tuning {config.finetune_epochs:g} epoch(s), distilled from the "
                      "original model"))
        finetune(model, loaded.data, epochs=config.finetune_epochs, seed=config.seed,
                 teacher=loaded.model, progress=config.progress)
    acc_after = evaluate_accuracy(model, loaded.data.x_test, loaded.data.y_test)
    onnx_bytes = export_deployable(model, policy, loaded.info, loaded.data.input_shape, calib)
    acc_deployed = evaluate_onnx_accuracy(onnx_bytes, loaded.data.x_test, loaded.data.y_test,
                                          limit=DEPLOYED_ACCURACY_IMAGES)
    (out / "compressed.onnx").write_bytes(onnx_bytes)
    # the CPU timing of the file written (the graph checked above, with fine-tuned weights);
    # ``latency_ms_measured`` stays the check the choice was made on
    cpu_ort = measure_onnx_latency(onnx_bytes, loaded.data.input_shape, threads=config.threads,
                                   sessions=MEASURE_SESSIONS).uncontended_ms
    cost = model_cost(model, loaded.data.input_shape, policy)
    evaluated = [r for r in rows if r.get("accuracy") is not None]
    result = SearchResult(
        model=config.model, dataset=config.data, strategy=config.strategy,
        hardware=problem.profile.name, seed=config.seed, budgets=list(map(str, problem.budget.terms)),
        policy=policy,
        accuracy_val_search=best["accuracy"],
        accuracy_original=evaluate_accuracy(loaded.model, loaded.data.x_test, loaded.data.y_test),
        accuracy_before_finetune=acc_before,
        accuracy_after_finetune=acc_after,
        accuracy_deployed=acc_deployed,
        accuracy_deployed_images=min(len(loaded.data.x_test), DEPLOYED_ACCURACY_IMAGES),
        int8_weight_bits=int8_weight_bits(onnx_bytes),
        finetune_epochs=config.finetune_epochs,
        latency_ms_predicted=best["latency_ms"],
        latency_ms_predicted_table=best["latency_ms"] / problem.correction_for(policy),
        latency_correction=dict(problem.latency_correction),
        latency_ms_measured=measured_ms,
        latency_ms_measured_source=("simulated" if simulated else
                                    "onnxruntime on this CPU, timed side by side with the uncompressed "
                                    "model and scaled to its latency at the job's start" if probe.reference_ms
                                    else "onnxruntime on this CPU"),
        latency_ms_measured_raw=choice.checks[-1].get("latency_ms_raw"),
        latency_fraction_measured=choice.checks[-1].get("latency_fraction"),
        latency_ms_cpu_ort=cpu_ort,
        latency_ms_original_measured=problem.reference["latency_ms"],
        latency_ms_budget=problem.limits.get("latency_ms"),
        latency_within_budget_measured=choice.within_budget,
        latency_checks=choice.checks,
        energy_mj_predicted=best["energy_mj"],
        energy_mj_budget=problem.limits.get("energy_mj"),
        size_mb=cost.size_mb, size_mb_budget=problem.limits.get("size_mb"),
        macs=cost.macs, macs_budget=problem.limits.get("macs"), params=cost.params,
        evaluations=len(evaluated),
        failed_trials=sum(1 for r in rows if r.get("error")),
        nodes=sorted({r["node"] for r in rows if r.get("node")}),
        pareto=[ParetoPoint(r["accuracy"], r["latency_ms"], r["energy_mj"], r["size_mb"],
                            Policy.from_dict(r["policy"]))
                for r in pareto_front(rows, config.objective)] if multi_objective else None,
    )
    (out / "trace.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "key"} for r in rows], indent=1))
    plot_search(rows, result, out / "search.png", config.objective if multi_objective else "latency_ms")
    return result


def plot_search(rows: list[dict[str, Any]], result: SearchResult, path: Path, objective: str) -> None:
    """Accuracy vs predicted cost of every scored candidate, the front, the budget line and the
    chosen policy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("accuracy") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for feasible, color, label in ((True, "tab:blue", "feasible"), (False, "tab:gray", "over budget")):
        sel = [r for r in pts if bool(r.get("feasible")) == feasible]
        if sel:
            ax.scatter([r[objective] for r in sel], [r["accuracy"] for r in sel], s=14, c=color,
                       alpha=0.7, label=label)
    front = pareto_front(rows, objective)
    if front:
        ax.plot([r[objective] for r in front], [r["accuracy"] for r in front], "-", c="tab:orange",
                label="Pareto front")
    budget = getattr(result, f"{objective}_budget")
    if budget:
        ax.axvline(budget, ls="--", c="tab:red", label=f"budget {budget:.3g}")
    ax.scatter([result.latency_ms_predicted if objective == "latency_ms" else result.energy_mj_predicted],
               [result.accuracy_val_search], marker="*", s=160, c="tab:green", label="chosen", zorder=5)
    ax.set_xlabel(f"{objective} (predicted)")
    ax.set_ylabel("validation accuracy (no fine-tune)")
    ax.set_title(f"{result.model} / {result.strategy}: {len(pts)} evaluations")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
