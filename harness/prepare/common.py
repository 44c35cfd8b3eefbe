"""What every dataset kind shares: the preprocessed-tensor cache, the calibration pick and --test-limit."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from harness.data import calibration_indices
from harness.data.prep import array_sha256
from harness.errors import UserError
from harness.recipe import Recipe


def cached(cache: Path, model: str, kind: str, key_parts: list, arrays) -> dict:
    """Save arrays as .npy under a content key unless already there; returns name -> path. `arrays` may be
    a callable returning them, called only on a cache miss (decoding 50,000 JPEGs takes minutes)."""
    key = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    folder = cache / "prep" / f"{model}-{kind}-{key}"
    if not folder.is_dir():
        made = arrays() if callable(arrays) else arrays
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, value in made.items():
            np.save(tmp / f"{name}.npy", value)
        try:
            tmp.replace(folder)  # the whole folder appears at once: an interrupted write is never reused
        except OSError:  # another run made it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return {path.stem: str(path) for path in sorted(folder.glob("*.npy"))}


def select(recipe: Recipe, pool_labels: np.ndarray,
           pool: str = "the calibration pool of training images") -> np.ndarray:
    """The recipe's calibration images, as indices into the pool (named in errors)."""
    n = len(pool_labels)
    if recipe.calibration_source == "index_file":
        idx = np.asarray(recipe.calibration_indices, np.int64)
        if idx.max() >= n:
            raise UserError(f"{recipe.calibration_index_file}: index {int(idx.max())} is outside the "
                            f"{n}-image calibration pool (expected 0..{n - 1})")
        return idx
    if recipe.calibration_size > n:
        raise UserError(f"calibration size {recipe.calibration_size}: expected at most {n} ({pool}; set "
                        "--calibration-size)")
    if recipe.calibration_selection == "first":
        return np.arange(recipe.calibration_size)
    return calibration_indices(pool_labels, recipe.calibration_size, recipe.calibration_seed)


def calibration_record(recipe: Recipe, images: np.ndarray, labels: np.ndarray, source: str) -> dict:
    """How run.json and every cell describe the calibration images `select` picked."""
    selection = (recipe.calibration_selection if recipe.calibration_source == "train"
                 else f"index file {recipe.calibration_index_file}")
    return {"size": int(len(images)), "seed": recipe.calibration_seed, "sha256": array_sha256(images, labels),
            "selection": selection, "source": source, "method": recipe.method or "backend default"}


def test_limit(settings, n: int, what: str) -> int:
    """How many of a test set's n images the run evaluates (--test-limit)."""
    limit = settings.test_limit or n
    if limit > n:
        raise UserError(f"--test-limit {limit}: {what} has only {n} images")
    return limit
