"""The search space of a model: its layers traced once, and the channel coupling between them.

Tracing records every conv / depthwise conv / linear layer in execution order with its shapes,
MACs and parameters (:class:`automl.core.LayerInfo`). Coupling comes from torch-pruning's
dependency graph: layers whose outputs meet at a residual add, or a depthwise conv and the
conv that feeds it, must keep the same channels, so they form one prune group named after its
first layer (its *leader*, whose keep ratio the whole group follows).
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from .core import FLOAT_BITS, LayerInfo, LayerPolicy, ModelInfo, Policy

_ACTIVATIONS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.ReLU6: "relu6"}


def layer_op(module: nn.Module) -> str | None:
    """'conv', 'depthwise' or 'linear' for the layers we search; None for anything else."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
            return "depthwise"
        return "conv"
    return None


def layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module for every conv / linear layer (in definition order)."""
    return {name: m for name, m in model.named_modules() if layer_op(m) is not None}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _is_quant_helper(name: str) -> bool:
    """Fake-quant parts hang below a layer (``conv.act_quant``, ``conv.parametrizations...``)."""
    return ".parametrizations" in name or name.startswith("parametrizations") or name.endswith("act_quant")


def _record_calls(model: nn.Module, input_shape: tuple[int, int, int]):
    """Run one forward pass and record (name, module, input shape, output shape) of every leaf
    module in call order."""
    calls: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...], int, int]] = []
    handles = []
    for name, module in model.named_modules():
        if _is_quant_helper(name):
            continue
        if layer_op(module) is not None or len(list(module.children())) == 0:
            def hook(m, args, out, name=name):
                calls.append((name, m, tuple(args[0].shape), tuple(out.shape),
                              args[0].data_ptr(), out.data_ptr()))
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls


def _coupling(model: nn.Module, input_shape: tuple[int, int, int], output_layer: nn.Module):
    """(layer name -> prune group name, layer name -> input group name) from torch-pruning."""
    names = {m: n for n, m in model.named_modules()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *input_shape))
    out_group: dict[str, list[str]] = {}
    in_group: dict[str, list[str]] = {}
    for gi, group in enumerate(graph.get_all_groups(ignored_layers=[output_layer],
                                                     root_module_types=(nn.Conv2d, nn.Linear))):
        for item in group.items:
            module = item.dep.target.module
            if layer_op(module) is None or module not in names:
                continue
            bucket = out_group if graph.is_out_channel_pruning_fn(item.dep.handler) else (
                in_group if graph.is_in_channel_pruning_fn(item.dep.handler) else None)
            if bucket is not None:
                bucket.setdefault(f"g{gi}", []).append(names[module])
    return out_group, in_group


def _layers_in_call_order(calls: list, model_name: str) -> list[tuple[int, tuple]]:
    """(position in ``calls``, call) of each conv/linear layer, refusing a layer called twice
    (a shared layer cannot be compressed independently)."""
    seen: set[str] = set()
    ordered = []
    for i, c in enumerate(calls):
        if layer_op(c[1]) is None:
            continue
        if c[0] in seen:
            raise ValueError(f"layer {c[0]!r} is called twice in one forward pass; shared layers "
                             "cannot be compressed independently")
        seen.add(c[0])
        ordered.append((i, c))
    if not ordered:
        raise ValueError(f"model {model_name!r} has no conv or linear layer to compress")
    return ordered


def _group_leaders(out_groups: dict[str, list[str]], in_groups: dict[str, list[str]],
                   order: dict[str, int]) -> tuple[dict[str, str], dict[str, str]]:
    """(layer -> its output group's leader, layer -> the leader of the group feeding its input).
    A group is named after its first layer in execution order."""
    group_name: dict[str, str] = {}
    leader_of: dict[str, str] = {}    # raw torch-pruning group id -> leader name
    for gid, members in out_groups.items():
        leader = min(members, key=order.__getitem__)
        leader_of[gid] = leader
        for m in members:
            group_name[m] = leader
    input_group = {m: leader_of[gid] for gid, members in in_groups.items() if gid in leader_of
                   for m in members}
    return group_name, input_group


def _fused_after(calls: list, i: int, out_ptr: int) -> tuple[bool, str | None]:
    """(has BN, activation) fused into the layer at ``calls[i]``: only a BN / activation that
    consumes this layer's very output tensor (an activation after a residual add does not)."""
    has_bn, activation = False, None
    nxt = calls[i + 1:i + 3]
    if nxt and isinstance(nxt[0][1], nn.BatchNorm2d) and nxt[0][4] == out_ptr:
        has_bn = True
        out_ptr = nxt[0][5]
        nxt = nxt[1:]
    if nxt and type(nxt[0][1]) in _ACTIVATIONS and nxt[0][4] == out_ptr:
        activation = _ACTIVATIONS[type(nxt[0][1])]
    return has_bn, activation


def _geometry(module: nn.Module, in_shape, out_shape) -> dict:
    """Channels, kernel, stride, padding, groups, feature-map sizes and MACs of one layer."""
    if isinstance(module, nn.Linear):
        cin, cout = module.in_features, module.out_features
        return dict(in_channels=cin, out_channels=cout, kernel=1, stride=1, padding=0, groups=1,
                    in_hw=(1, 1), out_hw=(1, 1), macs=cin * cout)
    assert isinstance(module, nn.Conv2d)
    cin, cout, groups = module.in_channels, module.out_channels, module.groups
    kernel = int(module.kernel_size[0])
    out_hw = (int(out_shape[2]), int(out_shape[3]))
    return dict(in_channels=cin, out_channels=cout, kernel=kernel, stride=int(module.stride[0]),
                padding=int(module.padding[0]) if isinstance(module.padding, tuple) else 0,
                groups=groups, in_hw=(int(in_shape[2]), int(in_shape[3])), out_hw=out_hw,
                macs=out_hw[0] * out_hw[1] * cout * (cin // groups) * kernel * kernel)


def trace_model(model: nn.Module, input_shape: tuple[int, int, int], model_name: str = "model") -> ModelInfo:
    """Trace ``model`` once on an input of ``input_shape`` (C, H, W) into a :class:`ModelInfo`."""
    input_shape = tuple(int(v) for v in input_shape)  # type: ignore[assignment]
    calls = _record_calls(model, input_shape)
    ordered = _layers_in_call_order(calls, model_name)
    out_groups, in_groups = _coupling(model, input_shape, ordered[-1][1][1])
    group_name, input_group = _group_leaders(out_groups, in_groups,
                                             {c[0]: k for k, (_, c) in enumerate(ordered)})
    modules = dict(model.named_modules())
    layers: list[LayerInfo] = []
    for k, (i, (name, module, in_shape, out_shape, _, out_ptr)) in enumerate(ordered):
        has_bn, activation = _fused_after(calls, i, out_ptr)
        geometry = _geometry(module, in_shape, out_shape)
        group, in_group = group_name.get(name), input_group.get(name)
        multiplier = 1
        if in_group is not None:
            multiplier = max(1, geometry["in_channels"] // _out_channels(modules[in_group]))
        layers.append(LayerInfo(
            name=name, op=layer_op(module), **geometry,
            params=int(sum(p.numel() for p in module.parameters(recurse=False))),
            has_bn=has_bn, activation=activation, prune_group=group, prunable=group is not None,
            index=k, input_group=in_group, in_channel_multiplier=multiplier))
    num_classes = int(calls[-1][3][-1]) if calls else 0
    return ModelInfo(model_name=model_name, input_shape=input_shape, num_classes=num_classes,
                     layers=tuple(layers), total_macs=sum(layer.macs for layer in layers),
                     total_params=count_params(model))


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels  # type: ignore[return-value]


def policy_template(info: ModelInfo) -> Policy:
    """A valid full-size policy (every layer kept whole, float) for a user to edit."""
    return Policy({layer.name: LayerPolicy(1.0, FLOAT_BITS, FLOAT_BITS) for layer in info.layers})


def canonical_policy(info: ModelInfo, policy: Policy) -> Policy:
    """Copy each group leader's keep ratio to the group's other members, so a policy reads as
    what is applied (members of a coupled group cannot keep different channel counts)."""
    groups = info.prune_groups
    layers = dict(policy.layers)
    for members in groups.values():
        lead = policy[members[0]].keep_ratio
        for m in members[1:]:
            lp = policy[m]
            layers[m] = LayerPolicy(lead, lp.w_bits, lp.a_bits)
    return Policy(layers)
