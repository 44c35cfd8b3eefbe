"""The small protocol every backend implements, and what build() hands over to load()."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


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
    handle: Any = None  # an in-process object load() may reuse (e.g. a quantized torch module)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


class Backend:
    """A framework: NAME, the packages whose versions identify it, and four methods. An instance is bound to
    the device it runs on and, where a framework has several runtimes for one device, the variant chosen."""

    NAME = ""
    MODULE = ""  # import name probed without importing it
    PACKAGES: tuple[str, ...] = ()  # distributions whose versions are recorded
    EXTRA = ""  # pip extra that installs it
    UNSUPPORTED: dict[str, str] = {}  # precision -> reason, known without trying
    # recipe [backends.<NAME>] options: name -> (type or tuple of allowed values, what it does); checked on load
    OPTIONS: dict[str, tuple[type | tuple, str]] = {}
    DEVICES: tuple[str, ...] = ("cpu",)  # devices it can run on
    UNSUPPORTED_ON: dict[str, dict[str, str]] = {}  # device -> precision -> reason, for devices other than cpu
    # device -> extra cell variants besides the default one (e.g. onnxruntime's TensorRT execution provider)
    VARIANTS: dict[str, dict[str, str]] = {}

    # False in a --repeat timing process: load() then skips what only the cell's record needs (e.g. a
    # profiled session), so repeats time the same thing without paying for it again
    record_details = True

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

    def why_not(self, precision: str, device: str, spec=None) -> str | None:
        """None if the cell can be tried here, else why not: the device first (no GPU here), then not
        installed, then the precision, then (given a zoo model's spec) the model."""
        return (self.device_reason(device) or self.probe().reason or self.precision_reason(precision, device)
                or (self.model_reason(spec) if spec is not None else None))

    def model_reason(self, spec) -> str | None:
        """Why this backend cannot build this zoo model at all (None: it can)."""
        return None

    def published(self, path: Path, spec, workdir: Path) -> Artifact:
        """Wrap an artifact published with the model (e.g. MLPerf's .tflite) so it runs as its own cell."""
        raise Unsupported(f"{self.NAME} cannot load published artifacts")

    def load(self, artifact: Artifact, threads: int) -> Predict:  # pragma: no cover - protocol
        raise NotImplementedError
