"""Everything a run computes once and every worker reads: preprocessed test and calibration tensors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data import calibration_indices, imagenet, load_split
from harness.data.download import file_digest
from harness.data.prep import array_sha256
from harness.errors import UserError
from harness.models import ZOO, ModelSpec
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
        if ZOO[name].dataset == "imagenet":
            tensors[name] = imagenet_tensors(ZOO[name], data_dir, may_download, settings, recipe, cache,
                                             {"calib": calib_images, "test": test_images, "pool": pool.images},
                                             calibration)
            continue
        pre = ZOO[name].preprocess
        test_x = pre.apply(test_images)
        # test and calibration tensors are cached apart: every arm of a sweep shares one copy of the test set
        test_paths = _cached(cache, name, "test", [pre.describe(), test_info["sha256"]],
                             {"test_x": test_x, "test_y": test_labels})
        calib_paths = _cached(cache, name, "calib", [pre.describe(), calibration["sha256"]],
                              {"calib_x": pre.apply(calib_images)})
        tensors[name] = {**test_paths, **calib_paths, "sha256": array_sha256(test_x)}
    return Prepared(calibration, test_info, tensors)


def _cached(cache: Path, model: str, kind: str, key_parts: list, arrays) -> dict:
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


TIMING_IMAGES = 256  # CIFAR images resized as ImageNet-shaped timing inputs: the largest batch of the GPU targets


def imagenet_tensors(spec: ModelSpec, data_dir: Path, may_download: bool, settings, recipe: Recipe, cache: Path,
                     cifar: dict, cifar_calibration: dict) -> dict:
    """An ImageNet-shaped model's tensors. Test images are kept as uint8 crops (the worker normalizes them
    batch by batch); accuracy is measured only with published weights and an ILSVRC2012 val folder."""
    n, pre = spec.input_size, spec.preprocess
    crop = [pre.describe(), n, spec.resize_size, spec.interpolation]
    calibration, calib_x = _imagenet_calibration(spec, data_dir, recipe, cache, cifar["calib"], cifar_calibration)
    weights = spec.weights_path(data_dir, may_download)
    published = weights is not None
    note = f"published weights {weights}"
    if not published:
        weights = seeded_weights(spec, cache, cifar["pool"])
        note = (f"seeded random weights (no {spec.subdir}/{spec.filename} in the data dir): He-normal, seed 0, "
                "batch-norm statistics from 64 training images resized")
    val = data_dir / imagenet.VAL_DIR
    if published and val.is_dir():
        files, labels = imagenet.val_files(val)
        limit = settings.test_limit or len(files)
        idx = imagenet.spread(len(files), limit) if limit < len(files) else np.arange(len(files))
        listing = hashlib.sha256(json.dumps([[str(files[i].relative_to(val)), files[i].stat().st_size]
                                             for i in idx]).encode() + labels[idx].tobytes()).hexdigest()
        test = {"size": int(len(idx)), "sha256": listing, "source": f"{val} (ILSVRC2012 val layout, "
                f"{len(idx)} of {len(files)} images, sha256 over names, sizes and labels)", "accuracy": "measured"}
        missing = None
        paths = _cached(cache, spec.name, "test", crop + [listing], lambda: {
            "test_x": imagenet.load_files([files[i] for i in idx], spec.resize_size, n, spec.interpolation),
            "test_y": labels[idx]})
    else:
        missing = ("no ImageNet validation folder " + str(val) if published
                   else "no published weights, the model runs seeded random weights")
        raw = imagenet.resized(cifar["test"][:TIMING_IMAGES], n)
        test = {"size": int(len(raw)), "sha256": array_sha256(raw), "accuracy": f"not measured: {missing}",
                "source": f"CIFAR-10 test images 0-{len(raw) - 1} resized to {n}x{n} (timing inputs only)"}
        paths = _cached(cache, spec.name, "test", crop + [test["sha256"]],
                        {"test_x": raw, "test_y": np.full(len(raw), -1, np.int64)})
    return {**paths, "calib_x": calib_x, "sha256": test["sha256"], "test": test,
            "calibration": calibration, "accuracy_not_measured": missing, "weights": str(weights),
            "model_info": {"weights": weights.name, "weights_sha256": file_digest(weights), "weights_note": note}}


def _imagenet_calibration(spec: ModelSpec, data_dir: Path, recipe: Recipe, cache: Path, cifar_calib: np.ndarray,
                          cifar_calibration: dict) -> tuple[dict, str]:
    """The recipe's count of images from <data dir>/imagenet/calib when it exists, else the recipe's CIFAR
    calibration images resized (a stand-in that says so: fine for latency, poor for accuracy)."""
    n, root = spec.input_size, data_dir / imagenet.CALIB_DIR
    if root.is_dir() and recipe.calibration_source == "train":
        files = imagenet.calib_files(root, recipe.calibration_size, recipe.calibration_seed)
        raw = imagenet.load_files(files, spec.resize_size, n, spec.interpolation)
        source = f"{root} ({len(files)} images, seeded random pick)"
    else:
        raw = imagenet.resized(cifar_calib, n)
        source = f"{cifar_calibration['source']}, resized to {n}x{n} (no {root} folder)"
    calibration = {**cifar_calibration, "size": int(len(raw)), "sha256": array_sha256(raw), "source": source}
    key = [spec.preprocess.describe(), calibration["sha256"]]
    return calibration, _cached(cache, spec.name, "calib", key, lambda: {"calib_x": spec.preprocess.apply(raw)})[
        "calib_x"]


def seeded_weights(spec: ModelSpec, cache: Path, pool_images: np.ndarray) -> Path:
    """One seeded weight file per architecture (the same for every recipe and sweep arm), saved once so
    that every backend, in every environment, loads the very same tensors."""
    import torch

    from harness.models.imagenet import seeded_state_dict

    arch = spec.builder.partition(":")[2]
    images = imagenet.resized(pool_images[:64], spec.input_size)
    path = cache / "weights" / f"{arch}-seed0-{array_sha256(images)[:12]}.pth"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(seeded_state_dict(arch, spec.preprocess.apply(images)), tmp)
        tmp.replace(path)
    return path
