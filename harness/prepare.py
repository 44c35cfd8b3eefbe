"""Everything a run computes once and every worker reads: preprocessed test and calibration tensors."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data import calibration_indices, load_split
from harness.data.prep import array_sha256
from harness.errors import UserError
from harness.models import ZOO
from harness.recipe import Recipe


@dataclass(frozen=True)
class Prepared:
    calibration: dict  # size, seed, sha256, selection, source, method (the recipe's; "backend default")
    test: dict  # size, sha256, source
    tensors: dict  # model -> {"test_x", "test_y", "calib_x", "sha256"}


def select(recipe: Recipe, pool_labels: np.ndarray) -> np.ndarray:
    """The recipe's calibration images, as indices into the pool."""
    n = len(pool_labels)
    if recipe.calibration_source == "index_file":
        idx = np.asarray(recipe.calibration_indices, np.int64)
        if idx.max() >= n:
            raise UserError(f"{recipe.calibration_index_file}: index {int(idx.max())} is outside the "
                            f"{n}-image calibration pool (expected 0..{n - 1})")
        return idx
    if recipe.calibration_size > n:
        raise UserError(f"calibration size {recipe.calibration_size}: expected at most {n} "
                        "(the calibration pool of training images)")
    if recipe.calibration_selection == "first":
        return np.arange(recipe.calibration_size)
    return calibration_indices(pool_labels, recipe.calibration_size, recipe.calibration_seed)


def prepare(data_dir: Path, may_download: bool, models, settings, recipe: Recipe, cache: Path) -> Prepared:
    test = load_split(data_dir, "test", may_download)
    pool = load_split(data_dir, "train", may_download)
    limit = settings.test_limit or len(test.labels)
    if limit > len(test.labels):
        raise UserError(f"--test-limit {limit}: the test set has only {len(test.labels)} images")
    idx = select(recipe, pool.labels)
    calib_images, test_images, test_labels = pool.images[idx], test.images[:limit], test.labels[:limit]
    selection = {"train": recipe.calibration_selection, "index_file": f"index file {recipe.calibration_index_file}"}
    calibration = {"size": int(len(idx)), "seed": recipe.calibration_seed,
                   "sha256": array_sha256(calib_images, pool.labels[idx]),
                   "selection": selection[recipe.calibration_source],
                   "source": f"{pool.source} (training images, first 500 per class)",
                   "method": recipe.method or "backend default"}
    test_info = {"size": int(limit), "sha256": array_sha256(test_images, test_labels), "source": test.source}
    tensors = {}
    for name in models:
        pre = ZOO[name].preprocess
        test_x = pre.apply(test_images)
        # test and calibration tensors are cached apart: every arm of a sweep shares one copy of the test set
        test_paths = _cached(cache, name, "test", [pre.describe(), test_info["sha256"]],
                             {"test_x": test_x, "test_y": test_labels})
        calib_paths = _cached(cache, name, "calib", [pre.describe(), calibration["sha256"]],
                              {"calib_x": pre.apply(calib_images)})
        tensors[name] = {**test_paths, **calib_paths, "sha256": array_sha256(test_x)}
    return Prepared(calibration, test_info, tensors)


def _cached(cache: Path, model: str, kind: str, key_parts: list, arrays: dict) -> dict:
    """Save arrays as .npy under a content key unless already there; returns name -> path."""
    key = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    folder = cache / "prep" / f"{model}-{kind}-{key}"
    paths = {name: folder / f"{name}.npy" for name in arrays}
    for name, path in paths.items():
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            np.save(path.with_suffix(".tmp.npy"), arrays[name])
            path.with_suffix(".tmp.npy").replace(path)
    return {name: str(path) for name, path in paths.items()}
