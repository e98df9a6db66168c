"""Data splits, the model zoo's input flexibility, user models and safe weight loading."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from automl.data import DataError, load_dataset
from automl.models import build_model, load_weights, register_factory_string, zoo_names


def test_digits_splits_are_fixed_by_seed_and_disjoint():
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.x_val, c.x_val)
    # the test set never moves with the seed, and never overlaps the validation slice
    assert torch.equal(a.x_test, c.x_test)
    val = {t.numpy().tobytes() for t in a.x_val}
    assert not any(t.numpy().tobytes() in val for t in a.x_test)
    assert a.input_shape == (1, 16, 16) and load_dataset("digits@32").input_shape == (1, 32, 32)


def test_mnist_npz_by_path(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 255, (200, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 200, dtype=np.uint8),
             x_test=rng.integers(0, 255, (50, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, 50, dtype=np.uint8))
    d = load_dataset(f"mnist:{path}")
    assert d.input_shape == (1, 28, 28) and len(d.x_test) == 50 and len(d.x_train) + len(d.x_val) == 200
    assert d.x_train.min() >= -1 and d.x_train.max() <= 1


@pytest.mark.parametrize("spec,needle", [("cifar", "unknown"), ("mnist", "npz path"),
                                         ("mnist:/no/such.npz", "not found"), ("digits@x", "not an integer")])
def test_bad_dataset_specs(spec, needle):
    with pytest.raises(DataError, match=needle):
        load_dataset(spec)


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_takes_one_or_three_channels_any_size(name):
    for c, s in ((1, 16), (1, 28), (3, 32)):
        assert build_model(name, c, 7)(torch.randn(2, c, s, s)).shape == (2, 7)


def test_user_factory_and_safe_weights(tmp_path, monkeypatch):
    pkg = tmp_path / "usermodels.py"
    pkg.write_text(textwrap.dedent("""
        import torch.nn as nn
        def tiny(in_channels, num_classes):
            return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("usermodels:tiny", 1, 10, allow_import=True)
    with pytest.raises(ValueError, match="unknown"):
        build_model("usermodels:tiny", 1, 10)  # servers never import what a client names
    register_factory_string("tiny", "usermodels:tiny")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    from safetensors.torch import save_file
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    for f in ("w.pt", "w.safetensors"):
        loaded = load_weights(build_model("tiny", 1, 10), tmp_path / f)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    # a pickled object (not a state dict) is refused by weights_only loading
    torch.save({"m": model}, tmp_path / "evil.pt")
    with pytest.raises(Exception):
        load_weights(build_model("tiny", 1, 10), tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="does not match"):
        load_weights(build_model("lenet5", 1, 10), tmp_path / "w.pt")


def test_lenet5_pool_matches_adaptive_where_it_divides_and_exports_at_28x28():
    """LeNet-5's 4×4 pool equals AdaptiveAvgPool2d(4) on 8×8/16×16 features (so cached baselines
    keep their numbers) and, unlike it, exports to ONNX at MNIST's 28×28 (14×14 features)."""
    import onnxruntime as ort

    from automl.models.zoo import BinsAvgPool2d
    from latency_models.onnx_runtime import export_onnx

    pool, adaptive = BinsAvgPool2d(4), torch.nn.AdaptiveAvgPool2d(4)
    for size in (4, 8, 16):
        x = torch.randn(2, 3, size, size)
        assert torch.allclose(pool(x), adaptive(x))
    assert pool(torch.randn(1, 3, 14, 14)).shape[-2:] == (4, 4)
    model = build_model("lenet5", 1, 10).eval()
    session = ort.InferenceSession(export_onnx(model, (1, 28, 28)))
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.allclose(out, model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_baseline_cache_key_follows_the_data_not_the_file_copy(tmp_path):
    """A fresh copy of the same npz (new path, new mtime) keeps its trained baselines; other
    bytes, or a subset of the training images (max_train), get another baseline."""
    import os
    import numpy as np
    from automl.data import dataset_fingerprint, load_dataset
    from automl.train import baseline_cache_path

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (60, 8, 8), dtype=np.uint8), "y_train": np.arange(60) % 10,
              "x_test": rng.integers(0, 255, (20, 8, 8), dtype=np.uint8), "y_test": np.arange(20) % 10}
    a, b = tmp_path / "a.npz", tmp_path / "copy" / "b.npz"
    b.parent.mkdir()
    np.savez(a, **arrays)
    b.write_bytes(a.read_bytes())
    os.utime(b, ns=(1, 1))
    assert dataset_fingerprint(f"mnist:{a}") == dataset_fingerprint(f"mnist:{b}")
    arrays["y_test"] = arrays["y_test"][::-1].copy()
    c = tmp_path / "c.npz"
    np.savez(c, **arrays)
    assert dataset_fingerprint(f"mnist:{c}") != dataset_fingerprint(f"mnist:{a}")

    full, subset = load_dataset(f"mnist:{a}"), load_dataset(f"mnist:{a}", max_train=10)
    paths = {baseline_cache_path("lenet5", d.name, 0, 2, "arch", train_images=len(d.x_train))
             for d in (full, subset)}
    assert len(paths) == 2
