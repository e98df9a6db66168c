"""Distillation runs the teacher once per training row (automl.train.TeacherLogits), in the
final fine-tune and across a search's candidate recoveries (automl.search.evaluator)."""

from __future__ import annotations

import torch
from torch import nn

from automl.core import Policy
from automl.models import build_model
from automl.search.evaluator import EvalPayload, LocalEvaluator, teacher_for
from automl.space import trace_model
from automl.train import TeacherLogits, train_steps

SHAPE = (1, 16, 16)


class _CountingTeacher(nn.Module):
    """A small frozen net that counts the rows it has been run on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 10))
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.net(x)


def _data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_teacher_logits_are_the_teachers_and_each_row_runs_once():
    teacher = _CountingTeacher().eval()
    x, _ = _data()
    cache = TeacherLogits(teacher, x)
    idx = torch.tensor([3, 7, 7, 150])
    with torch.no_grad():
        expected = teacher.net(x[idx])
    teacher.rows = 0
    assert torch.allclose(cache(idx), expected, atol=1e-6)
    assert teacher.rows == 3                      # row 7 drawn twice in the batch, run once
    cache(torch.tensor([7, 150, 20]))
    assert teacher.rows == 4 and cache.rows_computed == 4


def test_three_epochs_of_distillation_run_the_teacher_over_the_data_once():
    teacher = _CountingTeacher().eval()
    x, y = _data()
    student = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 10))
    before = [p.detach().clone() for p in student.parameters()]
    train_steps(student, x, y, steps=3 * 4, batch_size=50, progress=False, teacher=teacher)
    assert teacher.rows == len(x)                 # not 3 × len(x)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_a_teacher_cache_refuses_another_training_set():
    x, y = _data()
    cache = TeacherLogits(_CountingTeacher().eval(), x)
    other = x.clone()
    student = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 10))
    try:
        train_steps(student, other, y, steps=1, progress=False, teacher=cache)
    except ValueError as exc:
        assert "teacher" in str(exc)
    else:
        raise AssertionError("a cache over other rows was accepted")


def test_search_candidates_share_the_teachers_logits():
    """Every candidate's recovery draws the same seeded rows: the second candidate runs no
    teacher at all."""
    model = build_model("lenet5", 1, 10).eval()
    info = trace_model(model, SHAPE, "lenet5")
    x, y = _data(400)
    payload = EvalPayload(model, info, x[:50], y[:50], [x[:32]], x, y, channel_step=4,
                          recovery_steps=3)
    evaluator = LocalEvaluator(payload)
    half = Policy.uniform(info, 0.5, 32, 32)
    first = evaluator.evaluate([half])[0]
    assert first["error"] is None
    cache = teacher_for(payload)
    seen = cache.rows_computed
    assert 0 < seen <= 3 * 64
    evaluator.evaluate([Policy.uniform(info, 0.75, 32, 32)])
    assert teacher_for(payload).rows_computed == seen


class _ViewsItsFeatureMap(nn.Module):
    """A user's net that ``.view``s a conv output: NHWC strides refuse that view."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


def test_training_runs_channels_last_where_the_model_accepts_it_and_hands_back_nchw():
    from safetensors.torch import save

    from automl.train import training_memory_format

    torch.manual_seed(0)
    x, y = torch.randn(96, *SHAPE), torch.randint(0, 10, (96,))
    cnn = build_model("resnet20", 1, 10)
    bn = next(m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    assert training_memory_format(cnn, x) == torch.channels_last
    assert torch.equal(bn.running_mean, stats)   # the probe sample moved no BN statistics
    user = _ViewsItsFeatureMap()
    assert training_memory_format(user, x) == torch.contiguous_format
    for model in (build_model("resnet20", 1, 10), user):
        before = [p.detach().clone() for p in model.parameters()]
        train_steps(model, x, y, 3, batch_size=32, progress=False)
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
        assert all(p.is_contiguous() for p in model.parameters())
        save(dict(model.state_dict()))            # safetensors refuses non-contiguous tensors


def test_training_until_plateau_stops_after_patience_and_keeps_the_best_epoch(digits):
    from automl.models import build_model
    from automl.train import evaluate_accuracy, train_until_plateau

    torch.manual_seed(0)
    model = build_model("lenet5", digits.in_channels, digits.num_classes)
    got = train_until_plateau(model, digits, max_epochs=30, patience=2)
    assert got.epochs_run == len(got.val_accuracy_per_epoch) < 30
    assert got.best_val_accuracy == max(got.val_accuracy_per_epoch)
    assert got.epochs_run - got.best_epoch == 2          # stopped two epochs without a gain
    assert evaluate_accuracy(model, digits.x_val, digits.y_val) == got.best_val_accuracy
