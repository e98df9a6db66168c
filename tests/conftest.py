"""Shared fixtures: a private cache dir so tests never read a developer's cached baselines
unless they ask for them, and small trained models reused across tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# timing budgets at a quarter (latency_models.timing): tests check numbers for sense, the
# benchmarks measure the noise floor at full length
os.environ.setdefault("HWCOMPRESS_TIMING_SCALE", "0.25")
os.environ.setdefault("HWCOMPRESS_CACHE", str(Path(__file__).resolve().parent.parent / ".hwcompress-cache" / "tests"))


@pytest.fixture(scope="session")
def digits():
    from automl.data import load_dataset
    return load_dataset("digits")


@pytest.fixture(scope="session")
def lenet_digits(digits):
    """LeNet-5 trained on digits (cached across runs by the baseline cache)."""
    from automl.workflow import load_trained
    return load_trained("lenet5", "digits", epochs=10, progress=False)


@pytest.fixture(scope="session")
def vgg_digits(digits):
    """VGG (narrow) after one epoch on digits: enough layers for latency to be clearly monotone in
    channels on the simulated accelerator, which LeNet-5's is not."""
    from automl.workflow import load_trained
    return load_trained("vgg", "digits", epochs=1, progress=False)
