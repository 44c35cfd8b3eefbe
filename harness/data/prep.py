"""One preprocessing pipeline, in numpy, declared per model and applied once for every backend."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Preprocess:
    scale: float = 1.0 / 255.0  # applied first to uint8 pixels
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per RGB channel, after scaling
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels: str = "RGB"  # or "BGR"
    layout: str = "NCHW"  # or "NHWC": the layout the model's first layer takes

    def apply(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32) * np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.channels == "BGR":
            x = x[..., ::-1]
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def describe(self) -> dict:
        return asdict(self)


def array_sha256(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def calibration_indices(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Stratified, seeded pick of `size` pool indices: size // k per class of the k classes present (the
    remainder to the first classes; CIFAR-10's pool has all 10). A class with fewer images gives all it has."""
    if size > labels.shape[0]:
        raise ValueError(f"calibration size {size} exceeds the {labels.shape[0]}-image pool")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    picks = []
    for i, c in enumerate(classes):
        n = size // len(classes) + (1 if i < size % len(classes) else 0)
        members = np.flatnonzero(labels == c)
        picks.append(rng.choice(members, size=min(n, len(members)), replace=False))
    return np.sort(np.concatenate(picks))
