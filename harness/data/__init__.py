"""Datasets: CIFAR-10 (official python archive layout or npz), preprocessing and calibration sets."""

from harness.data.cifar10 import CLASSES, Split, data_root, load_split
from harness.data.prep import Preprocess, calibration_indices

__all__ = ["CLASSES", "Split", "data_root", "load_split", "Preprocess", "calibration_indices"]
