"""Source kind "onnx": a card's ONNX file. ONNX Runtime, OpenVINO and TensorRT take the file itself; the
PyTorch-based backends take the module onnx2torch converts it into."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from harness.errors import UserError


def native_onnx(spec, weights: Path) -> Path:
    return weights


def dynamic_batch(path: Path, folder: Path) -> Path:
    """The file itself when its input's first axis is already symbolic; else a copy (cached by digest) whose
    inputs' and outputs' first axis is "batch", so batch 64 can run. A graph that reshapes to a fixed batch
    still fails there, and its cells say so."""
    import onnx

    from harness.data.download import file_digest

    model = onnx.load(str(path), load_external_data=False)
    first = model.graph.input[0].type.tensor_type.shape.dim[0]
    if first.dim_param or not first.HasField("dim_value"):
        return path
    out = folder / f"{path.stem}-{file_digest(path)[:12]}-dynbatch.onnx"
    if not out.is_file():
        model = onnx.load(str(path))
        for value in [*model.graph.input, *model.graph.output]:
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        onnx.save(model, str(tmp))
        tmp.replace(out)
    return out


def check_file(path: Path, where: str):
    """The parsed, checked model; a file that is not ONNX is the card's error (exit 2), named as such."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ... depending on how it is broken
        raise UserError(f"{where}: key 'path' = {str(path)!r}: expected an ONNX model "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'})"
                        ) from None
    return model


def build_torch(spec, weights: Path):
    """The module onnx2torch makes of the file (an fx.GraphModule of torch ops), its constant-parameter ops made
    static so that FX and torch.export can trace it (see onnx_freeze), in eval mode."""
    import onnx

    from harness.backends.base import Unsupported

    onnx2torch = _import_onnx2torch()
    # Given a path, onnx2torch writes its shape-inferred copy next to the file: a card's folder may be read-only
    # (it is in a container run, where it is root-owned). Given the loaded model it infers in memory.
    model = onnx.load(str(weights))
    try:
        module = onnx2torch.convert(model)
    except NotImplementedError as exc:  # onnx2torch's way of saying it has no converter for an op
        raise Unsupported(f"onnx2torch cannot convert {Path(weights).name}: {exc}") from None
    from harness.models.onnx_freeze import freeze

    return freeze(module).eval()


def _import_onnx2torch():
    """onnx2torch imports torchvision for its NonMaxSuppression and RoiAlign converters only. PyPI's
    torchvision for torch 2.13 is built against CUDA torch and fails to import beside the CPU wheel
    ("operator torchvision::nms does not exist"), so where it cannot be imported onnx2torch gets a stand-in
    whose ops raise if a model ever uses them (no image classifier in the zoo or cards does)."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = _stand_in()
        sys.modules["torchvision.ops"] = sys.modules["torchvision"].ops
    try:
        import onnx2torch
    except ImportError as exc:
        from harness.backends.base import Unsupported

        raise Unsupported(f"onnx2torch is not installed ({exc}): pip install --no-deps onnx2torch") from None
    return onnx2torch


def _stand_in() -> types.ModuleType:
    def missing(*args, **kwargs):
        raise NotImplementedError("torchvision ops (NonMaxSuppression, RoiAlign) are unavailable: torchvision "
                                  "cannot be imported beside this CPU torch")

    tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.batched_nms = missing
    tv.ops = ops
    return tv
