"""The small protocol every backend implements, and what build() hands over to load()."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class Session:
    """What load() returns: one runtime instance for one input shape, never shared with another shape (torch.ao's
    oneDNN kernels, OpenVINO's compiled shapes and TensorRT's profiles are all tuned to the first shape seen).

    The timed region is run() alone, on the input prepare() made once outside the loop, and it ends when the
    runtime's own output is readable on the host. finish() (dequantize, copy, cast to float32 logits) is
    outside it. README "What is timed" lists, per backend, what run() does."""

    config: dict = {}  # the runtime's configuration as read back after compiling (threads, hint, ...)

    def prepare(self, x: np.ndarray) -> Any:
        """The runtime's input (layout, dtype, quantized I/O, shared-memory tensor): made outside the timing."""
        return x

    def run(self, inp: Any) -> Any:  # pragma: no cover - protocol
        raise NotImplementedError

    def finish(self, out: Any) -> np.ndarray:
        return np.asarray(out, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.finish(self.run(self.prepare(x)))


def cuda_device_present() -> bool:
    """An NVIDIA driver with a device node; checked without importing any framework."""
    return Path("/dev/nvidiactl").exists() and any(Path("/dev").glob("nvidia[0-9]*"))


class Unsupported(Exception):
    """Raised when a cell turns out not to be possible here; the message is the cell's reason."""


def refuse(recipe, rules: dict[str, tuple[tuple, str]]) -> None:
    """Unsupported when the recipe sets a field to a value this backend cannot honour (never ignored silently).
    rules: recipe field -> (values it cannot do, why)."""
    for key, (values, why) in rules.items():
        value = getattr(recipe, key)
        if value in values:
            raise Unsupported(f"recipe {recipe.name!r} sets {key} = {value!r}: {why}")


@dataclass(frozen=True)
class Probe:
    installed: bool
    version: str | None
    reason: str | None  # why not installed / usable


@dataclass(frozen=True)
class Artifact:
    path: Path  # the file (or main file) a deployment would ship
    files: tuple[Path, ...]  # everything counted in size_bytes
    details: dict = field(default_factory=dict)  # how it was converted/quantized, recorded in the cell
    # the Source it was built from: a torch artifact is a state_dict, so load() rebuilds the module around it
    src: Any = None

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


class Backend:
    """A framework: NAME, the packages whose versions identify it, and four methods. An instance is bound to
    the device it runs on and, where a framework has several runtimes for one device, the variant chosen."""

    NAME = ""
    MODULE = ""  # import name probed without importing it
    PACKAGES: tuple[str, ...] = ()  # distributions whose versions are recorded
    EXTRA = ""  # pip extra that installs it
    # modules a build imports, timed apart as import_s so that quantize_s is the conversion alone
    IMPORTS: tuple[str, ...] = ()
    UNSUPPORTED: dict[str, str] = {}  # precision -> reason, known without trying
    # recipe [backends.<NAME>] options: name -> (type or tuple of allowed values, what it does); checked on load
    OPTIONS: dict[str, tuple[type | tuple, str]] = {}
    DEVICES: tuple[str, ...] = ("cpu",)  # devices it can run on
    UNSUPPORTED_ON: dict[str, dict[str, str]] = {}  # device -> precision -> reason, for devices other than cpu
    # device -> extra cell variants besides the default one (e.g. onnxruntime's TensorRT execution provider)
    VARIANTS: dict[str, dict[str, str]] = {}
    # why one artifact may predict differently from run to run on one machine ("" = it does not: the CPU
    # runtimes here run fixed kernels, so `compare` holds them to exact equality on the same CPU)
    NONDETERMINISTIC = ""
    # what a reader must know about this column (a deprecated API, a last release), shown by `harness list`
    # and under the report's tables
    NOTE = ""
    # how the backend takes a PyTorch module by tracing its Python code (torch.export, jit.trace); a card's
    # TorchScript file has no Python code to trace
    TRACES = ""

    def __init__(self, device: str = "cpu", variant: str = ""):
        # a cell's variant may name a sweep arm or a published artifact; only the backend's own runtimes bind
        self.device, self.variant = device, (variant if variant in self.VARIANTS.get(device, {}) else "")

    def probe(self) -> Probe:
        if importlib.util.find_spec(self.MODULE) is None:
            return Probe(False, None, f"{self.NAME} not installed (pip install 'ptq-harness[{self.EXTRA}]')")
        return Probe(True, next(iter(self.versions().values()), None), None)

    def versions(self) -> dict[str, str]:
        out = {}
        for pkg in self.PACKAGES:
            try:
                out[pkg] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                pass
        return out

    def device_reason(self, device: str) -> str | None:
        """Why this backend cannot run on `device` here at all (checked before anything is installed)."""
        if device == "cuda" and not cuda_device_present():
            return "no CUDA device"
        if device not in self.DEVICES:
            return f"{self.NAME} runs on {' / '.join(self.DEVICES)} only, not {device}"
        return None

    def precision_reason(self, precision: str, device: str) -> str | None:
        """Why this backend has no such precision on this device, known without trying."""
        return (self.UNSUPPORTED if device == "cpu" else self.UNSUPPORTED_ON.get(device, {})).get(precision)

    def supports(self, precision: str, device: str) -> str | None:
        """None if the cell can be tried, else the reason it cannot (cheap: no framework import)."""
        return self.device_reason(device) or self.precision_reason(precision, device)

    def build(self, src, precision: str, workdir: Path) -> Artifact:  # pragma: no cover - protocol
        raise NotImplementedError

    def profile(self, artifact: Artifact, threads: int, batch: int, x, workdir: Path):
        """Per-op records of `batch`-sized calls from the runtime's own profiler (harness.profiles.Profiled), on
        an instance of its own: never the timed one."""
        raise Unsupported(f"{self.NAME} has no per-op profiler wired into the harness")

    def why_not(self, precision: str, device: str, spec=None) -> str | None:
        """None if the cell can be tried here, else why not: the device first (no GPU here), then not
        installed, then the precision, then (given a zoo model's spec) the model."""
        return (self.device_reason(device) or self.probe().reason or self.precision_reason(precision, device)
                or (self.model_reason(spec) if spec is not None else None))

    def model_reason(self, spec) -> str | None:
        """Why this backend cannot build this model at all (None: it can)."""
        if self.TRACES and spec.builder == "torchscript":
            return (f"{self.NAME} takes a PyTorch module through {self.TRACES}, which cannot trace a TorchScript "
                    "file: give a torch-checkpoint (state dict + factory) or ONNX card")
        return None

    def published(self, path: Path, spec, workdir: Path) -> Artifact:
        """Wrap an artifact published with the model (e.g. MLPerf's .tflite) so it runs as its own cell."""
        raise Unsupported(f"{self.NAME} cannot load published artifacts")

    def load(self, artifact: Artifact, threads: int, batch: int | None = None) -> Session:  # pragma: no cover
        """A fresh runtime instance from the artifact on disk. batch: the one shape it will run (a static shape
        or profile where the runtime has one); None for the accuracy pass, which sees a short last batch."""
        raise NotImplementedError

    def inspect(self, session: Session, artifact: Artifact) -> dict:
        """What only the record needs (e.g. a profiled placement run), asked of the accuracy pass's instance
        after it ran, never of a timed one."""
        return {}
