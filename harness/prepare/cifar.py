"""Dataset kind "cifar10": the CIFAR-10 test set and the recipe's calibration images from the training pool
(the zoo's CIFAR models, and cards that say `kind = "cifar10"`), preprocessed as float32 tensors."""

from __future__ import annotations

from harness.data import load_split
from harness.data.prep import array_sha256
from harness.prepare.common import cached, calibration_record, select, test_limit


def load(ctx) -> dict:
    """The run's CIFAR-10 images and their descriptions (run.json's test and calibration)."""
    test = load_split(ctx.data_dir, "test", ctx.may_download)
    pool = load_split(ctx.data_dir, "train", ctx.may_download)
    limit = test_limit(ctx.settings, len(test.labels), "the test set")
    recipe = ctx.recipe
    idx = select(recipe, pool.labels)
    calib_images, test_images, test_labels = pool.images[idx], test.images[:limit], test.labels[:limit]
    calibration = calibration_record(recipe, calib_images, pool.labels[idx],
                                     f"{pool.source} (training images, first 500 per class)")
    test_info = {"size": int(limit), "sha256": array_sha256(test_images, test_labels), "source": test.source}
    return {"calibration": calibration, "test": test_info, "calib": calib_images, "test_images": test_images,
            "test_labels": test_labels, "pool": pool.images}


def tensors(spec, ctx) -> dict:
    c = ctx.cifar()
    pre = spec.preprocess
    test_x = pre.apply(c["test_images"])
    # test and calibration tensors are cached apart: every arm of a sweep shares one copy of the test set
    test_paths = cached(ctx.cache, spec.name, "test", [pre.describe(), c["test"]["sha256"]],
                        {"test_x": test_x, "test_y": c["test_labels"]})
    calib_paths = cached(ctx.cache, spec.name, "calib", [pre.describe(), c["calibration"]["sha256"]],
                         {"calib_x": pre.apply(c["calib"])})
    return {**test_paths, **calib_paths, "sha256": array_sha256(test_x)}
