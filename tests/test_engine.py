"""The compression engine: policies, pruning, quantization, export (issue 2)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from automl.compress import apply_policy, export_deployable, model_cost
from automl.core import LayerPolicy, Policy, PolicyError, kept_channels, policy_layer_shapes
from automl.models import build_model, zoo_names
from automl.quant import fake_quantize_weight
from automl.space import canonical_policy, layer_modules, policy_template, trace_model
from latency_models.onnx_runtime import run_onnx

SHAPE = (1, 16, 16)


def _random_policy(info, seed: int) -> Policy:
    rng = random.Random(seed)
    return Policy({layer.name: LayerPolicy(rng.choice([0.2, 0.4, 0.5, 0.75, 1.0]) if layer.prunable else 1.0,
                                           rng.choice([4, 6, 8, 32]), rng.choice([8, 32]))
                   for layer in info.layers})


def _expected_macs(info, policy, step):
    shapes = policy_layer_shapes(info, policy, step)
    total = 0
    for layer in info.layers:
        s = shapes[layer.name]
        if layer.op == "linear":
            total += s.in_channels * s.out_channels
        else:
            groups = s.out_channels if layer.op == "depthwise" else 1
            total += layer.out_hw[0] * layer.out_hw[1] * s.out_channels * (s.in_channels // groups) * layer.kernel ** 2
    return total


@pytest.mark.parametrize("name", zoo_names())
@pytest.mark.parametrize("in_channels,size", [(1, 16), (3, 32)])
def test_random_policy_on_every_zoo_model(name, in_channels, size):
    torch.manual_seed(0)
    model = build_model(name, in_channels, 10).eval()
    info = trace_model(model, (in_channels, size, size), name)
    policy = _random_policy(info, seed=len(name))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calib = [torch.randn(8, in_channels, size, size)]
    compressed = apply_policy(model, policy, info, calib, channel_step=4)

    x = torch.randn(2, in_channels, size, size)
    assert compressed(x).shape == model(x).shape == (2, 10)
    # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # channels were physically removed exactly as the policy says, per coupled group
    shapes = policy_layer_shapes(info, policy, 4)
    mods = layer_modules(compressed)
    for layer in info.layers:
        m = mods[layer.name]
        out_c = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        in_c = m.in_features if isinstance(m, nn.Linear) else m.in_channels
        assert (in_c, out_c) == (shapes[layer.name].in_channels, shapes[layer.name].out_channels), layer.name
    # MACs match the kept channels; params fall with them
    cost = model_cost(compressed, (in_channels, size, size), policy)
    assert cost.macs == _expected_macs(info, policy, 4)
    assert cost.params < info.total_params
    assert cost.size_mb < model_cost(model, (in_channels, size, size)).size_mb


def test_resnet_shortcuts_stay_consistent():
    model = build_model("resnet20", 1, 10).eval()
    info = trace_model(model, SHAPE, "resnet20")
    groups = info.prune_groups
    # the residual stream of stage 1 couples the stem, every block's conv2
    assert {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"} <= set(groups["conv1"])
    # stage 2 couples the projection shortcut with the block outputs
    assert "layer2.0.shortcut.0" in groups["layer2.0.conv2"]
    policy = Policy({"conv1": LayerPolicy(0.5), "layer2.0.conv2": LayerPolicy(0.25)})
    c = apply_policy(model, policy, info, None)
    assert c.conv1.out_channels == 8
    for blk in c.layer1:
        assert blk.conv2.out_channels == 8 and blk.conv1.in_channels == 8
    assert c.layer2[0].shortcut[0].out_channels == c.layer2[0].conv2.out_channels == 8
    assert c.layer2[0].shortcut[0].in_channels == 8
    c(torch.randn(1, *SHAPE))


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenetv2_050"])
def test_identity_policy_reproduces_outputs_exactly(name):
    model = build_model(name, 1, 10).eval()
    info = trace_model(model, SHAPE, name)
    c = apply_policy(model, policy_template(info), info, [torch.randn(8, *SHAPE)])
    x = torch.randn(4, *SHAPE)
    assert torch.equal(c(x), model(x))


def test_quantization_error_falls_as_bits_rise():
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3)
    err = {b: (fake_quantize_weight(w, b) - w).pow(2).mean().item() for b in (2, 4, 8)}
    assert err[2] > err[4] > err[8] > 0

    model = build_model("lenet5", 1, 10).eval()
    info = trace_model(model, SHAPE, "lenet5")
    x = torch.randn(16, *SHAPE)
    ref = model(x)
    out_err = {}
    for b in (2, 4, 8):
        pol = Policy({"features.4": LayerPolicy(1.0, b, b)})
        out_err[b] = (apply_policy(model, pol, info, [x], recalibrate_bn=False)(x) - ref).abs().mean().item()
    assert out_err[2] > out_err[4] > out_err[8]


@pytest.mark.parametrize("bad,needle", [
    ({"features.0": {"keep_ratio": 0}}, "outside (0, 1]"),
    ({"features.0": {"keep_ratio": 1.5}}, "outside (0, 1]"),
    ({"features.0": {"keep_ratio": float("nan")}}, "not a number"),
    ({"features.0": {"w_bits": 9}}, "w_bits=9"),
    ({"features.0": {"a_bits": 1}}, "a_bits=1"),
    ({"features.0": {"w_bits": 4.5}}, "w_bits=4.5"),
    ({"no.such.layer": {"keep_ratio": 0.5}}, "not a layer"),
    ({"classifier.5": {"keep_ratio": 0.5}}, "cannot be pruned"),
])
def test_bad_policies_name_the_layer(bad, needle):
    model = build_model("lenet5", 1, 10)
    info = trace_model(model, SHAPE, "lenet5")
    policy = Policy.from_dict({"layers": bad})
    with pytest.raises(PolicyError) as exc:
        apply_policy(model, policy, info)
    assert needle in str(exc.value)
    assert next(iter(bad)) in str(exc.value)


def test_policy_json_round_trip_and_bad_json():
    p = Policy({"a": LayerPolicy(0.5, 4, 8), "b": LayerPolicy(1.0, 32, 32)})
    assert Policy.from_json(p.to_json()) == p
    with pytest.raises(PolicyError, match="not valid JSON"):
        Policy.from_json("{nope")
    with pytest.raises(PolicyError, match="unknown fields"):
        Policy.from_dict({"layers": {"a": {"keep": 0.5}}})


def test_kept_channels_rounding():
    assert kept_channels(64, 0.5, 8) == 32
    assert kept_channels(64, 0.01, 8) == 8          # never below one step
    assert kept_channels(6, 0.01, 8) == 6           # ... nor above the layer
    assert kept_channels(6, 0.01, 1) == 1           # never below 1 channel
    assert kept_channels(64, 0.55, 8) == 32          # round(4.4) steps of 8


def test_finetune_step_changes_quantized_weights_through_ste():
    torch.manual_seed(0)
    model = build_model("lenet5", 1, 10).eval()
    info = trace_model(model, SHAPE, "lenet5")
    pol = Policy({l.name: LayerPolicy(0.5 if l.prunable else 1.0, 4, 4) for l in info.layers})
    x, y = torch.randn(32, *SHAPE), torch.randint(0, 10, (32,))
    c = apply_policy(model, pol, info, [x])
    masters = {n: m.parametrizations.weight.original.detach().clone() for n, m in layer_modules(c).items()}
    c.train()
    opt = torch.optim.SGD(c.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(c(x), y)
    loss.backward()
    for n, m in layer_modules(c).items():
        g = m.parametrizations.weight.original.grad
        assert g is not None and g.abs().sum() > 0, n
    opt.step()
    changed = [n for n, m in layer_modules(c).items()
               if not torch.equal(m.parametrizations.weight.original, masters[n])]
    assert changed == list(masters)


def test_export_matches_torch_and_original_untouched_after_export():
    torch.manual_seed(0)
    model = build_model("resnet20", 1, 10).eval()
    info = trace_model(model, SHAPE, "resnet20")
    pol = canonical_policy(info, Policy({l.name: LayerPolicy(0.5 if l.prunable else 1.0, 6, 32)
                                         for l in info.layers}))
    c = apply_policy(model, pol, info, [torch.randn(16, *SHAPE)])
    onnx_bytes = export_deployable(c, pol, info)
    x = torch.randn(3, *SHAPE)
    onnx_out = np.concatenate([run_onnx(onnx_bytes, x[i:i + 1].numpy()) for i in range(3)])
    np.testing.assert_allclose(onnx_out, c(x).detach().numpy(), rtol=1e-3, atol=1e-4)
    # exporting must not break the compressed model (it is still usable afterwards)
    assert model_cost(c, SHAPE, pol).macs > 0


def test_int8_layers_are_deployed_as_qdq():
    import onnx

    model = build_model("lenet5", 1, 10).eval()
    info = trace_model(model, SHAPE, "lenet5")
    pol = Policy({"features.4": LayerPolicy(1.0, 8, 8)})
    c = apply_policy(model, pol, info, [torch.randn(16, *SHAPE)])
    graph = onnx.load_from_string(export_deployable(c, pol, info, calib_batches=[torch.randn(16, *SHAPE)])).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_every_int8_layer_of_a_resnet_is_deployed_as_int8():
    """Module names must map to exporter nodes for nested names too (layer3.0.shortcut.0)."""
    from automl.compress import _onnx_nodes_for_layers
    from latency_models.onnx_runtime import export_onnx

    model = build_model("resnet20", 1, 10).eval()
    info = trace_model(model, SHAPE, "resnet20")
    nodes = _onnx_nodes_for_layers(export_onnx(model, SHAPE), info.layer_names)
    assert len(nodes) == len(info.layers)


def test_keep_ratio_one_is_untouched_off_the_step_grid():
    assert kept_channels(84, 1.0, 8) == 84
