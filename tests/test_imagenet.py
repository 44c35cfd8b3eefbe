"""ImageNet-shaped models: the ILSVRC2012 val layout, torchvision's 8-hex checksums, seeded weights for
latency-only cells, and a measured top-1 through the same tensors a run prepares."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from harness.config import RunSettings
from harness.data import imagenet
from harness.errors import UserError
from harness.models import ZOO, build_torch
from harness.recipe import Recipe
from tests.conftest import run_cli

WNIDS = [f"n{i:08d}" for i in range(1000)]


def png(path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def val_folder(root, placed: dict[int, list[np.ndarray]]):
    """An ILSVRC2012-layout folder: all 1000 class folders, images only in the classes given."""
    for wnid in WNIDS:
        (root / wnid).mkdir(parents=True, exist_ok=True)
    for label, images in placed.items():
        for k, img in enumerate(images):
            png(root / WNIDS[label] / f"ILSVRC2012_val_{label:05d}{k:03d}.png", img)
    return root


def test_val_labels_are_the_wordnet_rank(tmp_path):
    rng = np.random.default_rng(0)
    root = val_folder(tmp_path / "val", {3: [rng.integers(0, 255, (40, 60, 3), np.uint8)] * 2,
                                         999: [rng.integers(0, 255, (50, 50, 3), np.uint8)]})
    files, labels = imagenet.val_files(root)
    assert labels.tolist() == [3, 3, 999] and files[2].parent.name == WNIDS[999]


def test_flat_or_partial_val_folders_are_refused_with_the_layout(tmp_path):
    flat = tmp_path / "flat"
    png(flat / "ILSVRC2012_val_00000001.JPEG", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="1000 class folders .*found 1 images directly in it.*valprep"):
        imagenet.val_files(flat)
    for wnid in WNIDS[:12]:
        (tmp_path / "part" / wnid).mkdir(parents=True)
    with pytest.raises(UserError, match="found 12 class folders"):
        imagenet.val_files(tmp_path / "part")


def test_centre_crop_follows_torchvision_preset(tmp_path):
    """Shorter side to 256, centre 224: a 256x384 (h x w) image keeps rows 16..239 and columns 80..303."""
    img = np.zeros((256, 384, 3), np.uint8)
    img[16:240, 80:304] = 200  # exactly the crop window
    png(tmp_path / "a.png", img)
    crop = imagenet.center_crop(tmp_path / "a.png", 256, 224, "bilinear")
    assert crop.shape == (224, 224, 3) and (crop == 200).all()


def test_spread_keeps_every_class_of_a_sorted_list():
    labels = np.repeat(np.arange(10), 50)
    assert set(labels[imagenet.spread(len(labels), 20)]) == set(range(10))


def test_torchvision_names_carry_an_8_hex_checksum_prefix(tmp_path):
    spec = ZOO["resnet50"]
    assert spec.sha256 == "0676ba61" and spec.url.endswith(spec.filename)
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / spec.filename).write_bytes(b"not the checkpoint")
    with pytest.raises(UserError, match="expected it to start with 0676ba61"):
        spec.weights_path(tmp_path, may_download=False)
    assert spec.weights_path(tmp_path / "empty", may_download=False) is None  # optional: seeded weights instead


@pytest.fixture(scope="module")
def cifar(data_dir):
    from harness.data import load_split

    test, pool = load_split(data_dir, "test"), load_split(data_dir, "train")
    return {"calib": pool.images[:10], "test": test.images, "pool": pool.images}


def test_seeded_weights_are_the_same_every_time(cifar, tmp_path):
    import torch

    from harness.prepare import seeded_weights

    spec = ZOO["mobilenet_v2"]
    a, b = seeded_weights(spec, tmp_path / "a", cifar["pool"]), seeded_weights(spec, tmp_path / "b", cifar["pool"])
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # batch norms hold the statistics of real images, not the identity of an untrained net
    assert float(sa["features.1.conv.0.1.running_var"].std()) > 0


def test_without_weights_or_val_accuracy_is_not_measured(cifar, data_dir, tmp_path):
    from harness.prepare import imagenet_tensors

    spec = ZOO["mobilenet_v2"]
    cal = {"size": 10, "source": "pool", "sha256": "x"}
    t = imagenet_tensors(spec, tmp_path, False, RunSettings(), Recipe(), tmp_path / "cache", cifar, cal)
    assert t["accuracy_not_measured"] == "no published weights, the model runs seeded random weights"
    assert np.load(t["test_x"]).shape == (256, 224, 224, 3) and np.load(t["calib_x"]).shape == (10, 3, 224, 224)
    assert "resized to 224x224" in t["calibration"]["source"] and t["model_info"]["weights"].endswith(".pth")


def test_published_weights_and_val_folder_measure_top1(cifar, tmp_path):
    """Images filed under the class the model predicts for them: top-1 through the prepared (uint8, cropped,
    normalized per batch) tensors must then be 100%, which checks the labels, the crop and the normalization
    together; a --test-limit keeps an even spread."""
    import torch

    from harness.measure import evaluate
    from harness.prepare import imagenet_tensors, seeded_weights

    base = ZOO["mobilenet_v2"]
    weights = seeded_weights(base, tmp_path / "w", cifar["pool"])
    from harness.data.download import file_digest

    spec = dataclasses.replace(base, filename=f"mine-{file_digest(weights)[:8]}.pth", sha256=file_digest(weights)[:8])
    (tmp_path / "data" / "torchvision").mkdir(parents=True)
    (tmp_path / "data" / "torchvision" / spec.filename).write_bytes(weights.read_bytes())
    model = build_torch(spec, weights)
    images = [np.asarray(imagenet.resized(cifar["test"][i:i + 1], 300)[0]) for i in range(12)]
    for i, img in enumerate(images):
        png(tmp_path / "probe" / f"{i}.png", img)
    crops = imagenet.load_files([tmp_path / "probe" / f"{i}.png" for i in range(12)], 256, 224, "bilinear")
    with torch.inference_mode():
        predicted = model(torch.from_numpy(spec.preprocess.apply(crops))).argmax(1).tolist()
    placed: dict[int, list] = {}
    for label, img in zip(predicted, images, strict=True):
        placed.setdefault(label, []).append(img)
    val_folder(tmp_path / "data" / "imagenet" / "val", placed)
    cal = {"size": 10, "source": "pool", "sha256": "x"}
    t = imagenet_tensors(spec, tmp_path / "data", False, RunSettings(), Recipe(), tmp_path / "cache", cifar, cal)
    assert t["accuracy_not_measured"] is None and t["test"]["accuracy"] == "measured" and t["test"]["size"] == 12
    x, y = imagenet.Normalized(np.load(t["test_x"], mmap_mode="r"), spec.preprocess), np.load(t["test_y"])
    with torch.inference_mode():
        acc, _ = evaluate(lambda b: model(torch.from_numpy(b)).numpy(), x, y, 5, 1000)
    assert acc["top1"] == 100.0 and acc["per_class"] is None and sorted(y.tolist()) == sorted(predicted)
    limited = imagenet_tensors(spec, tmp_path / "data", False, RunSettings(test_limit=4), Recipe(),
                               tmp_path / "cache", cifar, cal)
    assert limited["test"]["size"] == 4 and "4 of 12 images" in limited["test"]["source"]


def test_run_without_imagenet_data_measures_latency_and_says_why(data_dir, tmp_path):
    """A real run of an ImageNet-shaped model: cells are ok with timing and size, accuracy `not measured` with
    the reason, agreement with fp32 on the timing images; TFLite says it has no Keras twin."""
    out = tmp_path / "run"
    proc = run_cli("run", "--target", "local", "--models", "mobilenet_v2", "--backends", "onnxruntime,tflite",
                   "--precisions", "fp32,uint8", "--calibration-size", "10", "--batch-sizes", "4", "--warmup", "1",
                   "--min-duration", "0.1", "--min-count", "3", "--data-dir", str(data_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    cells = {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    ort = cells["mobilenet_v2__onnxruntime__uint8"]
    assert ort["status"] == "ok" and ort["accuracy"]["top1"] is None and ort["latency_ms"]["p50"] > 0
    assert ort["accuracy"]["not_measured"].startswith("no published weights") and ort["accuracy"]["agree_n"] == 256
    with np.load(out / "cells" / "mobilenet_v2__onnxruntime__uint8.pred.npz") as q, \
            np.load(out / "cells" / "mobilenet_v2__onnxruntime__fp32.pred.npz") as f:
        agree = float((q["top1"] == f["top1"]).mean() * 100)
    assert ort["accuracy"]["agree_fp32"] == pytest.approx(agree) and ort["accuracy"]["agree_ref"] == \
        "mobilenet_v2__onnxruntime__fp32"
    assert ort["model_info"]["weights"].startswith("mobilenet_v2-seed0")
    assert cells["mobilenet_v2__tflite__fp32"]["reason"].startswith("no Keras twin of mobilenet_v2")
    report = run_cli("report", str(out), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report" / "README.md").read_text()
    assert "not measured" in text and "accuracy not measured: no published weights" in text


def test_calibration_batches_are_capped_by_bytes_not_only_count():
    """100 CIFAR images stay one batch; 224 x 224 images go ~13 at a time (a batch of 100 of them made
    onnxruntime's calibration session peak at 11.7 GB for ResNet-50, 3.7 GB once capped)."""
    from harness.backends.source import Source

    small = Source(ZOO["resnet20"], None, np.zeros((100, 3, 32, 32), np.float32))
    assert [len(b) for b in small.calib_batches(100)] == [100]
    big = Source(ZOO["resnet50"], None, np.zeros((30, 3, 224, 224), np.float32))
    sizes = [len(b) for b in big.calib_batches(100)]
    assert sum(sizes) == 30 and max(sizes) == 13
