"""Built-in networks in plain torch (torchvision does not install beside the CPU torch here).

Each comes in an ImageNet form (224x224 input, 1000 classes) and a CIFAR form (32x32 input,
10 classes, with a stem that does not shrink the small image away); each can be built for another
number of classes and input channels (a network trained on a data set gets the data set's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000, cifar: bool = False, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if cifar:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        planes, layers = width, []
        for index, out_planes in enumerate([width, width * 2, width * 4, width * 8]):
            stride = 1 if index == 0 else 2
            layers.append(
                nn.Sequential(BasicBlock(planes, out_planes, stride), BasicBlock(out_planes, out_planes, 1))
            )
            planes = out_planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    def __init__(self, num_classes: int = 1000, cifar: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, 1, 1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers)
        if cifar:
            self.avgpool = nn.Identity()
            self.classifier = nn.Linear(512, num_classes)
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(),
                nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(),
                nn.Linear(4096, num_classes),
            )

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


# (expansion, output channels, repeats, first stride) as in the MobileNetV2 paper
_MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, cifar: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        stem_stride = 1 if cifar else 2
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, 32, 3, stem_stride)]
        channels = 32
        for index, (expand, cout, repeats, stride) in enumerate(_MOBILENET_V2):
            if cifar and index == 1:
                stride = 1  # CIFAR keeps the 32x32 map one stage longer
            for repeat in range(repeats):
                layers.append(InvertedResidual(channels, cout, stride if repeat == 0 else 1, expand))
                channels = cout
        layers.append(_conv_bn_relu6(channels, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


class TinyNet(nn.Module):
    """A four-convolution network (one depthwise, one residual) for quick tests and demos."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, groups=width, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.conv4 = nn.Conv2d(2 * width, 2 * width, 3, 1, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(2 * width)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x))) + x
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.relu(self.bn4(self.conv4(x)))
        return self.fc(self.pool(x).flatten(1))


@dataclass(frozen=True)
class BuiltinNetwork:
    name: str
    build: Callable[[int, int], nn.Module]  # (classes, input channels) -> the network, untrained
    input_shape: tuple[int, ...]
    classes: int  # the head's width as named (10 for the CIFAR forms)
    summary: str

    def factory(self) -> nn.Module:
        """The network as named: its own classes and input channels."""
        return self.build(self.classes, self.input_shape[1])


BUILTIN_NETWORKS: dict[str, BuiltinNetwork] = {
    net.name: net
    for net in [
        BuiltinNetwork("resnet18", lambda k, c: ResNet18(k, in_channels=c), (1, 3, 224, 224), 1000,
                       "ResNet-18, ImageNet"),
        BuiltinNetwork("resnet18-cifar", lambda k, c: ResNet18(k, cifar=True, in_channels=c), (1, 3, 32, 32), 10,
                       "ResNet-18, CIFAR-10"),
        BuiltinNetwork("resnet18-w16", lambda k, c: ResNet18(k, cifar=True, width=16, in_channels=c),
                       (1, 3, 32, 32), 10, "ResNet-18 at a quarter of the width (16), CIFAR-10"),
        BuiltinNetwork("vgg16", lambda k, c: VGG16(k, in_channels=c), (1, 3, 224, 224), 1000,
                       "VGG-16 with batch norm, ImageNet"),
        BuiltinNetwork("vgg16-cifar", lambda k, c: VGG16(k, cifar=True, in_channels=c), (1, 3, 32, 32), 10,
                       "VGG-16 with batch norm, CIFAR-10"),
        BuiltinNetwork("mobilenet_v2", lambda k, c: MobileNetV2(k, in_channels=c), (1, 3, 224, 224), 1000,
                       "MobileNetV2, ImageNet"),
        BuiltinNetwork("mobilenet_v2-cifar", lambda k, c: MobileNetV2(k, cifar=True, in_channels=c),
                       (1, 3, 32, 32), 10, "MobileNetV2, CIFAR-10"),
        BuiltinNetwork("tinynet", lambda k, c: TinyNet(k, in_channels=c), (1, 3, 16, 16), 10,
                       "4 convolutions, for tests"),
    ]
}
