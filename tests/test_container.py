"""The container flow (build, run with --network none, docker cp back) against a second Docker engine
reached only through DOCKER_HOST: nothing may assume a local bind mount or the default engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.config import load_target
from harness.container import image_tag
from tests import engines
from tests.cards import card_text, write_resnet20_cards
from tests.conftest import run_cli

_docker, _engine_ready, BASE = engines.docker, engines.engine_ready, engines.BASE


@pytest.fixture(scope="module")
def second_engine(tmp_path_factory):
    with engines.second_engine(tmp_path_factory.mktemp("engine2")) as sock:
        yield sock


def test_container_flow_through_docker_host_only(second_engine, data_dir, tmp_path):
    env = {"DOCKER_HOST": second_engine}
    base_id = _docker("image", "inspect", "--format", "{{.Id}}", BASE, host=second_engine).stdout.strip()
    tag = image_tag(load_target("smoke"), base_id)
    on_default_before = _docker("image", "inspect", tag).returncode == 0
    card = write_resnet20_cards(tmp_path / "cards", data_dir)["onnx"]  # goes in with its folder
    proc = run_cli("container", "run", "--target", "smoke", "--results", str(tmp_path / "results"), "--",
                   "--data-dir", str(data_dir), "--test-limit", "300", "--models", f"resnet20,{card}", env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    runs = list((tmp_path / "results" / "smoke").glob("*/run.json"))
    assert len(runs) == 1
    run = json.loads(runs[0].read_text())
    container = run["environment"]["container"]
    assert container["image"].startswith("ptq-harness:smoke-") and container["image_id"].startswith("sha256:")
    cells = {(c["model"], c["precision"]): c for c in (json.loads(p.read_text())
                                                       for p in runs[0].parent.glob("cells/*.json"))}
    assert {c["status"] for c in cells.values()} == {"ok"} and len(cells) == 4
    # the card's export of the same weights scores as the zoo model on the same images
    for precision in ("fp32", "uint8"):
        assert cells["resnet20-onnx", precision]["accuracy"]["top1"] == cells["resnet20", precision]["accuracy"]["top1"]
    # the image was built on the engine DOCKER_HOST named; the default engine got nothing from this run
    assert _docker("image", "inspect", tag, host=second_engine).returncode == 0
    assert (_docker("image", "inspect", tag).returncode == 0) == on_default_before
    # a second run reuses the image and says so
    again = run_cli("container", "build", "--target", "smoke", env=env)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_a_card_goes_into_the_container_with_its_folder(tmp_path):
    """A card names its files relative to itself: its folder is copied in and --models names the copy; a file
    the card names outside that folder could not follow it, so the run is refused before any container."""
    from harness.container_cards import card_copies
    from harness.errors import UserError

    mine, sets = tmp_path / "mine", tmp_path / "sets"
    mine.mkdir()
    sets.mkdir()
    (mine / "model.onnx").write_bytes(b"checked in the container, where the run loads it")
    (mine / "card.toml").write_text(card_text("mine", "onnx", "model.onnx"))
    args, copies = card_copies(["--models", f"resnet20,{mine / 'card.toml'}", "--test-limit", "5"])
    assert args == ["--models", "resnet20,/card-0/card.toml", "--test-limit", "5"]
    assert copies == [(mine.resolve(), "/card-0")]
    assert card_copies(["--models=resnet20"]) == (["--models=resnet20"], [])
    for name in ("test", "calib"):
        np.savez(sets / f"{name}.npz", images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.zeros(2, np.int64))
    (mine / "far.toml").write_text(card_text("far", "onnx", "model.onnx", dataset='kind = "npz"\n'
                                             'test = "../sets/test.npz"\ncalibration = "../sets/calib.npz"'))
    with pytest.raises(UserError, match=r"far.toml: key 'dataset.test' = '.*sets/test.npz': expected a path "
                                        r"inside the card's folder"):
        card_copies([f"--models={mine / 'far.toml'}"])


def test_gpu_target_without_nvidia_runtime_stops_with_one_line():
    from harness.container import require_gpu
    from harness.errors import UserError

    if not _engine_ready():
        pytest.skip("no Docker engine answers here")
    if "nvidia" in _docker("info", "--format", "{{json .Runtimes}}").stdout:
        pytest.skip("this engine has an NVIDIA runtime")
    with pytest.raises(UserError, match="needs an NVIDIA GPU, but the Docker engine has no NVIDIA runtime"):
        require_gpu(load_target("a100"))


def test_pass_through_args_take_the_host_data_dir():
    from harness.cli import _split_data_dir
    from harness.errors import UserError

    assert _split_data_dir(["--", "--data-dir", "/d", "--models", "resnet20"]) == ("/d", ["--models", "resnet20"])
    assert _split_data_dir(["--data-dir=/e"]) == ("/e", [])
    with pytest.raises(UserError, match="--out"):
        _split_data_dir(["--out", "x"])


def test_every_target_file_is_valid():
    for toml in Path(__file__).resolve().parent.parent.glob("targets/*.toml"):
        target = load_target(toml.stem)
        assert target.name == toml.stem
        if target.container:
            assert target.container["lock"].startswith("targets/locks/")
