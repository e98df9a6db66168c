"""Training a baseline, fine-tuning and measuring accuracy.

Baselines are cached by (model, dataset, seed, epochs) as safetensors so the demo, the tests and
every search job share one trained model instead of retraining.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(len(x), generator=generator) if generator is not None else torch.arange(len(x))
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


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


def train_epochs(model: nn.Module, data: DatasetSplits, epochs: float, lr: float = 0.05,
                 optimizer: str = "sgd", batch_size: int = 64, seed: int = 0,
                 progress: bool = True, desc: str = "train") -> nn.Module:
    """Train in place with cosine LR; ``epochs`` may be fractional (short fine-tunes)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4,
                                                     nesterov=True)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        raise ValueError(f"optimizer {optimizer!r}: expected 'sgd' or 'adam'")
    steps_per_epoch = max(1, (len(data.x_train) + batch_size - 1) // batch_size)
    total = max(1, int(round(epochs * steps_per_epoch)))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    step = 0
    while step < total:
        for xb, yb in _batches(data.x_train, data.y_train, batch_size, gen):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= total:
                break
    bar.close()
    model.eval()
    return model


def finetune(model: nn.Module, data: DatasetSplits, epochs: float = 1.0, lr: float = 0.01,
             seed: int = 0, progress: bool = False) -> nn.Module:
    """Short fine-tune of a compressed model (fake-quant layers train through their STE)."""
    return train_epochs(model, data, epochs, lr=lr, seed=seed, progress=progress, desc="fine-tune")


def architecture_fingerprint(model: nn.Module) -> str:
    """Changes when a model's parameter names or shapes change, so a user who edits the
    factory behind a name never gets a stale cached baseline."""
    import hashlib

    sig = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha1(sig.encode()).hexdigest()[:10]


def baseline_cache_path(model_name: str, dataset: str, seed: int, epochs: int, arch: str = "") -> Path:
    safe = model_name.replace(":", "_").replace("/", "_")
    return cache_dir() / "baselines" / f"{safe}-{arch}-{dataset_fingerprint(dataset)}-s{seed}-e{epochs}.safetensors"


def pretrained_model(model_name: str, data: DatasetSplits, seed: int = 0, epochs: int = 10,
                     lr: float = 0.05, progress: bool = True, allow_import: bool = False) -> nn.Module:
    """Return a trained baseline, training it once and caching it by (model, dataset, seed, epochs)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = build_model(model_name, data.in_channels, data.num_classes, allow_import=allow_import)
    path = baseline_cache_path(model_name, data.name, seed, epochs, architecture_fingerprint(model))
    if path.is_file():
        return load_weights(model, path).eval()
    train_epochs(model, data, epochs, lr=lr, seed=seed, progress=progress,
                 desc=f"train {model_name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return model.eval()
