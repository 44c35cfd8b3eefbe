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


@dataclass(frozen=True)
class Prepared:
    calibration: dict  # size, seed, sha256, selection, source, method
    test: dict  # size, sha256, source
    tensors: dict  # model -> {"test_x", "test_y", "calib_x", "sha256"}


def prepare(data_dir: Path, may_download: bool, models, settings, method: str, cache: Path) -> Prepared:
    test = load_split(data_dir, "test", may_download)
    pool = load_split(data_dir, "train", may_download)
    limit = settings.test_limit or len(test.labels)
    if limit > len(test.labels):
        raise UserError(f"--test-limit {limit}: the test set has only {len(test.labels)} images")
    if settings.calibration_size > len(pool.labels):
        raise UserError(f"--calibration-size {settings.calibration_size}: expected at most "
                        f"{len(pool.labels)} (the calibration pool of training images)")
    idx = calibration_indices(pool.labels, settings.calibration_size, settings.calibration_seed)
    calib_images, test_images, test_labels = pool.images[idx], test.images[:limit], test.labels[:limit]
    calibration = {"size": int(len(idx)), "seed": settings.calibration_seed,
                   "sha256": array_sha256(calib_images, pool.labels[idx]), "selection": "stratified",
                   "source": f"{pool.source} (training images, first 500 per class)", "method": method}
    test_info = {"size": int(limit), "sha256": array_sha256(test_images, test_labels), "source": test.source}
    tensors = {}
    for name in models:
        pre = ZOO[name].preprocess
        key = hashlib.sha256(json.dumps([pre.describe(), calibration["sha256"], test_info["sha256"]])
                             .encode()).hexdigest()[:16]
        folder = cache / "prep" / f"{name}-{key}"
        paths = {"test_x": folder / "test_x.npy", "test_y": folder / "test_y.npy",
                 "calib_x": folder / "calib_x.npy"}
        test_x = pre.apply(test_images)
        if not all(p.is_file() for p in paths.values()):
            folder.mkdir(parents=True, exist_ok=True)
            for p, arr in ((paths["test_x"], test_x), (paths["test_y"], test_labels),
                           (paths["calib_x"], pre.apply(calib_images))):
                np.save(p.with_suffix(".tmp.npy"), arr)
                p.with_suffix(".tmp.npy").replace(p)
        tensors[name] = {**{k: str(v) for k, v in paths.items()}, "sha256": array_sha256(test_x)}
    return Prepared(calibration, test_info, tensors)
