"""Model cards a user would write for the zoo's resnet20: its ONNX export, and its state dict with a factory."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

PREPROCESS = """
[input]
shape = [3, 32, 32]
layout = "NCHW"

[preprocess]
scale = 0.00392156862745098   # 1/255
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
"""

FACTORY = '''"""A user's own model module: the card names `my_resnet:resnet20`."""
from harness.models.resnet_cifar import ResNetCifar


def resnet20():
    return ResNetCifar(20)
'''


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def card_text(name: str, source: str, path: str, extra: str = "", dataset: str = 'kind = "cifar10"') -> str:
    return (f'schema_version = 1\nname = "{name}"\nsource = "{source}"\npath = "{path}"\nnum_classes = 10\n'
            f"{extra}\n{PREPROCESS}\n[dataset]\n{dataset}\n")


def write_resnet20_cards(folder: Path, data_dir: Path) -> dict[str, Path]:
    """{"onnx", "checkpoint", "torchscript": card}: the zoo's resnet20 weights, the ways a user brings them."""
    import torch

    from harness.backends.source import Source
    from harness.models import ZOO
    from harness.models.resnet_cifar import load_akamaster

    spec = ZOO["resnet20"]
    weights = spec.weights_path(data_dir, False)
    onnx_dir, ckpt_dir = folder / "onnx", folder / "checkpoint"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    import numpy as np

    onnx_file = onnx_dir / "resnet20.onnx"  # the harness's own export, as any user's torch.onnx.export would be
    shutil.copy(Source(spec, weights, np.zeros((1, 3, 32, 32), np.float32)).onnx_path(), onnx_file)
    (onnx_dir / "card.toml").write_text(card_text(
        "resnet20-onnx", "onnx", "resnet20.onnx", f'sha256 = "{sha256(onnx_file)}"\npublished_top1 = 91.73\n'
        'license = "BSD-2-Clause (akamaster/pytorch_resnet_cifar10)"\ntop_k = [1, 3, 5]'))
    torch.save(load_akamaster(20, weights).state_dict(), ckpt_dir / "resnet20.pt")
    (ckpt_dir / "my_resnet.py").write_text(FACTORY)
    (ckpt_dir / "card.toml").write_text(card_text(
        "resnet20-ckpt", "torch-checkpoint", "resnet20.pt", 'architecture = "my_resnet:resnet20"'))
    ts_dir = folder / "torchscript"
    ts_dir.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(load_akamaster(20, weights)), ts_dir / "resnet20.pt")
    (ts_dir / "card.toml").write_text(card_text("resnet20-ts", "torchscript", "resnet20.pt"))
    return {"onnx": onnx_dir / "card.toml", "checkpoint": ckpt_dir / "card.toml",
            "torchscript": ts_dir / "card.toml"}
