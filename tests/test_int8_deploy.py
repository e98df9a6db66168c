"""int8 deployment the way ONNX Runtime's own static quantization does it: every op type ORT runs
in int8 (residual adds, activations, pooling fused), no float glue left between two int8 layers,
and the latency table timing each int8 kernel as it then runs (uint8 in, uint8 out)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import torch

from automl.compress import apply_policy, export_deployable
from automl.core import LayerPolicy, Policy
from automl.models import build_model
from automl.space import trace_model
from automl.peers import ort_quantize_static
from latency_models.onnx_runtime import (DISABLED_OPTIMIZERS, export_onnx, int8_kernel_graph, int8_nodes,
                                         make_session, optimized_graph, quantize_int8_qdq)

SHAPE = (1, 16, 16)


def _optimized_ops(model: bytes, disabled: tuple[str, ...] = DISABLED_OPTIMIZERS) -> Counter:
    """The op types ORT actually runs after its graph optimisations (QDQ fusion included), with
    the optimizers our sessions leave out left out (``disabled``)."""
    return Counter(n.op_type for n in optimized_graph(model, disabled_optimizers=disabled).graph.node)


def _resnet20():
    torch.manual_seed(0)
    model = build_model("resnet20", 1, 10).eval()
    return model, trace_model(model, SHAPE, "resnet20")


def test_full_int8_is_the_graph_ort_quantize_static_makes():
    model, info = _resnet20()
    fp32 = export_onnx(model, SHAPE)
    calib = np.random.default_rng(0).standard_normal((8, *SHAPE)).astype(np.float32)
    computes = [n.name for n in onnx.load_from_string(fp32).graph.node if n.op_type in ("Conv", "Gemm")]
    ours = onnx.load_from_string(quantize_int8_qdq(fp32, [calib], int8_compute=computes))
    peer = onnx.load_from_string(ort_quantize_static(fp32, calib))
    assert Counter(n.op_type for n in ours.graph.node) == Counter(n.op_type for n in peer.graph.node)
    # residual adds and ReLUs run inside int8 kernels: nothing float between two int8 layers
    ran = _optimized_ops(ours.SerializeToString())
    assert ran["QLinearAdd"] == 9 and ran["Add"] == 0 and ran["Relu"] == 0, ran
    assert ran["QuantizeLinear"] == 1, ran  # the network input, once


def test_mixed_policy_switches_precision_once_per_boundary():
    """Stages 1-2 int8, stage 3 and the classifier fp32: one quantize at the input, a dequantize
    where stage 3 starts (one per float reader of that tensor: the block's conv and its
    shortcut), and the int8 part fully fused."""
    model, info = _resnet20()
    pol = Policy({l.name: LayerPolicy(1.0, 8, 8) if not l.name.startswith(("layer3", "fc", "linear"))
                  else LayerPolicy(1.0, 32, 32) for l in info.layers})
    calib = [torch.randn(8, *SHAPE)]
    c = apply_policy(model, pol, info, calib)
    ran = _optimized_ops(export_deployable(c, pol, info, calib_batches=calib))
    assert ran["QuantizeLinear"] == 1 and ran["DequantizeLinear"] == 2, ran
    assert ran["QLinearAdd"] == 6, ran          # the adds of stages 1 and 2
    assert ran["QLinearConv"] == 14 and ran["Conv"] + ran["FusedConv"] == 7, ran  # stage 3 float


def test_glue_follows_its_producers():
    """An Add is int8 only when every input comes from int8 layers."""
    model, info = _resnet20()
    fp32 = onnx.load_from_string(export_onnx(model, SHAPE))
    convs = [n.name for n in fp32.graph.node if n.op_type == "Conv"]
    chosen = int8_nodes(fp32, convs[:1])
    assert chosen is not None and convs[0] in chosen and convs[1] not in chosen
    adds = [n.name for n in fp32.graph.node if n.op_type == "Add"]
    assert not set(adds) & set(chosen)  # each add mixes in a float conv's output
    assert int8_nodes(fp32, None) is None  # None: everything, as quantize_static does


def test_lut_int8_kernel_runs_uint8_to_uint8():
    from latency_models.profiler import build_layer_module

    conv = [l for l in _resnet20()[1].layers if l.op == "conv"][1]
    module = build_layer_module(conv, conv.in_channels, conv.out_channels)
    shape = (conv.in_channels, *conv.in_hw)
    q = quantize_int8_qdq(export_onnx(module, shape), [np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)])
    kernel = int8_kernel_graph(q)
    sess = ort.InferenceSession(kernel, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(uint8)" and sess.get_outputs()[0].type == "tensor(uint8)"
    out = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, *shape), np.uint8)})[0]
    assert out.dtype == np.uint8 and out.shape[1] == conv.out_channels
    ran = _optimized_ops(kernel)
    assert ran["QLinearConv"] == 1 and ran["QuantizeLinear"] == 0 and ran["DequantizeLinear"] == 0, ran


class _StemAndBlock(torch.nn.Module):
    """A ResNet-18-like start (conv, ReLU, MaxPool, a residual block) whose convs start with the
    same zero bias once BN is folded: the exporter stores that bias once for all of them."""

    def __init__(self) -> None:
        super().__init__()
        conv = lambda cin: torch.nn.Sequential(torch.nn.Conv2d(cin, 32, 3, padding=1, bias=False),
                                               torch.nn.BatchNorm2d(32), torch.nn.ReLU())
        self.stem, self.pool = conv(3), torch.nn.MaxPool2d(2)
        self.a, self.b = conv(32), conv(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        return torch.relu(self.b(self.a(x)) + x)


def _runs(model: bytes) -> list[tuple[str, str, list[str]]]:
    """(domain, op type, inputs) of every node ORT runs after its optimisations."""
    return [(n.domain, n.op_type, list(n.input)) for n in optimized_graph(model).graph.node]


def test_an_int8_layer_leaves_its_float_neighbours_on_ort_fast_paths():
    """Only ``a`` int8. Before the fix, quantizing ``a`` turned the bias ``b`` and the stem share
    into a DequantizeLinear output (ORT then skips them for its NCHWc convs) and ORT's QDQ
    propagation moved the quantize above the MaxPool (uint8 MaxPool on the slow path)."""
    torch.manual_seed(0)
    net, shape = _StemAndBlock().eval(), (3, 32, 32)
    fp32 = export_onnx(net, shape)
    if not any(d == "com.microsoft.nchwc" for d, _, _ in _runs(fp32)):
        import pytest
        pytest.skip("this CPU has no NCHWc kernels (MLAS block size 1)")
    graph = onnx.load_from_string(fp32).graph
    shared = Counter(i for n in graph.node for i in n.input if i in {t.name for t in graph.initializer})
    assert max(shared.values()) > 1, "the exporter no longer shares the zero bias: the test lost its point"
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    calib = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)
    int8 = quantize_int8_qdq(fp32, [calib], int8_compute=[convs[1]])
    ran = _runs(int8)
    ops = Counter((d, op) for d, op, _ in ran)
    assert ops[("com.microsoft", "QLinearConv")] == 1, ops
    assert ops[("com.microsoft.nchwc", "Conv")] == 2, ops      # the stem and ``b``: NCHWc
    assert ops[("com.microsoft.nchwc", "MaxPool")] == 1, ops   # float MaxPool, quantized after it
    assert ops[("", "MaxPool")] == 0, ops
    # the float residual add reads the float MaxPool output, not its quantize round trip
    int8_graph = onnx.load_from_string(int8).graph
    dq_out = {n.output[0] for n in int8_graph.node if n.op_type == "DequantizeLinear"}
    add = next(n for n in int8_graph.node if n.op_type == "Add")
    assert not dq_out & set(add.input), list(add.input)
    # and the model still computes what the float one does (one int8 layer: small error)
    x = calib[:1]
    ref = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = ort.InferenceSession(int8, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_unshare_initializers_copies_each_extra_reader():
    from onnx import helper, TensorProto
    from latency_models.onnx_runtime import unshare_initializers

    bias = helper.make_tensor("b", TensorProto.FLOAT, [2], [0.0, 0.0])
    nodes = [helper.make_node("Add", ["x", "b"], ["y"], name="first"),
             helper.make_node("Add", ["y", "b"], ["z"], name="second")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])], [bias])
    model = helper.make_model(g)
    assert unshare_initializers(model) == 1
    assert model.graph.node[0].input[1] == "b" and model.graph.node[1].input[1] != "b"
    assert len(model.graph.initializer) == 2 and unshare_initializers(model) == 0


def test_profile_op_times_reads_what_each_op_type_costs_in_the_optimised_graph():
    """ORT's per-node profiler, read per run: a mixed ResNet-20 runs int8 convs, float convs and
    the quantize/dequantize glue between them, each counted once per node and timed > 0."""
    from latency_models.onnx_runtime import profile_op_times

    model, info = _resnet20()
    names = [l.name for l in info.layers]
    policy = Policy({n: LayerPolicy(1.0, *((8, 8) if i < len(names) // 2 else (32, 32)))
                     for i, n in enumerate(names)})
    calib = [torch.randn(8, *SHAPE)]
    onnx_bytes = export_deployable(apply_policy(model, policy, info, calib), policy, info, SHAPE, calib)
    times = profile_op_times(onnx_bytes, SHAPE, runs=5, warmup=2)
    ran = _optimized_ops(onnx_bytes)
    assert times.op_count["QLinearConv"] == ran["QLinearConv"] > 0, (times.op_count, ran)
    assert times.op_count["QuantizeLinear"] == ran["QuantizeLinear"] > 0
    assert "DequantizeLinear" in times.op_ms
    assert all(v > 0 for v in times.op_ms.values()), times.op_ms
    assert sum(times.op_ms.values()) < times.run_ms    # node times sit inside their run
    # node by node, in execution order: the first half of the convs int8, then float ones
    convs = [op for _, op, _ in times.nodes if op in ("QLinearConv", "Conv", "FusedConv")]
    assert len(convs) == ran["QLinearConv"] + ran["Conv"] + ran["FusedConv"]
    assert convs[0] == "QLinearConv" and convs[-1] != "QLinearConv", convs
    assert abs(sum(ms for _, _, ms in times.nodes) - sum(times.op_ms.values())) < 0.2 * times.run_ms


def test_an_fp32_layer_between_int8_layers_runs_fp32():
    """ORT's WeightBiasQuantization quantizes the float weights of a conv read through a
    DequantizeLinear whose output leads to a QuantizeLinear, so a policy's lone fp32 layer ran
    int8. Our sessions leave that optimizer out: the layer runs as a float conv."""
    model, info = _resnet20()
    lone = "layer2.1.conv1"
    assert lone in {l.name for l in info.layers}
    policy = Policy({l.name: LayerPolicy(1.0, *((32, 32) if l.name == lone else (8, 8))) for l in info.layers})
    calib = [torch.randn(8, *SHAPE)]
    onnx_bytes = export_deployable(apply_policy(model, policy, info, calib), policy, info, SHAPE, calib)
    float_convs = lambda ops: ops["Conv"] + ops["FusedConv"]   # noqa: E731 - NCHWc or not
    ran = _optimized_ops(onnx_bytes)
    assert float_convs(ran) == 1 and ran["QLinearConv"] == len(info.layers) - 2, ran   # - fc, - lone
    # what stock ORT does with the same graph (why the option exists; if this starts failing,
    # ORT no longer quantizes float weights on its own and the option can go)
    stock = _optimized_ops(onnx_bytes, disabled=())
    assert float_convs(stock) == 0 and stock["QLinearConv"] == len(info.layers) - 1, stock
    # and the project's session factory (which times and scores every model) leaves it out
    from latency_models.onnx_runtime import profile_op_times
    ours = profile_op_times(onnx_bytes, SHAPE, runs=2, warmup=1).op_count
    assert ours.get("Conv", 0) + ours.get("FusedConv", 0) == 1, ours


def _maxpool_reads_a_quantize(model: bytes, disabled: tuple[str, ...]) -> list[bool]:
    """Per MaxPool ORT runs: whether its input is a QuantizeLinear's output (a uint8 MaxPool)."""
    graph = optimized_graph(model, disabled_optimizers=disabled).graph
    quantized = {n.output[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    return [n.input[0] in quantized for n in graph.node if n.op_type in ("MaxPool", "NhwcMaxPool")]


def test_a_maxpool_between_an_fp32_and_an_int8_layer_stays_float():
    """fp32 conv → MaxPool → int8 conv: ORT's QDQ propagation moves the int8 layer's quantize
    above the MaxPool, which then runs on uint8 NCHW tensors (its slow path; mixed VGG policies
    ran up to 1.7× as long). Our sessions leave that transformer out: the MaxPool stays float."""
    torch.manual_seed(0)
    model = build_model("vgg", 1, 10).eval()
    info = trace_model(model, SHAPE, "vgg")
    names = [l.name for l in info.layers]
    assert names[:3] == ["features.0", "features.3", "features.7"], names   # a MaxPool before features.7
    policy = Policy({n: LayerPolicy(1.0, *((8, 8) if n == "features.7" else (32, 32))) for n in names})
    calib = [torch.randn(8, *SHAPE)]
    onnx_bytes = export_deployable(apply_policy(model, policy, info, calib), policy, info, SHAPE, calib)
    ours = _maxpool_reads_a_quantize(onnx_bytes, DISABLED_OPTIMIZERS)
    assert ours and not any(ours), ours
    # what stock ORT (with only WeightBiasQuantization off) does with the same graph: if this
    # starts failing, ORT no longer moves a quantize above a MaxPool and the option can go
    stock = _maxpool_reads_a_quantize(onnx_bytes, ("WeightBiasQuantization",))
    assert stock[0], stock
    # an all-int8 graph is the same either way (its MaxPools run uint8 NHWC, as they should)
    full = Policy.uniform(info, 1.0, 8, 8)
    int8_bytes = export_deployable(apply_policy(model, full, info, calib), full, info, SHAPE, calib)
    assert _optimized_ops(int8_bytes) == _optimized_ops(int8_bytes, ("WeightBiasQuantization",))


class _SaturatingConv(torch.nn.Module):
    """A conv whose every u8 × s8 pair product is near 255 × 127: a positive input at the top of
    its calibrated range and positive weights at the top of theirs. On a CPU whose int8 GEMM adds
    pairs into int16 (x86 without VNNI) such sums clamp at 32767 unless weights are 7-bit."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(16, 8, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(x))


def _ort_outputs(model: bytes, x: np.ndarray, optimized: bool) -> np.ndarray:
    sess = make_session(model, optimized=optimized)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_int8_kernels_compute_what_the_qdq_graph_says_on_this_cpu():
    """The fused int8 kernel ORT runs agrees with the graph's own definition (ORT with its
    optimizations off: dequantize, float conv, quantize). On the AMD EPYC (AVX2, no VNNI) 8-bit
    weights saturated (this test failed there before the 7-bit weights; make demo's VGG lost 0.8 pt)."""
    shape = (16, 8, 8)
    fp32 = export_onnx(_SaturatingConv().eval(), shape)
    x = np.ones((1, *shape), np.float32)
    q = quantize_int8_qdq(fp32, [x])
    fused = _ort_outputs(q, x, optimized=True)
    reference = _ort_outputs(q, x, optimized=False)
    exact = _ort_outputs(fp32, x, optimized=True)  # 64 … 144
    assert np.allclose(reference, exact, rtol=0.02, atol=1.0), (reference.max(), exact.max())
    assert np.allclose(fused, reference, rtol=0.02, atol=1.0), (fused.max(), reference.max())


def test_fine_tuned_int8_weights_are_the_weights_deployed():
    """The fake-quantized weights fine-tuning saw sit on the grid the deployed graph's quantizer
    writes on this CPU (±127, or ±64 where ORT quantizes to its reduced range), so deploying
    re-quantizes nothing: each conv's dequantized int8 weight equals its PyTorch weight."""
    from onnx import numpy_helper

    from automl.quant import float_deployable_copy

    model, info = _resnet20()
    pol = Policy({l.name: LayerPolicy(1.0, 8, 8) for l in info.layers})
    calib = [torch.randn(8, *SHAPE)]
    deployed_torch = float_deployable_copy(apply_policy(model, pol, info, calib))
    torch_weights = {n: m.weight.detach().numpy() for n, m in deployed_torch.named_modules()
                     if isinstance(m, torch.nn.Conv2d)}
    graph = onnx.load_from_string(export_deployable(apply_policy(_resnet20()[0], pol, info, calib),
                                                    pol, info, calib_batches=calib)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    compared = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or inits[node.input[0]].ndim != 4:
            continue
        q, scale = inits[node.input[0]].astype(np.float32), inits[node.input[1]]
        weight = q * scale.reshape(-1, 1, 1, 1)
        match = [n for n, w in torch_weights.items() if w.shape == weight.shape and np.allclose(w, weight, atol=1e-6)]
        assert match, f"{node.name}: deployed int8 weight matches no fine-tuned weight (re-quantized?)"
        compared += 1
    assert compared == len(torch_weights) > 0, (compared, len(torch_weights))
