"""Model cards: the user's own model through the harness, against the zoo model it copies, on real data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.cards import card_text, write_resnet20_cards
from tests.conftest import FAST as E2E_FAST
from tests.conftest import REPO, run_cli

FAST = ["--test-limit", "300", *E2E_FAST[2:]]  # run1's settings (tests/conftest.py) on 300 images
# CIFAR ResNet-18 (tests/fixtures/resnet18_cifar.py) counted by hand: conv1 3->64 at 32x32 (1,769,472), layer1
# 4 x 64->64 at 32x32 (150,994,944), layers 2-4 each 3x3 convs 134,217,728 - 2,097,152 + a 1x1 shortcut 2,097,152
# (134,217,728 a layer), and the 512->10 linear (5,120)
RESNET18_MACS = 1_769_472 + 150_994_944 + 3 * 134_217_728 + 5_120
RESNET18_PARAMS = 11_173_962  # kuangliu/pytorch-cifar's ResNet18, the "11.2M" of the seed
# resnet20 the same way: conv1 3->16 at 32x32, 6 convs 16->16 at 32x32, then per stage a strided 3x3 conv and 5
# more at 16x16 / 8x8 (2,359,296 each but the strided 1,179,648; option-A shortcuts have none), linear 64->10
RESNET20_MACS = 442_368 + 6 * 2_359_296 + 2 * (1_179_648 + 5 * 2_359_296) + 640
RESNET20_PARAMS = 269_722  # akamaster/pytorch_resnet_cifar10's resnet.py prints it ("0.27M" in its README)


@pytest.fixture(scope="module")
def cards(tmp_path_factory, data_dir, shared_cache) -> dict[str, Path]:
    return write_resnet20_cards(tmp_path_factory.mktemp("cards"), data_dir)


def _cells(out: Path) -> dict:
    return {(c["model"], c["backend"], c["precision"]): c
            for c in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))}


def test_a_card_is_checked_and_described(cards):
    from harness.models import lookup

    spec = lookup("", str(cards["onnx"]))
    assert (spec.name, spec.builder, spec.num_classes, spec.top_k) == ("resnet20-onnx", "onnx", 10, (1, 3, 5))
    assert spec.preprocess.mean == (0.485, 0.456, 0.406) and spec.uint8_inputs is False
    described = spec.describe()
    assert described["card"] == str(cards["onnx"]) and described["source"] == "onnx"
    assert described["license"].startswith("BSD-2-Clause")


def test_a_worker_reads_a_card_without_importing_the_model(cards):
    """A worker's measuring process (ONNX Runtime timing a checkpoint card's export, say) loads the card but
    must not import torch, onnx or the user's module: their memory would be counted as the cell's. The run
    checked the model file once, before any job; the factory's file still enters the definition digest."""
    import subprocess
    import sys

    probe = ("import sys; from harness.models import lookup; s = lookup('', sys.argv[1]); "
             "print(sorted(m for m in ('torch', 'onnx', 'my_resnet') if m in sys.modules), s.code_files[-1])")
    for card, code_file in ((cards["checkpoint"], cards["checkpoint"].parent / "my_resnet.py"),
                            (cards["onnx"], cards["onnx"])):
        proc = subprocess.run([sys.executable, "-c", probe, str(card)], capture_output=True, text=True,
                              env={"PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split() == ["[]", str(code_file)], (card, proc.stdout)


def test_params_and_macs_are_counted_from_the_model(cards, data_dir, shared_cache):
    """resnet20's parameters and MACs for the zoo entry and both cards (the ONNX one through onnx2torch). The
    ONNX export folds each batch norm into its convolution: 2 parameters a channel become 1 bias, so the ONNX
    model holds 688 fewer (19 batch norms, 16 x 7 + 32 x 6 + 64 x 6 channels) for the same MACs."""
    from harness.models import ZOO, lookup
    from harness.models.info import count

    x = np.zeros((1, 3, 32, 32), np.float32)
    for spec, params in ((ZOO["resnet20"], RESNET20_PARAMS), (lookup("", str(cards["onnx"])), RESNET20_PARAMS - 688),
                         (lookup("", str(cards["checkpoint"])), RESNET20_PARAMS)):
        info = count(spec, spec.weights_path(data_dir, False), x)
        assert (info["params"], info["macs_per_image"], info["output_shape"]) == (params, RESNET20_MACS, [1, 10]), \
            spec.name


def test_the_cards_give_the_zoo_models_figures_in_every_runtime(cards, run1, data_dir, env_unavailable, tmp_path):
    """Round trip against run1 (the zoo's resnet20, same test subset and calibration images): the ONNX card
    through each path (onnx2torch into eager, IPEX and LiteRT; the file into ONNX Runtime), the checkpoint card
    through its ONNX export (in PyTorch it is the zoo's own module class). fp32 top-1 identical, int8 within
    0.3 points of the zoo's cell of the same runtime. (torch-inductor compiles per shape, 2-3 min a cell, as
    run1 leaves it out: the full acceptance run covers it; tflite has no Keras twin of a card's model.)"""
    # onnx2torch's module in every PyTorch runtime, the file itself in ONNX Runtime (OpenVINO reads that same
    # file; tflite refuses any card: both shown in the acceptance run, cut here for CI's time)
    onnx_backends = [b for b in ("torch", "onnxruntime", "litert", "ipex") if b not in env_unavailable]
    cells = {}
    for card, backends in ((cards["onnx"], onnx_backends), (cards["checkpoint"], ["onnxruntime"])):
        out = tmp_path / card.parent.name
        proc = run_cli("run", "--models", str(card), "--backends", ",".join(backends), "--precisions",
                       "fp32,int8", "--data-dir", str(data_dir), "--out", str(out), *E2E_FAST)
        assert proc.returncode == 0, proc.stderr[-3000:]
        cells.update(_cells(out))
    zoo = _cells(run1)
    for (model, backend, precision), mine in cells.items():
        ref = zoo[("resnet20", backend, precision)]
        assert mine["status"] == "ok", (model, backend, precision, mine["reason"])
        if precision == "fp32":
            assert mine["accuracy"]["top1"] == ref["accuracy"]["top1"], (model, backend)
        else:
            assert abs(mine["accuracy"]["top1"] - ref["accuracy"]["top1"]) <= 0.3, (model, backend)
        assert mine["model_info"]["params"] == RESNET20_PARAMS - (688 if model == "resnet20-onnx" else 0)
        assert mine["model_info"]["card"].endswith("card.toml")
    assert len(cells) == 2 * len(onnx_backends) + 2
    acc = cells[("resnet20-onnx", "onnxruntime", "fp32")]["accuracy"]
    assert set(acc["topk"]) == {"1", "3", "5"}
    assert acc["topk"]["1"] == acc["top1"] and acc["topk"]["5"] == acc["top5"] and acc["top1"] <= acc["topk"]["3"]


def test_a_torchscript_card_runs_where_nothing_traces_python(cards, run1, data_dir, tmp_path):
    """A TorchScript file: eager PyTorch runs it and the ONNX export takes it to ONNX Runtime (fp32 top-1 equal
    to the zoo's in run1); the columns that trace Python say they cannot (`harness list`; their cells say the
    same, from the same Backend.model_reason)."""
    proc = run_cli("list", "--models", str(cards["torchscript"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model resnet20-ts (card" in proc.stdout and "cannot trace a TorchScript file" in proc.stdout
    assert "no Keras twin of resnet20-ts" in proc.stdout  # tflite: the zoo only; litert converts any card
    out = tmp_path / "run"
    proc = run_cli("run", "--models", str(cards["torchscript"]), "--backends", "torch,onnxruntime", "--precisions",
                   "fp32", "--data-dir", str(data_dir), "--out", str(out), *E2E_FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    zoo = _cells(run1)
    for backend in ("torch", "onnxruntime"):
        mine = _cells(out)[("resnet20-ts", backend, "fp32")]
        assert mine["status"] == "ok", mine["reason"]
        assert mine["accuracy"]["top1"] == zoo[("resnet20", backend, "fp32")]["accuracy"]["top1"]
        assert mine["model_info"]["macs_per_image"] == RESNET20_MACS


def _png_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / f"class{label}" / f"{i:05d}.png")


def test_an_image_folder_gives_the_npz_path_top1(cards, data_dir, test_split, tmp_path):
    """PNG class folders (labels by sorted folder name, as torchvision's ImageFolder) and an npz of the same
    CIFAR-10 images give the same tensors and the same top-1; the calibration images come from the train pool."""
    from harness.data import load_split

    pool = load_split(data_dir, "train")
    n = 200
    order = np.argsort(test_split.labels[:n], kind="stable")  # folder order: by class, then file name
    x, y = test_split.images[:n][order], test_split.labels[:n][order]
    np.savez(tmp_path / "test.npz", images=x, labels=y)
    np.savez(tmp_path / "calib.npz", images=pool.images[::50], labels=pool.labels[::50])
    _png_folder(tmp_path / "test", x, y)
    _png_folder(tmp_path / "calib", pool.images[::50], pool.labels[::50])
    shutil.copy(cards["onnx"].parent / "resnet20.onnx", tmp_path / "m.onnx")
    tops = {}
    for kind, test, calib in (("npz", "test.npz", "calib.npz"), ("imagefolder", "test", "calib")):
        card = tmp_path / f"{kind}.toml"
        card.write_text(card_text(kind, "onnx", "m.onnx", dataset=f'kind = "{kind}"\ntest = "{test}"\n'
                                                                  f'calibration = "{calib}"'))
        out = tmp_path / f"run-{kind}"
        proc = run_cli("run", "--models", str(card), "--backends", "onnxruntime", "--precisions", "fp32,int8",
                       "--calibration-size", "50", "--min-duration", "0.02", "--min-count", "5",
                       "--data-dir", str(data_dir), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        cells = _cells(out)
        tops[kind] = {p: cells[(kind, "onnxruntime", p)]["accuracy"]["top1"] for p in ("fp32", "int8")}
        assert cells[(kind, "onnxruntime", "fp32")]["test"]["size"] == n
    assert tops["npz"] == tops["imagefolder"] and tops["npz"]["fp32"] > 80


def test_a_model_the_zoo_does_not_have(data_dir, tmp_path):
    """CIFAR ResNet-18, seeded random weights, from a checkpoint card asking for top-3: its cells carry the
    parameter and MAC counts (exact, counted by hand above) and top-1/3 (chance: random weights). ONNX Runtime
    only here (its export is the path every non-PyTorch runtime takes); the acceptance run takes it everywhere."""
    import torch

    from tests.fixtures.resnet18_cifar import seeded_state_dict

    shutil.copy(REPO / "tests" / "fixtures" / "resnet18_cifar.py", tmp_path / "resnet18_cifar.py")
    torch.save(seeded_state_dict(0), tmp_path / "resnet18.pt")
    card = tmp_path / "card.toml"
    card.write_text(card_text("resnet18-cifar", "torch-checkpoint", "resnet18.pt",
                              'architecture = "resnet18_cifar:resnet18"\ntop_k = [1, 3]'))
    out = tmp_path / "run"
    proc = run_cli("run", "--models", str(card), "--backends", "onnxruntime", "--precisions", "fp32,int8",
                   "--data-dir", str(data_dir), "--out", str(out), *FAST[2:], "--test-limit", "100")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (_, backend, precision), c in _cells(out).items():
        assert c["status"] == "ok", (backend, precision, c["reason"])
        info = c["model_info"]
        assert (info["params"], info["macs_per_image"]) == (RESNET18_PARAMS, RESNET18_MACS)
        topk = c["accuracy"]["topk"]
        assert set(topk) == {"1", "3"} and topk["1"] <= topk["3"] <= 100


IMAGENET_VAL_CARD = """schema_version = 1
name = "mine-1k"
source = "onnx"
path = "m.onnx"
num_classes = NUM
[input]
shape = [3, 32, 32]
[preprocess]
resize = 36
[dataset]
kind = "imagenet-val"
test = "val"
calibration = "calib"
"""


def test_an_imagenet_val_card_labels_by_wordnet_rank_and_keeps_calibration_apart(tmp_path):
    """A card on ILSVRC2012-layout folders: labels are the WordNet ids' ranks (torchvision's class index), the
    test tensor is the centre crops of the files in that order, calibration is drawn from its own folder only,
    and a calibration image that is also a test image (same content, another name) is refused."""
    from harness.config import RunSettings
    from harness.data import imagenet
    from harness.errors import UserError
    from harness.models.card import load_card
    from harness.prepare import Context
    from harness.prepare.files import tensors
    from harness.recipe import Recipe
    from tests.test_imagenet import WNIDS, val_folder

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 48, 3), np.uint8) for _ in range(7)]
    val_folder(tmp_path / "val", {3: images[:2], 999: images[2:3]})
    val_folder(tmp_path / "calib", {3: images[3:5], 500: images[5:7]})
    (tmp_path / "m.onnx").write_bytes(b"not read here: the model is not run")
    card = tmp_path / "card.toml"
    card.write_text(IMAGENET_VAL_CARD.replace("NUM", "10"))
    with pytest.raises(UserError, match=r"card.toml: key 'num_classes' = 10: expected 1000 for dataset kind "
                                        r"imagenet-val"):
        load_card(card, check_model=False)
    card.write_text(IMAGENET_VAL_CARD.replace("NUM", "1000"))
    spec = load_card(card, check_model=False)
    ctx = Context(tmp_path, False, RunSettings(), Recipe(calibration_size=4), tmp_path / "cache")
    t = tensors(spec, ctx)
    assert np.load(t["test_y"]).tolist() == [3, 3, 999] and t["test"]["size"] == 3
    files = imagenet.val_files(tmp_path / "val")[0]
    assert np.array_equal(np.load(t["test_x"]), imagenet.load_files(files, 36, 32, "bilinear"))
    assert t["calibration"]["size"] == 4 and str(tmp_path / "calib") in t["calibration"]["source"]
    calib = imagenet.load_files(imagenet.val_files(tmp_path / "calib")[0], 36, 32, "bilinear")
    assert np.allclose(np.load(t["calib_x"]), spec.preprocess.apply(calib))
    shutil.copy(files[2], tmp_path / "calib" / WNIDS[999] / "renamed.png")
    with pytest.raises(UserError, match=r"'dataset.calibration' = .*expected no image of the test set .*1 images "
                                        r"are in both"):
        tensors(spec, ctx)
