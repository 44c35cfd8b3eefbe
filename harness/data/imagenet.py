"""ImageNet-shaped inputs: the ILSVRC2012 validation folder when the user has one, else CIFAR-10 images
resized to the model's input (latency and calibration only: their labels mean nothing to a 1000-class model).

Images are kept as uint8 HWC crops (50,000 x 224 x 224 x 3 = 7.5 GB; as float32 it would be 30 GB) and
normalized batch by batch in the worker (`Normalized`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from harness.errors import UserError

VAL_DIR = "imagenet/val"  # under the data dir: <wnid>/*.JPEG, the layout ILSVRC's valprep.sh / torchvision make
CALIB_DIR = "imagenet/calib"  # optional: any images (e.g. a slice of ILSVRC2012 train) to calibrate with
N_CLASSES = 1000
SUFFIXES = {".jpeg", ".jpg", ".png"}


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def val_files(root: Path) -> tuple[list[Path], np.ndarray]:
    """Files and labels of a validation folder; a class's label is its WordNet id's rank among the 1000
    folders (torchvision's class index), so a subset must keep every class folder, even empty ones."""
    wnids = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(wnids) != N_CLASSES:
        flat = [p for p in root.iterdir() if p.suffix.lower() in SUFFIXES]
        hint = (f"found {len(flat)} images directly in it: sort them into class folders (ILSVRC's valprep.sh)"
                if flat else f"found {len(wnids)} class folders")
        raise UserError(f"{root}: expected the ILSVRC2012 val layout, {N_CLASSES} class folders named by WordNet "
                        f"id (n01440764/ILSVRC2012_val_00000293.JPEG ...); {hint}")
    files, labels = [], []
    for label, wnid in enumerate(wnids):
        found = _images_under(root / wnid)
        files += found
        labels += [label] * len(found)
    if not files:
        raise UserError(f"{root}: no images (.JPEG/.jpg/.png) in its {N_CLASSES} class folders")
    return files, np.asarray(labels, np.int64)


def spread(n_total: int, n: int) -> np.ndarray:
    """n indices spread evenly over n_total files sorted by class, so a --test-limit keeps every class."""
    return np.unique(np.linspace(0, n_total - 1, n).round().astype(np.int64))


def center_crop(path: Path, resize: int, crop: int, interpolation: str) -> np.ndarray:
    """torchvision's ImageClassification preset on a PIL image: shorter side to `resize`, centre crop."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = resize / min(w, h)
        size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
        img = img.resize(size, getattr(Image.Resampling, interpolation.upper()))
        left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
        return np.asarray(img.crop((left, top, left + crop, top + crop)), np.uint8)


def load_files(files: list[Path], resize: int, crop: int, interpolation: str) -> np.ndarray:
    out = np.empty((len(files), crop, crop, 3), np.uint8)
    for i, path in enumerate(files):
        try:
            out[i] = center_crop(path, resize, crop, interpolation)
        except OSError as exc:
            raise UserError(f"{path}: cannot be read as an image ({exc})") from None
        if (i + 1) % 5000 == 0:
            print(f"harness: decoded {i + 1}/{len(files)} images", file=sys.stderr, flush=True)
    return out


def calib_files(root: Path, size: int, seed: int) -> list[Path]:
    files = _images_under(root)
    if len(files) < size:
        raise UserError(f"{root}: {len(files)} images, the recipe asks for {size} calibration images")
    return [files[i] for i in np.sort(np.random.default_rng(seed).choice(len(files), size, replace=False))]


def resized(images: np.ndarray, size: int) -> np.ndarray:
    """Small uint8 HWC images (CIFAR's 32x32) scaled up to size x size, bilinear."""
    from PIL import Image

    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    return out


class Normalized:
    """uint8 HWC images on disk, preprocessed (float32, the model's layout) one slice at a time."""

    def __init__(self, raw: np.ndarray, preprocess):
        self.raw, self.pre = raw, preprocess
        n, h, w, c = raw.shape
        self.shape = (n, c, h, w) if preprocess.layout == "NCHW" else (n, h, w, c)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return self.pre.apply(np.asarray(self.raw[key]))
