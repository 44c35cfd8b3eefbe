"""Models: the zoo and model cards are the same kind of object (ModelSpec); how one becomes a PyTorch module
(and, for an ONNX card, the ONNX file itself) is up to its source kind, one module each in SOURCES."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from harness.models.spec import DataSource, ModelSpec, Published
from harness.models.zoo import IMAGENET_NORM, ZOO

__all__ = ["DataSource", "IMAGENET_NORM", "ModelSpec", "Published", "SOURCES", "ZOO", "build_torch",
           "definition_files", "lookup", "native_onnx", "spec_of"]

# source kind (the part of ModelSpec.builder before ":") -> the module that builds it. Each has
# build_torch(spec, weights) -> an eval-mode fp32 torch.nn.Module; one whose file already is ONNX also has
# native_onnx(spec, weights) -> Path. Imported only when used: they import torch (and onnx2torch, h5py).
SOURCES = {
    "resnet_cifar": "harness.models.resnet_cifar",
    "resnet8": "harness.models.resnet8",
    "imagenet": "harness.models.imagenet",
    "onnx": "harness.models.onnx_file",
    "torchscript": "harness.models.torchscript_file",
    "torch-checkpoint": "harness.models.checkpoint",
}


def _source(spec: ModelSpec):
    return importlib.import_module(SOURCES[spec.builder.partition(":")[0]])


def build_torch(spec: ModelSpec, weights: Path):
    """The fp32 PyTorch module (eval mode) carrying the model's weights."""
    return _source(spec).build_torch(spec, weights)


def native_onnx(spec: ModelSpec, weights: Path) -> Path | None:
    """The model's own ONNX file when its source is one (an ONNX card), else None (the harness exports)."""
    module = _source(spec)
    return module.native_onnx(spec, weights) if hasattr(module, "native_onnx") else None


def definition_files(spec: ModelSpec) -> list[Path]:
    """The files that define the module a spec builds: an edit to any of them must re-export."""
    pkg = Path(__file__).parent
    kind_file = pkg / (SOURCES[spec.builder.partition(":")[0]].rsplit(".", 1)[1] + ".py")
    return [pkg / "__init__.py", pkg / "spec.py", pkg / "zoo.py", kind_file, *map(Path, spec.code_files)]


def lookup(name: str, card: str | None = None) -> ModelSpec:
    """A zoo entry, or the model of a card file (what a job names: its model, and its card when it has one)."""
    return _card(card) if card else ZOO[name]


def spec_of(job: dict) -> ModelSpec:
    """The model a worker's job names."""
    return lookup(job["model"], job.get("card"))


@cache
def _card(path: str) -> ModelSpec:
    from harness.models.card import load_card

    return load_card(Path(path), check_model=False)  # the run checked the model file before any job
