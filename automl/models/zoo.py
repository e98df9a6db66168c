"""Our model zoo (no torchvision): small CIFAR-style nets that take 1- or 3-channel input of any
reasonable size, so they run on digits (16×16), MNIST (28×28) or CIFAR-like (32×32) data, and
the ImageNet-shaped nets users deploy at 3×224×224 (MobileNetV2-1.0 with the stride-2 stem,
ResNet-18 with the 7×7 stem and max-pool), whose random weights serve latency work."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                  act: type[nn.Module] = nn.ReLU) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), act(inplace=True)]


class BinsAvgPool2d(nn.Module):
    """Average pooling to ``size``×``size`` bins for any input ≥ ``size``, as a plain AvgPool
    (stride ⌊H/size⌋, kernel H − (size−1)·stride) that every ONNX exporter and runtime knows.
    Identical to ``AdaptiveAvgPool2d(size)`` when ``size`` divides the input; otherwise its
    windows overlap a little where the adaptive ones would (ONNX has no adaptive pooling, so
    ``AdaptiveAvgPool2d(4)`` at 14×14, LeNet-5 on 28×28 MNIST, failed to export)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        sh, sw = h // self.size, w // self.size
        return F.avg_pool2d(x, (h - (self.size - 1) * sh, w - (self.size - 1) * sw), (sh, sw))

    def extra_repr(self) -> str:
        return f"size={self.size}"


class LeNet5(nn.Module):
    """LeNet-5 with 'same' padding and a pool to 4×4 bins, so any input size ≥ 8 works."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            BinsAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 4 * 4, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class VGG(nn.Module):
    """A narrow CIFAR-style VGG: 3×3 conv-BN-ReLU blocks, max-pools, global pool, one FC."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10,
                 cfg: tuple[int | str, ...] = (32, 32, "M", 64, 64, "M", 128, 128, "M", 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += _conv_bn_relu(c, int(v))
                c = int(v)
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block; the shortcut is a 1×1 conv + BN when the shape changes (option B),
    which keeps residual channels prunable as one coupled group."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet-(6n+2): a 3×3 stem, 3 stages of n blocks (16, 32, 64 channels)."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages: list[nn.Module] = []
        cin = 16
        for i, cout in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += _conv_bn_relu(cin, hidden, 1, act=nn.ReLU6)
        layers += _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with a width multiplier. CIFAR-style by default (stem and first stages at
    stride 1, two fewer downsamplings than ImageNet's) so small inputs keep spatial extent;
    ``imagenet=True`` is the paper's network (stride-2 stem, 32× downsampling) for 224×224."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
    IMAGENET_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                         (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0,
                 last_channel: int = 1280, imagenet: bool = False) -> None:
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult))
        stem_stride = 2 if imagenet else 1
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(in_channels, cin, 3, stem_stride,
                                                                act=nn.ReLU6))]
        for t, c, n, s in (self.IMAGENET_SETTINGS if imagenet else self.SETTINGS):
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(nn.Sequential(*_conv_bn_relu(cin, self.last_channel, 1, act=nn.ReLU6)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(self.last_channel, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


class ResNet18(nn.Module):
    """ResNet-18 as on ImageNet: 7×7 stride-2 stem, 3×3 stride-2 max-pool, four stages of two
    basic blocks (64, 128, 256, 512 channels), global pool, one FC."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages: list[nn.Module] = []
        cin = 64
        for i, cout in enumerate((64, 128, 256, 512)):
            stages.append(nn.Sequential(BasicBlock(cin, cout, 1 if i == 0 else 2),
                                        BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.pool(x)))
