"""The peers every answer is shown beside (automl/peers.py): Torch-Pruning tuned to a measured
latency, ORT's own int8, all recovered and judged alike."""

from __future__ import annotations

import onnx
import pytest
import torch

from automl.peers import (BUDGET_TOLERANCE, PeerAnswer, PeerRunner, bisect_to_latency,
                          format_side_by_side, hold_to_budget, tp_prune)
from automl.workflow import load_trained


def test_bisection_then_hold_meets_a_target_a_single_probe_misread():
    """The bisection trusts one probe per ratio; when that probe read low, the whole-graph
    re-check prunes more until the answer measures within the target."""
    true_ratio = lambda r: 1.0 - 0.8 * r  # noqa: E731 - latency falls with pruning
    ratio, _ = bisect_to_latency(lambda r: true_ratio(r) * 0.85, 0.5)  # every probe reads 15% low
    assert true_ratio(ratio) > 0.5 * BUDGET_TOLERANCE   # the bisection alone overshoots
    held = hold_to_budget(ratio, true_ratio, 0.5)
    assert true_ratio(held) <= 0.5 * BUDGET_TOLERANCE
    assert held == pytest.approx(ratio, abs=0.1)        # by a few small steps, not a jump


def test_unreachable_target_is_refused_naming_it():
    with pytest.raises(ValueError, match="unreachable"):
        bisect_to_latency(lambda r: 0.9, 0.2)


@pytest.fixture(scope="module")
def lenet():
    return load_trained("lenet5", "digits", seed=0, epochs=3, progress=False)


def test_tp_prune_removes_channels_and_keeps_the_classifier(lenet):
    pruned = tp_prune(lenet.model, lenet.data.input_shape, 0.5, global_pruning=False)
    before = sum(p.numel() for p in lenet.model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    assert after < 0.6 * before
    head = [m for m in pruned.modules() if m.__class__.__name__ == "Linear"][-1]
    assert head.out_features == 10


@pytest.mark.parametrize("global_pruning", [False, True])
def test_tp_prune_width_falls_with_the_ratio_on_narrow_residual_nets(global_pruning):
    """Torch-Pruning's own rounding left a 16/32/64-channel ResNet-20 whole at ratio 0.9 (a group
    rounded to zero channels is skipped), so no bisection could reach a latency target. Floored at
    ``round_to`` channels, the parameter count falls with the ratio and every width stays aligned."""
    from automl.models import build_model

    model = build_model("resnet20", 1, 10).eval()
    full = sum(p.numel() for p in model.parameters())
    counts = []
    for ratio in (0.3, 0.5, 0.7, 0.8, 0.9):
        pruned = tp_prune(model, (1, 16, 16), ratio, global_pruning)
        convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(c.out_channels >= 8 and c.out_channels % 8 == 0 for c in convs)
        counts.append(sum(p.numel() for p in pruned.parameters()))
    assert counts == sorted(counts, reverse=True) and counts[0] < full
    assert counts[-1] < 0.1 * full


def test_ort_ptq_peer_is_all_int8_and_keeps_accuracy(lenet):
    runner = PeerRunner(lenet, finetune_epochs=0.0, test_limit=300)
    graph, ratio = runner.graph("ort-ptq", 0.5)
    ops = {n.op_type for n in onnx.load_from_string(graph).graph.node}
    assert ratio is None and {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert runner.accuracy(graph) >= runner.accuracy(runner.fp32) - 0.03


def test_side_by_side_table_marks_each_answer_against_the_target():
    rows = [PeerAnswer("hwcompress", 0.98, 0.34, None, 0.0), PeerAnswer("ort-ptq", 0.97, 0.60, None, 1.0),
            PeerAnswer("tp-global", None, None, None, 2.0, "unreachable: pruning ratio 0.9 ...")]
    text = format_side_by_side(rows, 0.35, accuracy_original=0.985).splitlines()
    assert "unpruned fp32" in text[1]
    assert text[2].split()[0] == "hwcompress" and text[2].endswith("within")
    assert text[3].endswith("OVER")
    assert "unreachable" in text[4]
