"""MLPerf Tiny ResNet-8 (Keras original) as a PyTorch module, weights read from the .h5 with h5py.

The Keras model takes raw 0..255 RGB pixels in NHWC and ends in a softmax; both are kept so the twin
computes exactly what the original does. Keras `padding='same'` with stride 2 on an even input pads
only bottom/right (total padding 1), unlike PyTorch's symmetric padding=1, hence ZeroPad2d((0,1,0,1)).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

BN_EPS = 1e-3  # Keras default


def _conv(cin: int, cout: int, k: int, stride: int) -> nn.Module:
    if k == 3 and stride == 2:
        return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(cin, cout, 3, 2, 0))
    return nn.Conv2d(cin, cout, k, stride, k // 2)


class Stack(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, stride)
        self.bn1 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.conv2 = _conv(cout, cout, 3, 1)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.proj = _conv(cin, cout, 1, stride) if stride != 1 else nn.Identity()
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.proj(x) + y)


class ResNet8(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1)
        self.bn = nn.BatchNorm2d(16, eps=BN_EPS)
        self.relu = nn.ReLU()
        self.stack1 = Stack(16, 16, 1)
        self.stack2 = Stack(16, 32, 2)
        self.stack3 = Stack(32, 64, 2)
        self.pool = nn.AvgPool2d(8)
        self.dense = nn.Linear(64, 10)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):  # x: N x 32 x 32 x 3, raw pixels (the Keras input layout)
        x = self.relu(self.bn(self.conv(x.permute(0, 3, 1, 2))))
        x = self.stack3(self.stack2(self.stack1(x)))
        return self.softmax(self.dense(torch.flatten(self.pool(x), 1)))


def _conv_of(m: nn.Module) -> nn.Conv2d:
    return m[1] if isinstance(m, nn.Sequential) else m


# Keras layer names in creation order -> our modules (read off the .h5's model_config).
_CONVS = {"conv2d": "conv", "conv2d_1": "stack1.conv1", "conv2d_2": "stack1.conv2",
          "conv2d_3": "stack2.conv1", "conv2d_4": "stack2.conv2", "conv2d_5": "stack2.proj",
          "conv2d_6": "stack3.conv1", "conv2d_7": "stack3.conv2", "conv2d_8": "stack3.proj"}
_BNS = {"batch_normalization": "bn", "batch_normalization_1": "stack1.bn1",
        "batch_normalization_2": "stack1.bn2", "batch_normalization_3": "stack2.bn1",
        "batch_normalization_4": "stack2.bn2", "batch_normalization_5": "stack3.bn1",
        "batch_normalization_6": "stack3.bn2"}


def load_mlperf_h5(weights: Path) -> ResNet8:
    model = ResNet8()
    mods = dict(model.named_modules())
    with h5py.File(weights, "r") as f:
        w = f["model_weights"]

        def get(layer: str, var: str) -> torch.Tensor:
            return torch.from_numpy(np.asarray(w[layer][layer][f"{var}:0"], np.float32))

        with torch.no_grad():
            for layer, name in _CONVS.items():
                conv = _conv_of(mods[name])
                conv.weight.copy_(get(layer, "kernel").permute(3, 2, 0, 1))  # HWIO -> OIHW
                conv.bias.copy_(get(layer, "bias"))
            for layer, name in _BNS.items():
                bn = mods[name]
                for var, param in (("gamma", bn.weight), ("beta", bn.bias),
                                   ("moving_mean", bn.running_mean), ("moving_variance", bn.running_var)):
                    param.copy_(get(layer, var))
            model.dense.weight.copy_(get("dense", "kernel").T)
            model.dense.bias.copy_(get("dense", "bias"))
    return model.eval()


def build_torch(spec, weights: Path) -> ResNet8:
    """The source kind "resnet8": MLPerf Tiny's Keras weights."""
    return load_mlperf_h5(weights)
