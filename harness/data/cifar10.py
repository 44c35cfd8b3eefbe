"""CIFAR-10 from an npz (images uint8 NxHxWx3 RGB, labels int64) or the official python archive layout."""

from __future__ import annotations

import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

from harness.data.download import fetch
from harness.errors import UserError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
OFFICIAL_DIR = "cifar-10-batches-py"
NPZ_FILES = {"test": "cifar10_test.npz", "train": "cifar10_train_subset.npz"}
# The calibration pool is the first POOL_PER_CLASS training images of each class in source order:
# exactly what cifar10_train_subset.npz holds, so both layouts give the same calibration images.
POOL_PER_CLASS = 500


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 N x 32 x 32 x 3, RGB
    labels: np.ndarray  # int64 N
    source: str


def cache_dir() -> Path:
    return Path(os.environ.get("PTQ_HARNESS_CACHE") or platformdirs.user_cache_dir("ptq-harness"))


def data_root(explicit: str | None) -> tuple[Path, bool]:
    """--data-dir, else $PTQ_HARNESS_DATA, else the cache. Returns (dir, may_download)."""
    if explicit:
        return Path(explicit), False
    if os.environ.get("PTQ_HARNESS_DATA"):
        return Path(os.environ["PTQ_HARNESS_DATA"]), False
    return cache_dir() / "data", True


def download_official(root: Path, url: str = ARCHIVE_URL, md5: str = ARCHIVE_MD5) -> Path:
    """Fetch the official archive (md5 as published) and unpack cifar-10-batches-py/ under root."""
    archive = fetch(url, root / "cifar-10-python.tar.gz", md5, algo="md5")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root / OFFICIAL_DIR


def _check(images, labels, where: str) -> Split:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise UserError(f"{where}: 'images' is {images.dtype} {images.shape}, expected uint8 Nx32x32x3")
    if labels.shape != (images.shape[0],) or labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{where}: 'labels' has shape {labels.shape}, expected ({images.shape[0]},) in 0..9")
    return Split(np.ascontiguousarray(images), labels.astype(np.int64), where)


def _load_npz(path: Path) -> Split:
    try:
        with np.load(path) as z:
            return _check(z["images"], z["labels"], str(path))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: expected a CIFAR-10 npz with 'images' and 'labels' ({exc})") from None


def _load_batches(folder: Path, names: list[str]) -> Split:
    images, labels = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            images.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(d[b"labels"], np.int64))
        except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as exc:
            raise UserError(f"{path}: expected a CIFAR-10 python batch ({exc})") from None
    return _check(np.concatenate(images), np.concatenate(labels), str(folder))


def _pool(split: Split) -> Split:
    keep = np.concatenate([np.flatnonzero(split.labels == c)[:POOL_PER_CLASS] for c in range(10)])
    keep.sort()
    return Split(split.images[keep], split.labels[keep], split.source)


def load_split(root: Path, which: str, may_download: bool = False) -> Split:
    """'test' = the whole test set; 'train' = the calibration pool (first 500 training images per class)."""
    npz = root / NPZ_FILES[which]
    if npz.is_file():
        split = _load_npz(npz)
        return _pool(split) if which == "train" else split
    folder = root / OFFICIAL_DIR
    if not folder.is_dir():
        if not may_download:
            raise UserError(f"data dir {root}: expected {NPZ_FILES[which]} or {OFFICIAL_DIR}/ in it")
        folder = download_official(root)
    if which == "test":
        return _load_batches(folder, ["test_batch"])
    return _pool(_load_batches(folder, [f"data_batch_{i}" for i in range(1, 6)]))
