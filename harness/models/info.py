"""What a model is in numbers, counted once from its fp32 PyTorch module: parameters and multiply-accumulates
per image (torch.utils.flop_counter, which counts 2 FLOPs per MAC of every convolution and matrix product),
and a check that its output is (batch, num_classes), the card's first claim a run relies on."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from harness.errors import UserError


def model_info(spec, weights: Path, sample: np.ndarray, cache: Path) -> dict:
    """{params, macs_per_image, output_shape}; cached by weights and definition (the count takes seconds for
    an ImageNet model, and every run of the model asks)."""
    from harness.backends.source import definition_digest
    from harness.data.download import file_digest

    key = hashlib.sha256(f"{file_digest(weights)}-{definition_digest(spec)}-{sample.shape}".encode()).hexdigest()
    path = cache / "prep" / f"{spec.name}-info-{key[:16]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    info = count(spec, weights, sample)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)
    return info


def count(spec, weights: Path, sample: np.ndarray) -> dict:
    with warnings.catch_warnings():  # onnx2torch and torch warn about their own internals: not the user's concern
        warnings.simplefilter("ignore")
        return _count(spec, weights, sample)


def _count(spec, weights: Path, sample: np.ndarray) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from harness.backends.base import Unsupported
    from harness.models import build_torch

    try:
        model = build_torch(spec, weights)
    except Unsupported as exc:  # an ONNX card onnx2torch cannot convert: the runtimes that take ONNX still can
        return {**_onnx_count(spec, weights, sample), "macs_per_image": None, "macs_note": str(exc)}
    x = torch.from_numpy(np.array(sample[:1], np.float32))
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = model(x)
    except Exception as exc:
        raise UserError(f"{spec.card or spec.name}: the model failed on one {tuple(x.shape)} input "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); check 'input' and 'preprocess'"
                        ) from None
    _check_output(spec, tuple(out.shape))
    params = sum(int(p.numel()) for p in model.parameters())
    if params == 0:  # a ScriptModule or GraphModule may hold weights as buffers/attributes only
        params = sum(int(t.numel()) for t in model.state_dict().values() if t.is_floating_point())
    return {"params": params, "macs_per_image": int(counter.get_total_flops() // 2),
            "output_shape": list(out.shape)}


def _onnx_count(spec, weights: Path, sample: np.ndarray) -> dict:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from harness.models import native_onnx

    path = native_onnx(spec, weights)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(sample[:1], np.float32)})[0]
    _check_output(spec, tuple(out.shape))
    params = sum(int(numpy_helper.to_array(t).size) for t in onnx.load(str(path)).graph.initializer)
    return {"params": params, "output_shape": list(out.shape)}


def _check_output(spec, shape: tuple) -> None:
    if shape != (1, spec.num_classes):
        where = spec.card or f"model {spec.name}"
        raise UserError(f"{where}: key 'num_classes' = {spec.num_classes}: expected the model's output size; "
                        f"one image gave an output of shape {shape}")
