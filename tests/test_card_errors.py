"""Bad model cards: one line naming the card, the key and what was expected, exit code 2, nothing written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.cards import card_text, write_resnet20_cards
from tests.conftest import run_cli
from tests.test_cli import _assert_user_error


@pytest.fixture(scope="module")
def good(tmp_path_factory, data_dir, shared_cache) -> dict[str, Path]:
    return write_resnet20_cards(tmp_path_factory.mktemp("cards"), data_dir)


def _npz(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    np.savez(path, images=images, labels=labels)


def _edit(good: dict, which: str, tmp: Path, old: str, new: str) -> Path:
    """A copy of a good card's folder with one line of its card changed."""
    folder = tmp / which
    shutil.copytree(good[which].parent, folder)
    text = (folder / "card.toml").read_text()
    changed = re.sub(old[3:], new, text, count=1) if old.startswith("re:") else text.replace(old, new, 1)
    assert changed != text or old == new, (old, text)
    (folder / "card.toml").write_text(changed)
    return folder / "card.toml"


def _folders(tmp: Path, test_split, same: bool) -> tuple[Path, Path]:
    from PIL import Image

    roots = (tmp / "test", tmp / "calib")
    for n, root in enumerate(roots):
        for i in range(4):
            (root / str(i % 2)).mkdir(parents=True, exist_ok=True)
            k = i if same and i == 0 else i + 4 * n  # calib's first image is test's first one when `same`
            Image.fromarray(test_split.images[k]).save(root / str(i % 2) / f"{n}{i}.png")
    return roots


# (card change: old -> new, the fragments the one-line error must hold)
EDITS = {
    "unknown key": ("onnx", 'num_classes = 10', 'num_classes = 10\ncolour = "red"', ["key 'colour'"]),
    "missing file": ("onnx", 'path = "resnet20.onnx"', 'path = "nowhere.onnx"', ["key 'path'", "nowhere.onnx"]),
    "checksum mismatch": ("onnx", 're:sha256 = "[0-9a-f]{4}', 'sha256 = "0000',
                          ["key 'sha256'", "expected the sha256"]),
    "schema version": ("onnx", "schema_version = 1", "schema_version = 7", ["key 'schema_version'"]),
    "unknown source": ("onnx", 'source = "onnx"', 'source = "keras"', ["key 'source'", "torch-checkpoint"]),
    "zoo name": ("onnx", 'name = "resnet20-onnx"', 'name = "resnet20"', ["key 'name'", "not a zoo model"]),
    "top_k above classes": ("onnx", "top_k = [1, 3, 5]", "top_k = [1, 11]", ["key 'top_k'", "num_classes (10)"]),
    "num_classes vs output": ("onnx", "num_classes = 10", "num_classes = 100", ["key 'num_classes'", "(1, 10)"]),
    "factory not importable": ("checkpoint", 'my_resnet:resnet20', 'their_resnet:resnet20',
                               ["key 'architecture'", "their_resnet"]),
    "bad input shape": ("checkpoint", "shape = [3, 32, 32]", "shape = [32, 32, 3]", ["key 'input.shape'"]),
    "unknown dataset kind": ("checkpoint", 'kind = "cifar10"', 'kind = "mnist"', ["key 'dataset.kind'", "npz"]),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_a_bad_card_is_one_line_and_exit_2(case, good, data_dir, tmp_path):
    which, old, new, fragments = EDITS[case]
    card = _edit(good, which, tmp_path, old, new)
    proc = run_cli("run", "--models", str(card), "--backends", "onnxruntime", "--precisions", "fp32",
                   "--data-dir", str(data_dir), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, str(card), *fragments)
    assert not (tmp_path / "run").exists()


def test_a_factory_that_raises_and_a_file_that_is_not_onnx(good, data_dir, tmp_path):
    card = _edit(good, "checkpoint", tmp_path, "", "")
    (card.parent / "my_resnet.py").write_text("def resnet20():\n    raise ValueError('no such depth')\n")
    proc = run_cli("run", "--models", str(card), "--data-dir", str(data_dir), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, str(card), "factory raised ValueError: no such depth")
    card = _edit(good, "onnx", tmp_path / "2", "", "")
    (card.parent / "resnet20.onnx").write_bytes(b"PK\x03\x04 a zip, not a protobuf")
    text = card.read_text()
    card.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("sha256")))
    proc = run_cli("run", "--models", str(card), "--data-dir", str(data_dir), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, str(card), "expected an ONNX model")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("same_content", [True, False])
def test_calibration_never_comes_from_the_test_images(same_content, good, data_dir, test_split, tmp_path):
    """Nested folders are refused from the card alone; separate folders sharing an image by content are
    refused when the images are read (before anything is written)."""
    test, calib = _folders(tmp_path, test_split, same=same_content)
    dataset = (f'kind = "imagefolder"\ntest = "{test}"\ncalibration = "{calib if same_content else test / "0"}"')
    card = tmp_path / "card.toml"
    shutil.copy(good["onnx"].parent / "resnet20.onnx", tmp_path / "m.onnx")
    card.write_text(card_text("folders", "onnx", "m.onnx", dataset=dataset))
    proc = run_cli("run", "--models", str(card), "--backends", "onnxruntime", "--precisions", "fp32",
                   "--calibration-size", "2", "--data-dir", str(data_dir), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, str(card), "key 'dataset.calibration'",
                       "1 images are in both" if same_content else "apart from the test set")
    assert not (tmp_path / "run").exists()


def test_an_npz_of_the_wrong_shape_names_the_file(good, data_dir, test_split, tmp_path):
    _npz(tmp_path / "test.npz", test_split.images[:8, :16], test_split.labels[:8])
    _npz(tmp_path / "calib.npz", test_split.images[8:16], test_split.labels[8:16])
    shutil.copy(good["onnx"].parent / "resnet20.onnx", tmp_path / "m.onnx")
    card = tmp_path / "card.toml"
    card.write_text(card_text("npz", "onnx", "m.onnx", dataset='kind = "npz"\ntest = "test.npz"\n'
                                                              'calibration = "calib.npz"'))
    proc = run_cli("run", "--models", str(card), "--backends", "onnxruntime", "--precisions", "fp32",
                   "--calibration-size", "4", "--data-dir", str(data_dir), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, "test.npz", "uint8 N x 32 x 32 x 3", "(8, 16, 32, 3)")
