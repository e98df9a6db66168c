"""Carry the committed tables over a session change that leaves their graphs alone (issue 14).

    python -m bench.restamp_export [--tables bench/results/tables/*.json]

A table's whole-model remainders are timings of the graphs ORT runs, so they go stale when the
int8 export or the session options change (``latency_models.onnx_runtime.INT8_EXPORT``; a stale
table's remainders are re-timed by ``hwcompress profile``). qdq-4 only adds
``QDQPropagationTransformer`` to the optimizers our sessions leave out, which changes a graph
only where a MaxPool sits between an fp32 and an int8 layer. Re-timing every committed table
would re-read every remainder on a host whose noise moves figures by a few percent for nothing;
instead, per table and per model in it, each remainder point's policy is exported again (random
weights: the graph, not the numbers, is the question) and ORT's optimised graph under the old
and the new options compared op by op. A table whose every point runs the same graph is stamped
``INT8_EXPORT``; one with any point that differs is left stale (to re-time) and named.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PREVIOUS = {"qdq-3": ("WeightBiasQuantization",)}   # the disabled optimizers of each older stamp


def same_graphs(table_path: Path) -> tuple[bool, str]:
    """Whether every remainder point of every model in the table runs the same optimised graph
    under the table's stamp and under today's sessions; and why not, when not."""
    from automl.compress import apply_policy, export_deployable
    from tqdm.auto import tqdm

    from automl.profiling import load_model_and_info, random_calibration, stored_timings
    from latency_models.onnx_runtime import DISABLED_OPTIMIZERS, optimized_graph
    from latency_models.table import LatencyTable, TableError
    from latency_models.validate import table_profile

    table = LatencyTable.load(table_path)
    old = PREVIOUS.get(table.metadata.int8_export)
    if old is None:
        return False, f"stamp {table.metadata.int8_export!r}: no known session options to compare"
    profile = table_profile(table)
    for model_name, shape in table.metadata.input_shapes.items():
        rows = table.remainders_for(model_name, shape)
        if not rows:
            continue
        model, info = load_model_and_info(model_name, shape, 10)
        try:   # the policies the rows were timed at, re-derived and checked against them
            points = [policy for policy, _ in stored_timings(table, info, profile)]
        except TableError as exc:
            return False, str(exc)
        calib = [random_calibration(tuple(shape))[0][:2]]   # the graph is the question, not the ranges
        for i, policy in enumerate(tqdm(points, desc=f"{table_path.name}: {model_name}", leave=False)):
            compressed = apply_policy(model, policy, info, calib, channel_step=profile.channel_step)
            onnx_bytes = export_deployable(compressed, policy, info, tuple(shape), calib)
            before = [n.op_type for n in optimized_graph(onnx_bytes, disabled_optimizers=old).graph.node]
            now = [n.op_type for n in optimized_graph(onnx_bytes, disabled_optimizers=DISABLED_OPTIMIZERS).graph.node]
            if before != now:
                return False, f"{model_name}: point {i} runs another graph ({len(before)} → {len(now)} nodes)"
    return True, "every remainder point runs the same graph"


def main(argv: list[str] | None = None) -> int:
    from latency_models.onnx_runtime import INT8_EXPORT
    from latency_models.table import LatencyTable

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", nargs="+", type=Path,
                    default=sorted((RESULTS / "tables").glob("*.json")))
    args = ap.parse_args(argv)
    for path in args.tables:
        table = LatencyTable.load(path)
        if not table.remainders or table.metadata.int8_export == INT8_EXPORT:
            print(f"{path.name}: nothing to do ({'no remainders' if not table.remainders else INT8_EXPORT})")
            continue
        ok, why = same_graphs(path)
        if ok:
            table.metadata.int8_export = INT8_EXPORT
            table.save(path)
        print(f"{path.name}: {'stamped ' + INT8_EXPORT if ok else 'left stale'}: {why}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
