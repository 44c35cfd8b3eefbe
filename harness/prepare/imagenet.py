"""The zoo's ImageNet-shaped models: the ILSVRC2012 val folder when the user has one, else CIFAR-10 images
resized (timing only); calibration from <data dir>/imagenet/calib or CIFAR images resized; seeded weights
when the published file is absent."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from harness.data import imagenet
from harness.data.download import file_digest
from harness.data.prep import array_sha256
from harness.models import ModelSpec
from harness.prepare.common import cached
from harness.recipe import Recipe

TIMING_IMAGES = 256  # CIFAR images resized as ImageNet-shaped timing inputs: the largest batch of the GPU targets


def zoo_tensors(spec: ModelSpec, ctx) -> dict:
    """Dataset kind "imagenet" (the zoo's ImageNet-shaped models)."""
    c = ctx.cifar()
    return imagenet_tensors(spec, ctx.data_dir, ctx.may_download, ctx.settings, ctx.recipe, ctx.cache,
                            {"calib": c["calib"], "test": c["test_images"], "pool": c["pool"]}, c["calibration"])


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
        paths = cached(cache, spec.name, "test", crop + [listing], lambda: {
            "test_x": imagenet.load_files([files[i] for i in idx], spec.resize_size, n, spec.interpolation),
            "test_y": labels[idx]})
    else:
        missing = ("no ImageNet validation folder " + str(val) if published
                   else "no published weights, the model runs seeded random weights")
        raw = imagenet.resized(cifar["test"][:TIMING_IMAGES], n)
        test = {"size": int(len(raw)), "sha256": array_sha256(raw), "accuracy": f"not measured: {missing}",
                "source": f"CIFAR-10 test images 0-{len(raw) - 1} resized to {n}x{n} (timing inputs only)"}
        paths = cached(cache, spec.name, "test", crop + [test["sha256"]],
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
    return calibration, cached(cache, spec.name, "calib", key, lambda: {"calib_x": spec.preprocess.apply(raw)})[
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
