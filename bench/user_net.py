"""A net outside the zoo, loaded the way a user's own model is (``--model
bench.user_net:hybrid_net``): the "user's own nn.Module" of issue 14's unseen-net check.

It mixes what the zoo's families keep apart — a 5×5 dense conv, a 5×5 depthwise-separable
block, a residual pair of 3×3 convs, a 1×1 expansion — so no profiled family shares its layer
shapes, and its factory has the signature every model factory has: ``f(in_channels,
num_classes)``.
"""

from __future__ import annotations

import torch
from torch import nn


def _cbr(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class _ResidualPair(nn.Module):
    """Two 3×3 convs and an identity shortcut (its channels form one coupled group)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + x)


class HybridNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_cbr(in_channels, 32, 3, 2),
            *_cbr(32, 48, 5), nn.MaxPool2d(2),
            *_cbr(48, 48, 5, groups=48), *_cbr(48, 96, 1),
            _ResidualPair(96),
            *_cbr(96, 192, 1), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(192, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def hybrid_net(in_channels: int, num_classes: int) -> nn.Module:
    return HybridNet(in_channels, num_classes)
