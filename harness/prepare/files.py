"""A card's own dataset: kind npz (images uint8 N x H x W x 3 RGB, labels), imagefolder (class sub-folders,
labels by sorted folder name as torchvision.datasets.ImageFolder, JPEG/PNG decoded with Pillow) or
imagenet-val (an image folder with ILSVRC2012's 1000 WordNet-id folders). Test and calibration come from
separate files or folders, and a card whose two sets share an image is refused. Images are kept as uint8
crops and normalized batch by batch in the worker (ModelSpec.uint8_inputs)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from harness.data import imagenet
from harness.errors import UserError
from harness.prepare.common import cached, calibration_record, select, test_limit


def tensors(spec, ctx) -> dict:
    d = spec.data
    test, pool = _read(spec, Path(d.test), "test"), _read(spec, Path(d.calibration), "calibration")
    shared = set(test["hashes"]) & set(pool["hashes"])
    if shared:
        raise UserError(f"{spec.card}: key 'dataset.calibration' = {d.calibration!r}: expected no image of the "
                        f"test set ({d.test}); {len(shared)} images are in both (same content)")
    limit = test_limit(ctx.settings, len(test["labels"]), f"{d.test}")
    keep = imagenet.spread(len(test["labels"]), limit) if limit < len(test["labels"]) else np.arange(limit)
    idx = select(ctx.recipe, pool["labels"], d.calibration)
    content = hashlib.sha256("".join(test["hashes"][i] for i in keep).encode()).hexdigest()
    test_info = {"size": int(len(keep)), "sha256": content, "source": f"{d.test} ({d.kind}, sha256 over the "
                 "images' content hashes)", "accuracy": "measured"}
    calib_raw = pool["images"](idx)
    calibration = calibration_record(ctx.recipe, calib_raw, pool["labels"][idx], f"{d.calibration} ({d.kind})")
    crop = [spec.input_size, spec.resize_size, spec.interpolation]
    paths = cached(ctx.cache, spec.name, "test", crop + [content],
                   lambda: {"test_x": test["images"](keep), "test_y": test["labels"][keep]})
    calib = cached(ctx.cache, spec.name, "calib", [spec.preprocess.describe(), calibration["sha256"]],
                   {"calib_x": spec.preprocess.apply(calib_raw)})
    return {**paths, **calib, "sha256": content, "test": test_info, "calibration": calibration}


def _read(spec, path: Path, which: str) -> dict:
    """{labels, hashes (one per image, for the overlap check and the cache key), images(index) -> uint8}."""
    if spec.dataset == "npz":
        return _npz(spec, path, which)
    if spec.dataset == "imagenet-val":
        files, labels = imagenet.val_files(path)
    else:
        files, labels = _folder(spec, path, which)
    size = spec.resize_size or spec.input_size
    hashes = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    return {"labels": labels, "hashes": hashes,
            "images": lambda idx: imagenet.load_files([files[i] for i in idx], size, spec.input_size,
                                                      spec.interpolation)}


def _folder(spec, root: Path, which: str) -> tuple[list[Path], np.ndarray]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in imagenet.SUFFIXES and p.is_file())
        files += found
        labels += [label] * len(found)
    if not files or len(classes) > spec.num_classes:
        raise UserError(f"{spec.card}: key 'dataset.{which}' = {str(root)!r}: expected class sub-folders of "
                        f".png/.jpg images, at most num_classes ({spec.num_classes}); found {len(classes)} "
                        f"folders, {len(files)} images")
    return files, np.asarray(labels, np.int64)


def _npz(spec, path: Path, which: str) -> dict:
    where = f"{spec.card}: key 'dataset.{which}' = {str(path)!r}"
    try:
        with np.load(path) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{where}: expected an .npz with arrays 'images' and 'labels' ({exc})") from None
    n = spec.input_size
    if images.dtype != np.uint8 or images.shape[1:] != (n, n, 3) or labels.shape != (len(images),):
        raise UserError(f"{where}: expected images uint8 N x {n} x {n} x 3 (RGB, the card's input size) and "
                        f"labels of N; got images {images.dtype} {images.shape}, labels {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise UserError(f"{where}: expected labels in 0..{spec.num_classes - 1} (num_classes); got "
                        f"{int(labels.min())}..{int(labels.max())}")
    hashes = [hashlib.sha256(img.tobytes()).hexdigest() for img in images]
    return {"labels": labels.astype(np.int64), "hashes": hashes, "images": lambda idx: images[idx]}
