"""Datasets as in-memory tensors with seed-fixed train / validation / test splits.

Specs: ``digits`` (scikit-learn's digits, the embedded default, 16×16), ``digits@32`` (resized),
``mnist:PATH`` (an npz with x_train/y_train/x_test/y_test), ``mnist:PATH@32``. The validation
slice scores candidate policies during search; the test set is only used for final numbers.
Data lives in memory because these sets are small and it lets Ray share them zero-copy.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .core import HwcompressError

DEFAULT_DATASET = "digits"


class DataError(HwcompressError, ValueError):
    """A dataset spec or file is unusable; the message says which and why."""


@dataclass
class DatasetSplits:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    def calibration_batches(self, n_batches: int = 4, batch_size: int = 64) -> list[torch.Tensor]:
        """A few training batches (fixed order) for BN re-estimation and activation ranges."""
        return [self.x_train[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)
                if i * batch_size < len(self.x_train)]


def _split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    k = int(round(n * fraction))
    return perm[k:], perm[:k]


def _to_tensor(x: np.ndarray, size: int | None, scale: float) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x, dtype=np.float32) / scale)
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if size is not None and t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return ((t - 0.5) / 0.5).contiguous()


def parse_spec(spec: str) -> tuple[str, str | None, int | None]:
    """``name[:path][@size]`` -> (name, path, size)."""
    size: int | None = None
    if "@" in spec:
        spec, _, raw = spec.rpartition("@")
        try:
            size = int(raw)
        except ValueError:
            raise DataError(f"dataset {spec!r}: size {raw!r} after '@' is not an integer") from None
        if not 4 <= size <= 512:
            raise DataError(f"dataset {spec!r}: size {size} outside 4..512")
    name, _, path = spec.partition(":")
    return name, (path or None), size


def dataset_names() -> list[str]:
    return ["digits", "mnist:PATH"]


def load_dataset(spec: str = DEFAULT_DATASET, seed: int = 0, val_fraction: float = 0.15,
                 max_train: int | None = None) -> DatasetSplits:
    """Load a dataset by spec, with splits fixed by ``seed``."""
    name, path, size = parse_spec(spec)
    if name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        x = d.images.astype(np.float32)
        y = d.target.astype(np.int64)
        trainval, test = _split_indices(len(x), 0.2, seed=1234)  # the test set never moves
        x_trval, y_trval, x_test, y_test = x[trainval], y[trainval], x[test], y[test]
        pixel_scale, default_size = 16.0, 16
    elif name == "mnist":
        if not path:
            raise DataError("dataset 'mnist': give the npz path as mnist:PATH")
        p = Path(path)
        if not p.is_file():
            raise DataError(f"dataset {spec!r}: file {p} not found")
        try:
            with np.load(p, allow_pickle=False) as z:
                x_trval, y_trval = z["x_train"], z["y_train"].astype(np.int64)
                x_test, y_test = z["x_test"], z["y_test"].astype(np.int64)
        except (KeyError, ValueError, OSError) as exc:
            raise DataError(f"dataset {spec!r}: not an npz with x_train/y_train/x_test/y_test "
                            f"({exc})") from exc
        pixel_scale, default_size = 255.0, None
    else:
        raise DataError(f"dataset {spec!r}: unknown (known: {dataset_names()})")

    train_idx, val_idx = _split_indices(len(x_trval), val_fraction, seed)
    if max_train is not None:
        train_idx = train_idx[:max_train]
    size = size or default_size
    num_classes = int(max(y_trval.max(), y_test.max()) + 1)
    return DatasetSplits(
        name=spec,
        x_train=_to_tensor(x_trval[train_idx], size, pixel_scale),
        y_train=torch.from_numpy(y_trval[train_idx]),
        x_val=_to_tensor(x_trval[val_idx], size, pixel_scale),
        y_val=torch.from_numpy(y_trval[val_idx]),
        x_test=_to_tensor(x_test, size, pixel_scale),
        y_test=torch.from_numpy(y_test),
        num_classes=num_classes,
    )


def dataset_fingerprint(spec: str) -> str:
    """A cache key part that changes when the data behind a path spec changes: a hash of the
    file's bytes, not its path or modification time (a fresh copy of the same file, as a new
    machine or a restored volume has, keeps its trained baselines)."""
    name, path, size = parse_spec(spec)
    if path:
        return hashlib.sha1(f"{name}:{_file_digest(Path(path).resolve())}:{size}".encode()).hexdigest()[:12]
    return f"{name}{'' if size is None else size}"


@functools.lru_cache(maxsize=32)
def _digest_cached(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    """SHA-1 of a regular file's bytes, cached by (path, size, mtime); a device or a pipe (which
    would never end) is refused by name."""
    if not path.is_file():
        raise DataError(f"dataset file {path}: not a regular file")
    st = path.stat()
    return _digest_cached(path, st.st_size, st.st_mtime_ns)
