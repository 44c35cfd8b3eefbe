"""Source kind "torchscript": a card's torch.jit.save file. Eager PyTorch runs it as it is; the harness's ONNX
export takes it to ONNX Runtime, OpenVINO and TensorRT. Flows that trace Python (torch.export, FX) cannot
trace a ScriptModule, and their cells say so."""

from __future__ import annotations

from pathlib import Path


def build_torch(spec, weights: Path):
    import torch

    return torch.jit.load(str(weights), map_location="cpu").eval()
