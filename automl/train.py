"""Training a baseline, fine-tuning and measuring accuracy.

Baselines are cached by (model, dataset, seed, epochs) as safetensors so the demo, the tests and
every search job share one trained model instead of retraining.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import DatasetSplits, dataset_fingerprint
from .models import build_model, load_weights


def cache_dir() -> Path:
    """``$HWCOMPRESS_CACHE`` or ``~/.cache/hwcompress``."""
    path = Path(os.environ.get("HWCOMPRESS_CACHE", Path.home() / ".cache" / "hwcompress"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _batch_indices(n: int, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None):
    for idx in _batch_indices(len(x), batch_size, generator):
        yield x[idx], y[idx]


class TeacherLogits:
    """A frozen teacher's outputs on the rows of one training set, each computed the first time
    the row is drawn and reused after.

    Why: distillation ran the teacher on every batch, and for a student pruned to a third of
    the teacher's work that forward pass is about half of each step. The teacher is in eval mode
    and never trained, so a row's logits do not change: the final fine-tune's 2nd and 3rd epochs
    and every search candidate's recovery (all drawn in the same seeded order) reuse them. Memory:
    one row of logits per training image (MNIST: 2 MB)."""

    def __init__(self, teacher: nn.Module, x: torch.Tensor) -> None:
        self.teacher, self.x = teacher.eval(), x
        self.logits: torch.Tensor | None = None
        self.known = torch.zeros(len(x), dtype=torch.bool)

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        missing = idx[~self.known[idx]].unique()
        if len(missing):
            out = self.teacher(self.x[missing])
            if self.logits is None:
                self.logits = torch.empty(len(self.x), *out.shape[1:], dtype=out.dtype)
            self.logits[missing] = out
            self.known[missing] = True
        assert self.logits is not None
        return self.logits[idx]

    @property
    def rows_computed(self) -> int:
        return int(self.known.sum())


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = 0
    for xb, yb in _batches(x, y, batch_size, None):
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was_training)
    return correct / max(1, len(x))


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, ce: torch.Tensor,
                      temperature: float = 4.0, kd_weight: float = 0.9) -> torch.Tensor:
    """``kd_weight`` × T² × KL(teacher ‖ student) on outputs softened by T, + the rest × ``ce``."""
    soft = torch.log_softmax(teacher_logits / temperature, dim=1)
    kd = nn.functional.kl_div(torch.log_softmax(logits / temperature, dim=1), soft,
                              reduction="batchmean", log_target=True) * temperature ** 2
    return kd_weight * kd + (1 - kd_weight) * ce


def train_epochs(model: nn.Module, data: DatasetSplits, epochs: float, lr: float = 0.05,
                 optimizer: str = "sgd", batch_size: int = 64, seed: int = 0,
                 progress: bool = True, desc: str = "train",
                 teacher: "nn.Module | TeacherLogits | None" = None) -> nn.Module:
    """Train in place on ``data``'s training split for ``epochs`` (fractional allowed)."""
    steps_per_epoch = max(1, (len(data.x_train) + batch_size - 1) // batch_size)
    return train_steps(model, data.x_train, data.y_train, int(round(epochs * steps_per_epoch)),
                       lr=lr, optimizer=optimizer, batch_size=batch_size, seed=seed,
                       progress=progress, desc=desc, teacher=teacher)


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 0.05,
                optimizer: str = "sgd", batch_size: int = 64, seed: int = 0,
                progress: bool = True, desc: str = "train",
                teacher: "nn.Module | TeacherLogits | None" = None,
                temperature: float = 4.0, kd_weight: float = 0.9) -> nn.Module:
    """``steps`` optimizer steps over shuffled epochs of (x, y), cosine LR, in place.

    With a ``teacher`` the loss is knowledge distillation (Hinton et al.): ``kd_weight`` × the
    KL divergence to the teacher's softened outputs (× T², so its gradients keep their scale)
    + the rest × cross-entropy on the labels: a compressed model recovers faster from its
    original's outputs than from labels alone. A module teacher is wrapped in
    :class:`TeacherLogits` over ``x`` (each row's logits computed once); pass one built over the
    same ``x`` to share it between calls."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    memory_format = training_memory_format(model, x)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4,
                                                     nesterov=True)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        raise ValueError(f"optimizer {optimizer!r}: expected 'sgd' or 'adam'")
    total = max(1, int(steps))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    loss_fn = nn.CrossEntropyLoss()
    if isinstance(teacher, nn.Module):
        teacher = TeacherLogits(teacher, x)
    elif teacher is not None and teacher.x is not x:
        raise ValueError("teacher: its logits are over another training set than x")
    model.train()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    step = 0
    while step < total:
        for idx in _batch_indices(len(x), batch_size, gen):
            xb, yb = x[idx].contiguous(memory_format=memory_format), y[idx]
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            if teacher is not None:
                loss = distillation_loss(logits, teacher(idx), loss, temperature, kd_weight)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= total:
                break
    bar.close()
    model.to(memory_format=torch.contiguous_format)  # export, pruning and safetensors expect it
    model.eval()
    return model


def training_memory_format(model: nn.Module, x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for image models that accept it (``model`` converted in place),
    else the default layout.

    Why: PyTorch's CPU convolutions train faster in NHWC (oneDNN's native layout) than in NCHW:
    every training here (baseline, each candidate's recovery, the final fine-tune) gains, most
    for MobileNetV2's depthwise convolutions. A user's module may ``.view`` a feature map, which
    NHWC strides refuse: one sample is run in eval mode first (no BN statistics move) and the
    default layout kept if it fails.

    Measured on the idle 2-core machine (bench/train_speed.py, BENCHMARKS.md): 1.40x / 1.20x at
    one thread (a candidate's recovery in a Ray worker) and 1.26x / 1.21x at two (the baseline,
    the final fine-tune) for MobileNetV2-0.5 / ResNet-20. (An earlier two-thread reading of
    0.93x was the machine oversubscribed by three other jobs.)"""
    if x.dim() != 4 or len(x) == 0:
        return torch.contiguous_format
    was_training = model.training
    model.to(memory_format=torch.channels_last)
    try:
        model.eval()
        with torch.no_grad():
            model(x[:1].contiguous(memory_format=torch.channels_last))
    except RuntimeError:
        model.to(memory_format=torch.contiguous_format)
        return torch.contiguous_format
    finally:
        model.train(was_training)
    return torch.channels_last


DEFAULT_FINETUNE_EPOCHS = 3.0
"""The final recovery's default length. The old 0.3 epoch left searched MobileNetV2-0.5 policies
at 25% latency below plain uniform pruning (issue 12); with 3, distilled, searched MobileNetV2-0.5
answers lose 0.1-0.5 pt at 0.5x-0.25x of its latency (bench/pareto.py, BENCHMARKS.md)."""


DEFAULT_RECOVERY_STEPS = 200
"""Distillation steps each search candidate gets before it is scored (see ``recover_steps``)."""


def finetune(model: nn.Module, data: DatasetSplits, epochs: float = DEFAULT_FINETUNE_EPOCHS,
             lr: float = 0.01, seed: int = 0, progress: bool = False,
             teacher: nn.Module | None = None) -> nn.Module:
    """Recovery of a compressed model: cosine-scheduled SGD, distilled from ``teacher`` (the
    uncompressed original) when given; fake-quant layers train through their STE. BN
    statistics are the caller's (``apply_policy`` re-estimates them)."""
    return train_epochs(model, data, epochs, lr=lr, seed=seed, progress=progress,
                        desc="fine-tune" + (" (distilled)" if teacher is not None else ""),
                        teacher=teacher)


def recover_steps(model: nn.Module, teacher: "nn.Module | TeacherLogits", x: torch.Tensor,
                  y: torch.Tensor, steps: int, lr: float = 0.01, seed: int = 0) -> nn.Module:
    """A short, budgeted recovery before a search candidate is scored: ``steps`` steps of
    distillation from ``teacher``. Accuracy right after pruning is near chance at aggressive
    budgets for every candidate, so it cannot rank them. How well this ranks them as the final
    fine-tune does is bench/signal_rank.py's question (BENCHMARKS.md, issue 12 part 3)."""
    if steps <= 0:
        return model
    return train_steps(model, x, y, steps, lr=lr, seed=seed, progress=False, teacher=teacher)


def evaluate_onnx_accuracy(onnx_model: bytes, x: torch.Tensor, y: torch.Tensor,
                           limit: int | None = None, threads: int = 1) -> float:
    """Top-1 accuracy of the deployed ONNX graph itself (int8 kernels as ORT runs them, with
    the activation ranges it calibrated), one image per call as it was exported."""
    from latency_models.onnx_runtime import make_session

    sess = make_session(onnx_model, threads)
    name = sess.get_inputs()[0].name
    n = len(x) if limit is None else min(len(x), limit)
    xs = x[:n].numpy().astype("float32")
    correct = 0
    for i in range(n):
        correct += int(sess.run(None, {name: xs[i:i + 1]})[0].argmax() == int(y[i]))
    return correct / max(1, n)


def architecture_fingerprint(model: nn.Module) -> str:
    """Changes when a model's parameter names or shapes change, so a user who edits the
    factory behind a name never gets a stale cached baseline."""
    import hashlib

    sig = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha1(sig.encode()).hexdigest()[:10]


def baseline_cache_path(model_name: str, dataset: str, seed: int, epochs: int, arch: str = "",
                        train_images: int | None = None) -> Path:
    """Where the baseline of (model, data, seed, epochs) is cached. ``train_images`` is part of
    the key: a baseline trained on a 10k-image subset (``max_train``) is not the full-data one."""
    safe = model_name.replace(":", "_").replace("/", "_")
    n = "" if train_images is None else f"-n{train_images}"
    return (cache_dir() / "baselines"
            / f"{safe}-{arch}-{dataset_fingerprint(dataset)}{n}-s{seed}-e{epochs}.safetensors")


def pretrained_model(model_name: str, data: DatasetSplits, seed: int = 0, epochs: int = 10,
                     lr: float = 0.05, progress: bool = True, allow_import: bool = False) -> nn.Module:
    """Return a trained baseline, training it once and caching it by (model, dataset content,
    training images, seed, epochs)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = build_model(model_name, data.in_channels, data.num_classes, allow_import=allow_import)
    path = baseline_cache_path(model_name, data.name, seed, epochs, architecture_fingerprint(model),
                               train_images=len(data.x_train))
    if path.is_file():
        return load_weights(model, path).eval()
    train_epochs(model, data, epochs, lr=lr, seed=seed, progress=progress,
                 desc=f"train {model_name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return model.eval()


@dataclass
class PlateauTraining:
    """How a baseline trained until validation stopped improving went: what a figure made on
    it must state (epochs run, the epoch kept, its validation accuracy)."""

    epochs_run: int
    best_epoch: int
    best_val_accuracy: float
    val_accuracy_per_epoch: list[float]
    wall_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def train_until_plateau(model: nn.Module, data: DatasetSplits, max_epochs: int = 40,
                        patience: int = 3, lr: float = 0.05, lr_decay: float = 0.5,
                        batch_size: int = 64, seed: int = 0,
                        on_epoch: Callable[[int, float], None] | None = None) -> PlateauTraining:
    """Train in place until validation accuracy has not improved for ``patience`` epochs (or
    ``max_epochs``), and keep the best epoch's weights.

    Each epoch is one cosine cycle from the current rate (SGDR's warm restarts), so every
    validation reading is taken at the end of an annealed cycle; the rate is multiplied by
    ``lr_decay`` after each epoch that did not improve. Why: a compression benchmark's baseline
    must be trained as far as its data allows, else compression "costs" accuracy the baseline
    never had and a fine-tune can even gain on it."""
    import copy
    import time

    t0 = time.perf_counter()
    steps = max(1, (len(data.x_train) + batch_size - 1) // batch_size)
    best_acc, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history: list[float] = []
    epoch, since_best = 0, 0
    while epoch < max_epochs and since_best < patience:
        train_steps(model, data.x_train, data.y_train, steps, lr=lr, batch_size=batch_size,
                    seed=seed + epoch, progress=False)
        acc = evaluate_accuracy(model, data.x_val, data.y_val)
        history.append(acc)
        epoch += 1
        if on_epoch is not None:
            on_epoch(epoch, acc)
        if acc > best_acc:
            best_acc, best_epoch, since_best = acc, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            lr *= lr_decay
    model.load_state_dict(best_state)
    model.eval()
    return PlateauTraining(epoch, best_epoch, best_acc, history, time.perf_counter() - t0)
