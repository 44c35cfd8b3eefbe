"""Everything a run computes once and every worker reads: preprocessed test and calibration tensors, and the
model's size in numbers. One function per dataset kind (KINDS) makes a model's tensors from its spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.models import ModelSpec
from harness.prepare import cifar, files
from harness.prepare import imagenet as imagenet_kind
from harness.prepare.common import select
from harness.prepare.imagenet import imagenet_tensors, seeded_weights
from harness.recipe import Recipe

__all__ = ["KINDS", "Context", "Prepared", "imagenet_tensors", "prepare", "seeded_weights", "select"]


@dataclass(frozen=True)
class Prepared:
    calibration: dict  # size, seed, sha256, selection, source, method (the recipe's; "backend default")
    test: dict  # size, sha256, source
    tensors: dict  # model -> {"test_x", "test_y", "calib_x", "sha256"}


@dataclass
class Context:
    """What every dataset kind may need; CIFAR-10 is read only if some model of the run uses it."""

    data_dir: Path
    may_download: bool
    settings: object
    recipe: Recipe
    cache: Path
    _cifar: dict | None = field(default=None, repr=False)

    def cifar(self) -> dict:
        """CIFAR-10's test images (up to --test-limit) and the recipe's calibration images from the pool."""
        if self._cifar is None:
            self._cifar = cifar.load(self)
        return self._cifar


# dataset kind (ModelSpec.dataset) -> function(spec, ctx) -> the model's tensors: test_x, test_y, calib_x (paths),
# sha256 (of the test tensor), and where they differ from CIFAR-10's: test, calibration, weights, model_info
KINDS = {
    "cifar10": cifar.tensors,
    "imagenet": imagenet_kind.zoo_tensors,
    "imagenet-val": files.tensors,
    "imagefolder": files.tensors,
    "npz": files.tensors,
}


def prepare(data_dir: Path, may_download: bool, models: dict[str, ModelSpec], settings, recipe: Recipe,
            cache: Path) -> Prepared:
    ctx = Context(data_dir, may_download, settings, recipe, cache)
    tensors = {name: KINDS[spec.dataset](spec, ctx) for name, spec in models.items()}
    for name, spec in models.items():
        tensors[name]["model_info"] = {**tensors[name].get("model_info", {}), **_numbers(spec, tensors[name], ctx)}
    if ctx._cifar is None:  # no CIFAR-10 model in the run: its first model's sets stand for the run's
        first = tensors[next(iter(models))]
        return Prepared(first["calibration"], first["test"], tensors)
    return Prepared(ctx.cifar()["calibration"], ctx.cifar()["test"], tensors)


def _numbers(spec: ModelSpec, t: dict, ctx: Context) -> dict:
    """params and macs_per_image of the fp32 model, from the weights this run's cells load."""
    from harness.models.info import model_info

    weights = Path(t["weights"]) if t.get("weights") else spec.weights_path(ctx.data_dir, ctx.may_download)
    return model_info(spec, weights, np.load(t["calib_x"], mmap_mode="r")[:1], ctx.cache)
