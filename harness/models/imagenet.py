"""ImageNet-shaped models for GPU latency: ResNet-50, MobileNetV2 and EfficientNet-B0, written here because
torchvision has no CPU build for this torch (its PyPI wheel needs CUDA torch). Architectures and state-dict
keys follow torchvision's, so its published checkpoints (IMAGENET1K_V1) load unchanged; parameter counts
(25,557,032 / 3,504,872 / 5,288,548) are checked by the tests against torchvision's documentation."""

from __future__ import annotations

from torch import nn


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act=nn.ReLU) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: keys .0 (conv) and .1 (batch norm); the activation has none."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act(inplace=True)] if act else []))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:  # stride on the 3x3 conv (ResNet v1.5), as torchvision
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            layer = [Bottleneck(cin if b == 0 else width * 4, width, stride if b == 0 else 1) for b in range(blocks)]
            setattr(self, f"layer{i}", nn.Sequential(*layer))
            cin = width * 4
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: keys conv.<i> as torchvision (expansion, depthwise, linear projection + BN)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn_act(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))  # expansion, channels, repeats, first stride

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers, cin = [conv_bn_act(3, 32, 3, 2, act=nn.ReLU6)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_act(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = nn.SiLU(inplace=True), nn.Sigmoid()

    def forward(self, x):
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class MBConv(nn.Module):
    """EfficientNet block: keys block.<i> as torchvision; stochastic depth is training-only (identity here)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn_act(cin, hidden, 1, act=nn.SiLU)] if expand != 1 else []
        layers += [conv_bn_act(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU),
                   SqueezeExcitation(hidden, max(1, cin // 4)), conv_bn_act(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class EfficientNetB0(nn.Module):
    SETTINGS = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
                (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))  # t, k, s, in, out, n

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        stages = [conv_bn_act(3, 32, 3, 2, act=nn.SiLU)]
        for t, k, s, cin, cout, n in self.SETTINGS:
            stages.append(nn.Sequential(*[MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, t)
                                          for i in range(n)]))
        stages.append(conv_bn_act(320, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


ARCHITECTURES = {"resnet50": ResNet50, "mobilenet_v2": MobileNetV2, "efficientnet_b0": EfficientNetB0}


def seeded_state_dict(arch: str, images, seed: int = 0) -> dict:
    """Weights for latency-only cells when no published file is given: He-normal (fan-out) convolutions and
    linear layers from numpy's seeded generator (the same on every torch version), then each batch norm's
    statistics taken from `images` (float32, NCHW), so every layer sees normalized activations as in a
    trained net: no exploding ranges for fp16, no denormals, int8 ranges of a realistic shape."""
    import numpy as np
    import torch

    model = ARCHITECTURES[arch]()
    rng = np.random.default_rng(seed)
    state = {}
    for key, t in model.state_dict().items():
        if t.ndim >= 2:
            fan_out = t.shape[0] * int(np.prod(t.shape[2:]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_out), tuple(t.shape))
        elif key.endswith(("running_var", "weight")):  # batch-norm scale and variance
            value = np.ones(tuple(t.shape))
        else:  # biases, running means, num_batches_tracked
            value = np.zeros(tuple(t.shape))
        state[key] = torch.from_numpy(value).to(t.dtype)
    model.load_state_dict(state)
    model.eval()  # dropout and stochastic depth off; only the batch norms gather statistics
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the statistics of exactly these images
            m.train()
    with torch.no_grad():
        model(torch.from_numpy(np.ascontiguousarray(images)))
    return model.eval().state_dict()


def build_torch(spec, weights):
    """The source kind "imagenet:<arch>": a torchvision-layout state dict (published or seeded)."""
    import torch

    model = ARCHITECTURES[spec.builder.partition(":")[2]]()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()
