"""CIFAR-10 loading from both layouts, checksummed download (loopback server and file URL), calibration."""

from __future__ import annotations

import functools
import hashlib
import http.server
import pickle
import tarfile
import threading

import numpy as np
import pytest

from harness.data import calibration_indices, load_split
from harness.data.cifar10 import download_official
from harness.errors import UserError


def _batch(path, images, labels):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": labels.tolist()}, f)


@pytest.fixture(scope="module")
def official(tmp_path_factory, data_dir):
    """The official python layout, written from the real npz files (train: the 5000-image subset)."""
    root = tmp_path_factory.mktemp("official")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    with np.load(data_dir / "cifar10_train_subset.npz") as z:
        train_x, train_y = z["images"], z["labels"]
    with np.load(data_dir / "cifar10_test.npz") as z:
        test_x, test_y = z["images"][:1000], z["labels"][:1000]
    for i, part in enumerate(np.array_split(np.arange(len(train_y)), 5), start=1):
        _batch(folder / f"data_batch_{i}", train_x[part], train_y[part])
    _batch(folder / "test_batch", test_x, test_y)
    return root


def test_npz_and_official_layouts_give_the_same_images(official, data_dir):
    npz_test, off_test = load_split(data_dir, "test"), load_split(official, "test")
    assert np.array_equal(npz_test.images[:1000], off_test.images)
    assert np.array_equal(npz_test.labels[:1000], off_test.labels)
    npz_pool, off_pool = load_split(data_dir, "train"), load_split(official, "train")
    idx = calibration_indices(npz_pool.labels, 1000, 0)
    assert np.array_equal(npz_pool.images[idx], off_pool.images[calibration_indices(off_pool.labels, 1000, 0)])


def test_full_test_set_is_real(data_dir):
    test = load_split(data_dir, "test")
    assert test.images.shape == (10000, 32, 32, 3) and test.images.dtype == np.uint8
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert test.labels[:5].tolist() == [3, 8, 8, 0, 6]
    assert hashlib.sha256(test.images.tobytes()).hexdigest().startswith("f9b1e213")


def test_calibration_is_stratified_seeded_and_from_training_images(data_dir):
    pool = load_split(data_dir, "train")
    idx = calibration_indices(pool.labels, 1000, 0)
    assert np.bincount(pool.labels[idx]).tolist() == [100] * 10
    assert np.array_equal(idx, calibration_indices(pool.labels, 1000, 0))
    assert not np.array_equal(idx, calibration_indices(pool.labels, 1000, 1))
    assert len(calibration_indices(pool.labels, 37, 0)) == 37


def _archive(official, tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(official / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_from_loopback_server_is_verified(official, tmp_path):
    archive, md5 = _archive(official, tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{archive.name}"
        root = tmp_path / "cache"
        download_official(root, url, md5)
        assert np.array_equal(load_split(root, "test").labels, load_split(official, "test").labels)
        with pytest.raises(UserError, match="md5"):
            download_official(tmp_path / "other", url, "0" * 32)
        assert not (tmp_path / "other" / archive.name).exists()  # a bad download leaves nothing behind
    finally:
        server.shutdown()


def test_download_from_file_url(official, tmp_path):
    archive, md5 = _archive(official, tmp_path)
    root = tmp_path / "cache"
    download_official(root, archive.as_uri(), md5)
    assert load_split(root, "train").images.shape == (5000, 32, 32, 3)


def test_corrupt_or_missing_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="expected cifar10_test.npz"):
        load_split(tmp_path, "test")
    (tmp_path / "cifar10_test.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cifar10_test.npz"):
        load_split(tmp_path, "test")


def test_fetch_data_fills_a_data_folder_from_a_mirror_checked_against_the_published_sums(data_dir, tmp_path):
    """`harness fetch-data` (a Kubernetes init container's command) with PTQ_HARNESS_MIRROR: the weights come by
    name from the mirror into the --data-dir layout, checked against the published sha256; a mirror serving
    another file under that name is one line, exit 2, and leaves nothing behind."""
    import shutil

    from harness.models import ZOO
    from tests.conftest import run_cli

    spec = ZOO["resnet20"]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(data_dir / spec.subdir / spec.filename, mirror / spec.url.rsplit("/", 1)[-1])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"PTQ_HARNESS_MIRROR": f"http://127.0.0.1:{server.server_port}/"}
    try:
        for folder in ("good", "bad"):  # CIFAR-10 already there (the npz): only the weights travel
            (tmp_path / folder).mkdir()
            for name in ("cifar10_test.npz", "cifar10_train_subset.npz"):
                (tmp_path / folder / name).symlink_to(data_dir / name)
        proc = run_cli("fetch-data", "--data-dir", str(tmp_path / "good"), "--models", "resnet20", env=env)
        assert proc.returncode == 0, proc.stderr
        got = tmp_path / "good" / spec.subdir / spec.filename
        assert got.read_bytes() == (data_dir / spec.subdir / spec.filename).read_bytes()
        (mirror / spec.url.rsplit("/", 1)[-1]).write_bytes(b"another file under the same name")
        proc = run_cli("fetch-data", "--data-dir", str(tmp_path / "bad"), "--models", "resnet20", env=env)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "sha256" in proc.stderr, proc.stderr
        assert not (tmp_path / "bad" / spec.subdir).exists() or not any((tmp_path / "bad" / spec.subdir).iterdir())
    finally:
        server.shutdown()
