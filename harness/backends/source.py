"""What every backend builds from: the same fp32 weights, the same calibration tensors, one ONNX export."""

from __future__ import annotations

import fcntl
import json
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.data.cifar10 import cache_dir
from harness.models import ModelSpec, build_torch, definition_files, native_onnx
from harness.recipe import Recipe

ONNX_OPSET = 17
CALIB_BATCH_BYTES = 8 << 20  # 8 MiB: 100 CIFAR images (1.2 MB) stay one batch; 224 x 224 images go 13 at a time


def definition_digest(spec: ModelSpec) -> str:
    """sha256 (12 hex) of the source files that define the exported module (harness.models.definition_files:
    the zoo, the source kind's module, a card and its factory) and of this file (which strips a final softmax).
    Any edit re-exports; a stale export would be silently reused."""
    import hashlib

    h = hashlib.sha256()
    for f in [*definition_files(spec), Path(__file__)]:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


@dataclass
class Source:
    spec: ModelSpec
    weights: Path
    calib: np.ndarray  # preprocessed calibration images, in the model's input layout
    recipe: Recipe = field(default_factory=Recipe)  # how to quantize; backends honour it or say they cannot
    _model: object = field(default=None, repr=False)
    # seconds of work inside build() that is not quantization (the ONNX export, OpenVINO's IR copy), kept apart
    # so that quantize_s is conversion + calibration + quantization only
    timers: dict = field(default_factory=dict)
    timed_batches: tuple[int, ...] = (1,)  # batch sizes the run times (TensorRT builds a profile for each)
    export_record: dict | None = None  # {export_s, cached}: the shared ONNX export's cost, once per weights

    @contextmanager
    def aside(self, what: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timers[what] = self.timers.get(what, 0.0) + time.perf_counter() - t0

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, *self.calib.shape[1:])

    def torch_model(self):
        """A fresh fp32 module each call (quantization flows mutate or wrap it); logits out (see
        ModelSpec.ends_in_softmax)."""
        model = build_torch(self.spec, self.weights)
        if self.spec.ends_in_softmax:
            import torch

            model.softmax = torch.nn.Identity()
        return model

    def onnx_path(self) -> Path:
        """One fp32 ONNX export per (weights, torch version, opset), shared by onnxruntime and openvino; an
        ONNX card's own file (with a dynamic batch axis, see onnx_file.dynamic_batch)."""
        with self.aside("export"):
            native = native_onnx(self.spec, self.weights)
            if native is not None:
                from harness.models.onnx_file import dynamic_batch

                return dynamic_batch(native, cache_dir() / "onnx")
            return self._onnx_path()

    def _onnx_path(self) -> Path:
        import torch

        from harness.data.download import file_digest

        # named by the weight file's digest (an ImageNet model may run published or seeded random weights) and
        # by the code that defines the module: a cache made before resnet8 lost its softmax held softmax outputs
        name = (f"{self.spec.name}-{file_digest(self.weights)[:12]}-def{definition_digest(self.spec)}"
                f"-torch{torch.__version__}-opset{ONNX_OPSET}.onnx")
        path = cache_dir() / "onnx" / name
        # how long the export took when it was made: export_s is the same figure whether or not a cell found it
        # in the cache
        meta = path.with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        # one exporter at a time: two workers (or test processes) sharing a cache would otherwise both export and
        # each write its own export_s, so cells of one run could report different figures for one file
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.is_file() and meta.is_file():
                self.export_record = {**json.loads(meta.read_text()), "cached": True}
                return path
            self._export(path, meta)
        return path

    def _export(self, path: Path, meta: Path) -> None:
        import torch

        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            # The TorchScript exporter writes one self-contained file with a dynamic batch axis; the dynamo
            # exporter (torch's default) splits weights into external data and cannot target opset 17.
            torch.onnx.export(self.torch_model(), (torch.zeros(self.input_shape()),), str(tmp),
                              input_names=["x"], output_names=["logits"], opset_version=ONNX_OPSET,
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
            self.export_record = {"export_s": round(time.perf_counter() - t0, 4), "cached": False}
        meta.write_text(json.dumps({"export_s": self.export_record["export_s"]}))  # before the file: a reader
        os.replace(tmp, path)  # that sees the model finds its figure

    def calib_batches(self, batch: int):
        """The calibration images in batches of at most `batch` images and about CALIB_BATCH_BYTES: a
        224 x 224 batch of 100 made onnxruntime's calibration session peak at 11.7 GB (ResNet-50)."""
        per_image = max(1, self.calib[:1].nbytes)
        batch = max(1, min(batch, CALIB_BATCH_BYTES // per_image))
        for i in range(0, len(self.calib), batch):
            yield self.calib[i:i + batch]
