"""The deployment runtime on a CPU: export to ONNX, int8 QDQ quantization, and timing.

``latency_ms_measured`` everywhere in the project means: the exported ONNX model run in ONNX
Runtime on this CPU, batch 1, 1 intra-op thread unless said, read by the project's one timing
protocol (:mod:`latency_models.sampling`).

int8 uses ONNX Runtime's static QDQ format (QuantizeLinear/DequantizeLinear pairs around the
ops): it is the format ORT recommends for CPU, it keeps the float graph readable, and ORT fuses
each QDQ pattern into its int8 kernels (QLinearConv, MatMulInteger) at session creation, so the
timing is of real int8 kernels. Weights are per-output-channel, activations per-tensor.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from .sampling import MODEL_BUDGET_S, SESSIONS, TimingStats, sample_model_times


def export_onnx(model: nn.Module, input_shape: Sequence[int], path: str | Path | None = None,
                batch: int = 1) -> bytes:
    """Export ``model`` (eval mode) to ONNX with the TorchScript exporter (fast, BN folded into
    convs); returns the bytes and writes them to ``path`` when given."""
    model = model.eval()
    buf = io.BytesIO()
    example = torch.zeros(batch, *input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buf, dynamo=False, input_names=["input"],
                          output_names=["output"], opset_version=17, do_constant_folding=True)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


class ArrayCalibrationReader:
    """Feeds calibration arrays to ORT's static quantizer."""

    def __init__(self, batches: Iterable[np.ndarray], input_name: str = "input") -> None:
        self._it = iter([{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    def get_next(self):  # noqa: D401 - ORT's CalibrationDataReader protocol
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        pass


INT8_EXPORT = "qdq-4"
"""Version of :func:`quantize_int8_qdq`'s graphs as ORT runs them. qdq-2 (2026-12-05): shared
initializers unshared, float readers of a quantized float tensor read the float tensor. qdq-3
(2026-12-06): sessions run without ORT's ``WeightBiasQuantization`` (:data:`DISABLED_OPTIMIZERS`),
so an fp32 layer between two int8 ones stays fp32. qdq-4 (2026-12-06): and without its
``QDQPropagationTransformer``, so a MaxPool between an fp32 layer and an int8 one stays float."""

DISABLED_OPTIMIZERS = ("WeightBiasQuantization", "QDQPropagationTransformer")
"""ORT graph optimizers our sessions leave out.

``WeightBiasQuantization`` (ORT ≥ 1.21) quantizes the float weights of a Conv/Gemm whose input is
a DequantizeLinear and whose output path leads to a QuantizeLinear, and ORT then fuses it into a
QLinearConv: every fp32 layer a mixed policy puts between two int8 layers ran int8 (per-tensor
weights ORT chose), 0-5 of 53 layers per random mixed MobileNetV2-1.0 policy at 224 (``python -m
bench.mixed_nodes``), priced as fp32 by the tables.

``QDQPropagationTransformer`` moves a QuantizeLinear up through value-preserving ops: in an
fp32 conv → MaxPool → int8 conv chain it moved the int8 layer's quantize above the MaxPool, which
then ran on uint8 NCHW tensors, ORT's slow path (no NCHWc, no NHWC kernel). Random mixed VGG
policies at 1×32×32 whose graph it changes run 0.77× as long without it (median; 0.58-0.98×),
the others unchanged (``python -m bench.qdq_propagation``, BENCHMARKS.md, issue 14); all-int8 and all-fp32 graphs and those of the MobileNetV2/ResNet
cells are the same either way (no MaxPool between precisions, or a float reader keeps it float).

A policy's precision and its glue are what the tables priced, so the deployed model must be run
with the same options: ``ort.InferenceSession(path, providers=[...],
disabled_optimizers=list(DISABLED_OPTIMIZERS))`` (README, "Applying")."""

@functools.cache
def int8_gemm_saturates() -> bool:
    """Whether ONNX Runtime's int8 GEMM on this CPU (uint8 activations × int8 weights, the kernel
    every fused QDQ Conv/Gemm runs) saturates its int16 pair sums.

    On x86 CPUs without VNNI (AVX2 or AVX-512 alone, such as the AMD EPYC this project also runs
    on) MLAS multiplies with ``VPMADDUBSW``, which adds two u8×s8 products into an int16 and
    clamps at 32767: 255 × 127 × 2 overflows. ORT's documentation names the cure, weights quantized
    to 7 bits (``reduce_range``; 255 × 64 × 2 fits). Measured 2026-12-06 on that EPYC (no VNNI):
    the all-int8 VGG of ``make demo`` (digits at 32×32) lost 0.8 pt to saturation (0.9861 vs 0.9944
    fp32; its logits 4.1 away from ORT's own unfused QDQ reference), and 0.9944 with 7-bit
    weights (0.099 away); make demo's pruned answer lost 3.9 pt. VNNI CPUs (``VPDPBUSD``, 32-bit
    sums) and ARM do not saturate, so 8 bits stay there.

    Asked of the runtime itself, not of the CPU's flags: a one-layer ``MatMulInteger`` whose every
    pair sum is 255 × 127 × 2 either returns the exact sum or the clamped one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = 64
    weight = numpy_helper.from_array(np.full((k, 1), 127, np.int8), "w")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "probe",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"a": np.full((1, k), 255, np.uint8)})[0]
    return int(y[0, 0]) != 255 * 127 * k


def int8_weight_qmax() -> int:
    """The largest int8 weight magnitude ORT's quantizer writes on this CPU: 127, or 64 where the
    int8 GEMM saturates (``reduce_range``: ORT's reduced int8 range is [-64, 64])."""
    return 64 if int8_gemm_saturates() else 127


def int8_weight_bits(onnx_bytes: bytes) -> int | None:
    """Bits the int8 weights of a QDQ graph use: 7 when every one lies within ±64 (ORT's reduced
    range), 8 otherwise (per-channel symmetric quantization puts each channel's largest weight at
    ±127); None for a graph without int8 weights."""
    import onnx
    from onnx import numpy_helper

    largest = [int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max())
               for t in onnx.load_from_string(onnx_bytes).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    if not largest:
        return None
    return 7 if max(largest) <= 64 else 8


COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
"""The ops a policy sets a precision for (its prunable layers); every other op follows them."""


def int8_nodes(model: "onnx.ModelProto", int8_compute: Iterable[str] | None) -> list[str] | None:
    """The nodes to quantize so that the chosen compute layers run int8 end to end.

    The compute layers named in ``int8_compute`` (all when None) are quantized; so is every other
    node (Add, Relu/Clip, pooling, Flatten, ...) whose activation inputs all come from int8 nodes,
    so no DequantizeLinear/QuantizeLinear pair is left in float between two int8 layers and ORT
    fuses each residual add and activation into its int8 kernels. A node fed by a float layer
    stays float: the boundary is where the precision changes, once. ``None`` means every node,
    which is exactly what ORT's own ``quantize_static`` does with its default op types."""
    if int8_compute is None:
        return None
    wanted = set(int8_compute)
    graph = model.graph
    constants = {t.name for t in graph.initializer}  # weights and Constant outputs are data
    producer: dict[str, str] = {}
    is_int8: dict[str, bool] = {}
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        if node.op_type in COMPUTE_OPS:
            is_int8[node.name] = node.name in wanted
        else:
            sources = [producer[t] for t in node.input if t and t not in constants and t in producer]
            is_int8[node.name] = bool(sources) and all(is_int8[s] for s in sources)
        for out in node.output:
            producer[out] = node.name
    return [name for name, q in is_int8.items() if q]


def quantize_int8_qdq(fp32_onnx: bytes, calibration: Iterable[np.ndarray],
                      int8_compute: Iterable[str] | None = None,
                      reduce_range: bool | None = None) -> bytes:
    """Static int8 QDQ quantization the way ONNX Runtime's own ``quantize_static`` does it:
    every op type ORT runs in int8 (its default op types), per-channel int8 weights, uint8
    activations calibrated (MinMax) on ``calibration`` — real samples of the user's data.
    ``int8_compute`` names the Conv/Gemm nodes to run int8 (all when None); the glue between
    them follows (see :func:`int8_nodes`). ``reduce_range`` (7-bit weights) defaults to
    :func:`int8_gemm_saturates`, as ORT's documentation advises; it changes weight values only,
    not the kernels, so tables timed before it still price the graphs (no new ``INT8_EXPORT``)."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        Path(src).write_bytes(fp32_onnx)
        try:
            quant_pre_process(src, pre, skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantize the raw graph if it fails
            pre = src
        graph = onnx.load(pre)
        if unshare_initializers(graph):
            pre = os.path.join(tmp, "unshared.onnx")
            onnx.save(graph, pre)
        if int8_compute is not None:
            int8_compute = list(int8_compute)
            missing = set(int8_compute) - {n.name for n in graph.graph.node}
            if missing:
                raise ValueError(f"int8 layers not in the graph: {sorted(missing)[:5]}")
        nodes = int8_nodes(graph, int8_compute)
        batches = [b[i:i + 1] for b in calibration for i in range(len(b))]
        with quiet_quantizer():
            quantize_static(pre, dst, ArrayCalibrationReader(batches), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_quantize=nodes,
                            reduce_range=int8_gemm_saturates() if reduce_range is None else reduce_range)
        if nodes is None:
            return Path(dst).read_bytes()
        quantized = onnx.load(dst)
        float_consumers_read_float(quantized, set(nodes))
        return quantized.SerializeToString()


def float_consumers_read_float(model: "onnx.ModelProto", quantized_nodes: set[str]) -> int:
    """Where a float tensor enters an int8 layer, let the float nodes that also read it read
    the tensor itself, not its quantize-dequantize round trip; returns how many inputs moved.

    ORT's quantizer routes *every* reader of a quantized tensor through the DequantizeLinear.
    At an fp32 -> int8 boundary that costs a DequantizeLinear for the float readers (a residual
    add), and it leaves the Q as the producer's only reader, which lets ORT's QDQ propagation
    move the Q above a MaxPool: ResNet-18 at 224 with an fp32 stem and an int8 first block ran
    its MaxPool on uint8 in NCHW, 5-7 ms instead of 0.5 ms on the NCHWc path (2026-12-05).
    Readers that are int8 themselves (in ``quantized_nodes``) keep the DequantizeLinear: ORT
    fuses it into their kernel. Float readers also gain accuracy: they see unrounded values,
    as the fake-quantized training model does."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    q_source = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    float_of_dq: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in q_source:
            continue
        source = q_source[node.input[0]]
        producer = producers.get(source)
        if producer is None or producer.name not in quantized_nodes:  # written by a float node
            float_of_dq[node.output[0]] = source
    moved = 0
    for node in graph.node:
        if node.name in quantized_nodes or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            if name in float_of_dq:
                node.input[i] = float_of_dq[name]
                moved += 1
    if moved:   # DequantizeLinear nodes nobody reads any more
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in read]
        for n in dead:
            graph.node.remove(n)
    return moved


def unshare_initializers(model: "onnx.ModelProto") -> int:
    """Give every node its own copy of each initializer it shares with another node; returns
    how many copies were made.

    The exporter stores equal tensors once: the all-zero biases that BN folding leaves on
    freshly initialised layers, tied weights. When one sharer is quantized, the quantizer
    replaces the tensor by a DequantizeLinear of its int8 form for *every* sharer, so an fp32
    conv sharing it gets a computed bias, and ORT's NCHWc transformer only converts convs with
    constant weights and bias: measured on ResNet-18 at 224 (random weights, 2026-12-05), one
    int8 conv in stage 1 put the three fp32 convs beside it on the plain NCHW path, 1.6x slower
    each (~5 ms per graph), a cost no layer table can see."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name not in initializers:
                continue
            if name not in seen:
                seen.add(name)
                continue
            copy = graph.initializer.add()
            copy.CopyFrom(initializers[name])
            copy.name = f"{name}__copy{copies}"   # unique even among unnamed nodes
            node.input[i] = copy.name
            copies += 1
    return copies


class quiet_quantizer:
    """ORT's quantizer logs a line per bias it copies ("Created a copy of bias input ...") and
    warns about pre-processing through the root logger: keep that out of the user's terminal."""

    def __enter__(self) -> None:
        import logging
        self._root = logging.getLogger()
        self._level = self._root.level
        self._root.setLevel(logging.ERROR)
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self._root.setLevel(self._level)
        self._warn.__exit__(*exc)


def int8_kernel_graph(qdq_onnx: bytes) -> bytes:
    """A one-layer QDQ graph as its kernel runs inside an int8 network: uint8 in, uint8 out.

    Quantizing a lone layer puts a QuantizeLinear on its float input and a DequantizeLinear on
    its output; inside a run of int8 layers neither exists (each QLinearConv reads and writes
    uint8), so timing the lone graph would charge every layer two boundary ops it never runs.
    This drops both: the graph input becomes the quantized tensor, the output the quantized
    result. Boundaries where a policy switches precision are priced by the table's remainder."""
    import onnx

    model = onnx.load_from_string(qdq_onnx)
    graph = model.graph
    in_name, out_name = graph.input[0].name, graph.output[0].name
    first_q = next((n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == in_name), None)
    last_dq = next((n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == out_name), None)
    if first_q is None or last_dq is None:
        return qdq_onnx  # not a QDQ layer graph: time it as it is
    dtype = onnx.TensorProto.UINT8
    for value, node, tensor in ((graph.input[0], first_q, first_q.output[0]),
                                (graph.output[0], last_dq, last_dq.input[0])):
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        value.CopyFrom(onnx.helper.make_tensor_value_info(tensor, dtype, shape))
        graph.node.remove(node)
    return model.SerializeToString()


def make_session(onnx_model: bytes | str | Path, threads: int = 1,
                 profile_prefix: str | None = None, optimized_path: str | Path | None = None,
                 disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS,
                 optimized: bool = True) -> ort.InferenceSession:
    """An ORT CPU session with a fixed intra-op thread count and full graph optimisation but for
    ``disabled_optimizers`` (with ``profile_prefix``, ORT's per-node profiler on, writing its
    JSON there; with ``optimized_path``, the graph it runs written there). ``optimized=False``:
    no graph optimisation at all, so a QDQ graph runs as it reads (dequantize, float op,
    quantize): the reference its fused int8 kernels should agree with."""
    opts = ort.SessionOptions()
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    src = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers))


def optimized_graph(onnx_model: bytes | str | Path, threads: int = 1,
                    disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS) -> "onnx.ModelProto":
    """The graph ORT runs after its optimisations (fusions, QDQ → QLinear kernels, NCHWc
    layout) in a session like :func:`make_session`'s: what a table entry or a policy really
    executes, to read op types and their inputs from."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "optimized.onnx"
        make_session(onnx_model, threads, optimized_path=path, disabled_optimizers=disabled_optimizers)
        return onnx.load(str(path))


def session_callables(onnx_model: bytes | str | Path, input_shape: Sequence[int], threads: int = 1,
                      batch: int = 1, sessions: int = SESSIONS,
                      disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS) -> list[Callable[[], object]]:
    """One ready-to-time callable per fresh ORT session (sessions of one model differ
    persistently, by up to 2x for int8 here, so a figure should not hinge on which one it drew).
    A graph whose input is uint8 (an isolated int8 kernel) is fed uint8. ``disabled_optimizers``:
    as :func:`make_session` (another set only to compare session kinds, bench.qdq_propagation)."""
    rng = np.random.default_rng(0)
    fns: list[Callable[[], object]] = []
    for _ in range(max(1, sessions)):
        sess = make_session(onnx_model, threads, disabled_optimizers=disabled_optimizers)
        inp = sess.get_inputs()[0]
        x = (rng.integers(0, 256, (batch, *input_shape), dtype=np.uint8) if inp.type == "tensor(uint8)"
             else rng.standard_normal((batch, *input_shape)).astype(np.float32))
        fns.append(lambda sess=sess, feed={inp.name: x}: sess.run(None, feed))
    return fns


def measure_onnx_latency(onnx_model: bytes | str | Path, input_shape: Sequence[int], threads: int = 1,
                         batch: int = 1, sessions: int = SESSIONS,
                         budget_s: float = MODEL_BUDGET_S) -> TimingStats:
    """``latency_ms_measured``: one ORT run at ``batch`` on this CPU, read by the project's one
    whole-model timing protocol (:func:`latency_models.sampling.sample_model_times`, over
    ``sessions`` fresh sessions): use ``.uncontended_ms``, the figure the lookup tables' whole-model
    remainders are read by too."""
    return sample_model_times([session_callables(onnx_model, input_shape, threads, batch, sessions)],
                              budget_s)[0]


def measure_onnx_pair(a: bytes | str | Path, b: bytes | str | Path, input_shape: Sequence[int],
                      threads: int = 1, sessions: int = SESSIONS,
                      budget_s: float = MODEL_BUDGET_S) -> tuple[TimingStats, TimingStats]:
    """Time two models side by side, their sessions' chunks interleaved (a, b, a, b, ...), so
    that both see the same machine. On a shared VM the same graph measured minutes apart moved
    by 30-80% here; measured interleaved, the *ratio* of two graphs holds, which is what a
    relative budget ("half the latency") asks about. Use ``.uncontended_ms`` of each."""
    ta, tb = sample_model_times([session_callables(a, input_shape, threads, 1, sessions),
                                 session_callables(b, input_shape, threads, 1, sessions)], budget_s)
    return ta, tb


@dataclass(frozen=True)
class OpTimes:
    """Where one ORT run of a graph spends its time, by ORT's own per-node profiler: the median
    over runs of each op type's summed node time (``QLinearConv``, ``Conv`` (NCHWc),
    ``QuantizeLinear``, ``ReorderInput``, ``Transpose``, ...), of the run itself, and how many
    nodes of each type one run executes; ``nodes``: (node name, op type, median ms) of every
    node in execution order. The profiler adds a cost per node, so ``run_ms`` is above an
    unprofiled timing; read op times against each other, not against a latency."""

    op_ms: dict[str, float]
    op_count: dict[str, int]
    run_ms: float
    nodes: tuple[tuple[str, str, float], ...] = ()


def profile_op_times(onnx_model: bytes | str | Path, input_shape: Sequence[int], threads: int = 1,
                     runs: int = 60, warmup: int = 20) -> OpTimes:
    """Run ``onnx_model`` ``warmup + runs`` times under ORT's profiler; :class:`OpTimes` over
    the last ``runs`` (the optimised graph as this CPU runs it: fused, NCHWc, QDQ kernels)."""
    import bisect
    import json
    from collections import Counter

    with tempfile.TemporaryDirectory() as tmp:
        sess = make_session(onnx_model, threads, profile_prefix=os.path.join(tmp, "ort"))
        inp = sess.get_inputs()[0]
        rng = np.random.default_rng(0)
        x = (rng.integers(0, 256, (1, *input_shape), dtype=np.uint8) if inp.type == "tensor(uint8)"
             else rng.standard_normal((1, *input_shape)).astype(np.float32))
        for _ in range(warmup + runs):
            sess.run(None, {inp.name: x})
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    starts = [a for a, _ in spans]
    per_run: list[Counter] = [Counter() for _ in spans]
    counts: list[Counter] = [Counter() for _ in spans]
    sequence: list[list[tuple[float, str, str, float]]] = [[] for _ in spans]
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i >= 0 and e["ts"] <= spans[i][1]:
            op = e["args"]["op_name"]
            per_run[i][op] += e["dur"]
            counts[i][op] += 1
            sequence[i].append((e["ts"], e["name"][:-len("_kernel_time")], op, e["dur"]))
    ops = sorted({op for c in per_run for op in c})
    for run in sequence:
        run.sort()
    nodes: tuple[tuple[str, str, float], ...] = ()
    if sequence and all(len(run) == len(sequence[-1]) for run in sequence):   # sequential runs
        nodes = tuple((name, op, float(np.median([run[j][3] for run in sequence])) / 1000)
                      for j, (_, name, op, _) in enumerate(sequence[-1]))
    return OpTimes({op: float(np.median([c[op] for c in per_run])) / 1000 for op in ops},
                   dict(counts[-1]), float(np.median([b - a for a, b in spans])) / 1000, nodes)


def run_onnx(onnx_model: bytes | str | Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    sess = make_session(onnx_model, threads)
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
