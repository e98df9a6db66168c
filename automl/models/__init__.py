"""The model zoo and the registry of model factories.

A model is named either by a zoo name (``resnet20``) or, for local CLI use only, by a factory
import string ``package.module:function``. The gRPC service never imports a module a client
names: it only builds zoo names and factories the operator registered on the server.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .zoo import VGG, CifarResNet, LeNet5, MobileNetV2, ResNet18

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {
    "lenet5": lambda in_channels, num_classes: LeNet5(in_channels, num_classes),
    "vgg": lambda in_channels, num_classes: VGG(in_channels, num_classes),
    "resnet20": lambda in_channels, num_classes: CifarResNet(20, in_channels, num_classes),
    "resnet56": lambda in_channels, num_classes: CifarResNet(56, in_channels, num_classes),
    "mobilenetv2": lambda in_channels, num_classes: MobileNetV2(in_channels, num_classes, 1.0),
    "mobilenetv2_050": lambda in_channels, num_classes: MobileNetV2(in_channels, num_classes, 0.5),
    # ImageNet-shaped, for deployment-scale latency work at 3×224×224 (issue 14)
    "mobilenetv2_100": lambda in_channels, num_classes: MobileNetV2(in_channels, num_classes, 1.0,
                                                                    imagenet=True),
    "resnet18": lambda in_channels, num_classes: ResNet18(in_channels, num_classes),
}


def zoo_names() -> list[str]:
    return sorted(_REGISTRY)


def register_model(name: str, factory: ModelFactory) -> None:
    """Register a factory ``factory(in_channels=..., num_classes=...) -> nn.Module`` by name."""
    _REGISTRY[name] = factory


def register_factory_string(name: str, spec: str) -> None:
    """Register ``package.module:function`` under ``name`` (operator / local use only)."""
    register_model(name, _import_factory(spec))


def _import_factory(spec: str) -> ModelFactory:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"model factory {spec!r}: expected 'package.module:function'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model factory {spec!r}: cannot import ({exc})") from exc
    if not callable(factory):
        raise ValueError(f"model factory {spec!r}: {attr} is not callable")
    return factory


def is_known_model(name: str) -> bool:
    return name in _REGISTRY


def build_model(name: str, in_channels: int, num_classes: int, *,
                allow_import: bool = False) -> nn.Module:
    """Build a fresh, randomly initialised model.

    ``allow_import`` lets a local CLI user name ``package.module:function``; servers pass False.
    """
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif allow_import and ":" in name:
        factory = _import_factory(name)
    else:
        raise ValueError(f"model {name!r}: unknown (zoo: {zoo_names()})")
    return factory(in_channels=in_channels, num_classes=num_classes)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights without unpickling anything: safetensors, or ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path}: expected a state dict, got {type(state).__name__}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights file {path}: does not match the architecture "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model


__all__ = ["LeNet5", "VGG", "CifarResNet", "MobileNetV2", "ResNet18", "build_model", "load_weights",
           "register_model", "register_factory_string", "zoo_names", "is_known_model"]
