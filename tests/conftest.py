"""Shared fixtures: the real data directory (PTQ_HARNESS_DATA, else ../shared/data) and a per-test cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def _data_dir() -> Path | None:
    env = os.environ.get("PTQ_HARNESS_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if (path / "cifar10_test.npz").is_file() else None


DATA = _data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="CIFAR-10 data dir not found (set PTQ_HARNESS_DATA)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if DATA is None:
        pytest.skip("CIFAR-10 data dir not found (set PTQ_HARNESS_DATA)")
    return DATA


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One artifact/ONNX cache for the whole session (exports are reused, as in real runs)."""
    path = Path(os.environ.get("PTQ_HARNESS_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["PTQ_HARNESS_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def test_split(data_dir):
    from harness.data import load_split

    return load_split(data_dir, "test")


def source_for(model: str, data_dir: Path, n_calib: int = 100):
    """A backend Source with a small stratified calibration set from the real training pool."""
    from harness.backends.source import Source
    from harness.data import calibration_indices, load_split
    from harness.models import ZOO

    spec = ZOO[model]
    pool = load_split(data_dir, "train")
    idx = calibration_indices(pool.labels, n_calib, 0)
    return Source(spec, spec.weights_path(data_dir, False), spec.preprocess.apply(pool.images[idx]))


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    import subprocess
    import sys

    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=1800)


def top1(predict, x: np.ndarray, y: np.ndarray) -> float:
    from harness.measure import evaluate

    return evaluate(predict, x, y, 100)[0]["top1"]
