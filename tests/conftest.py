"""Shared fixtures: the real data directory (PTQ_HARNESS_DATA, else ../shared/data) and a per-test cache."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.config import load_target

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
def env_unavailable(shared_cache) -> dict:
    """backend -> why its own environment cannot be installed here (a small disk, no network), else absent.
    Its cells then fail with that reason; tests check that and skip the backend, naming the reason."""
    from harness import envs
    from harness.config import load_target

    out = {}
    for env in load_target("local").environments:
        try:
            envs.ensure(env, shared_cache, say=lambda *_: None)
        except envs.EnvError as exc:
            out.update({b: str(exc) for b in env.backends})
    return out


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
    images = pool.images[calibration_indices(pool.labels, n_calib, 0)]
    if spec.dataset == "imagenet":  # as a run without ImageNet data: seeded weights, resized CIFAR images
        from harness.data.cifar10 import cache_dir
        from harness.data.imagenet import resized
        from harness.prepare import seeded_weights

        return Source(spec, seeded_weights(spec, cache_dir(), pool.images),
                      spec.preprocess.apply(resized(images, spec.input_size)))
    return Source(spec, spec.weights_path(data_dir, False), spec.preprocess.apply(images))


def model_inputs(model: str, images: np.ndarray) -> np.ndarray:
    """Test images as the model takes them (ImageNet-shaped models: resized to their input first)."""
    from harness.data.imagenet import resized
    from harness.models import ZOO

    spec = ZOO[model]
    return spec.preprocess.apply(resized(images, spec.input_size) if spec.dataset == "imagenet" else images)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    import subprocess
    import sys

    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=2700)


def top1(predict, x: np.ndarray, y: np.ndarray) -> float:
    from harness.measure import evaluate

    return evaluate(predict, x, y, 100)[0]["top1"]


ENV_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
from harness.backends import Unsupported, get_backend
from harness.backends.source import Source
from harness.models import ZOO
from harness.recipe import from_dict
a = json.loads(sys.argv[1])
spec = ZOO[a["model"]]
backend = get_backend(a["backend"])
try:
    reason = backend.why_not(a["precision"], "cpu", spec)
    if reason:
        raise Unsupported(reason)
    src = Source(spec, Path(a["weights"]), np.load(a["calib"]), from_dict(a["recipe"]))
    art = backend.build(src, a["precision"], Path(a["workdir"]))
    predict = backend.load(art, 2)
except Unsupported as exc:
    print(json.dumps({"unsupported": str(exc)}))
    sys.exit(0)
x = np.load(a["x"])
np.save(a["out"], np.concatenate([predict(x[i:i + 250]) for i in range(0, len(x), 250)]))
print(json.dumps({"size": art.size_bytes(), "details": art.details}, default=str))
"""


def backend_scores(backend: str, precision: str, src, x: np.ndarray, tmp: Path):
    """(scores, size_bytes, details) of one cell, built in-process or inside the backend's own environment
    (as `harness run` would); pytest.skip with the reason when the cell is unsupported here."""
    import json
    import subprocess

    from harness import envs
    from harness.backends import Unsupported, get_backend
    from harness.config import load_target

    tmp.mkdir(parents=True, exist_ok=True)
    env = load_target("local").environment_of(backend)
    if env is None:
        impl = get_backend(backend)
        reason = impl.why_not(precision, "cpu", src.spec)
        if reason:
            pytest.skip(f"{backend} {precision}: {reason}")
        try:
            art = impl.build(src, precision, tmp)
            predict = impl.load(art, 2)
        except Unsupported as exc:
            pytest.skip(f"{backend} {precision}: {exc}")
        scores = np.concatenate([predict(x[i:i + 250]) for i in range(0, len(x), 250)])
        return scores, art.size_bytes(), art.details
    try:
        python = envs.ensure(env, Path(os.environ["PTQ_HARNESS_CACHE"]))
    except envs.EnvError as exc:
        pytest.skip(f"{backend}: its environment cannot be installed here: {exc}")
    np.save(tmp / "x.npy", x)
    np.save(tmp / "calib.npy", src.calib)
    args = {"model": src.spec.name, "backend": backend, "precision": precision, "weights": str(src.weights),
            "calib": str(tmp / "calib.npy"), "x": str(tmp / "x.npy"), "out": str(tmp / "scores.npy"),
            "workdir": str(tmp), "recipe": src.recipe.to_dict()}
    proc = subprocess.run([str(python), "-c", ENV_SCRIPT, json.dumps(args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONNOUSERSITE": "1", "PYTHONPATH": envs.pythonpath(python)},
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if "unsupported" in info:
        pytest.skip(f"{backend} {precision}: {info['unsupported']}")
    return np.load(tmp / "scores.npy"), info["size"], info["details"]


# run1: `harness run` as a user runs it, on a 500-image subset
FAST = ["--test-limit", "500", "--calibration-size", "100", "--min-duration", "0.05", "--min-count", "10",
        "--warmup", "2", "--accuracy-budget", "0"]  # the whole test limit always: asserted image counts
LOCAL = load_target("local")
# what `harness run` runs by default, but torch-inductor: it compiles five times a cell (96-176 s each with FAST
# settings, 11 of run1's minutes); test_e2e's own run of it covers it through the worker on fp32, int8, uint8
BACKENDS = [b for b in LOCAL.backends if b != "torch-inductor"]
COMPILED_PRECISIONS = ("fp32", "int8", "uint8")


def _shared_run(name: str, tmp_path_factory, *args: str) -> Path:
    """A `harness run` the session's tests share. Under `nox -s tests` it is made in $PTQ_TEST_RUNS and kept
    there for the timing pass that follows (see the noxfile); a run cut short is made again, never reused."""
    root = os.environ.get("PTQ_TEST_RUNS")
    out = Path(root) / name if root else tmp_path_factory.mktemp("e2e") / name
    made = out.with_name(f"{name}.made")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a test on the other worker that asks for it waits, never makes it twice
        if not made.is_file():
            shutil.rmtree(out, ignore_errors=True)
            proc = run_cli("run", "--models", "resnet20", *args, "--out", str(out), *FAST)
            assert proc.returncode == 0, proc.stderr[-3000:]
            made.write_text(str(out))
    return out


@pytest.fixture(scope="session")
def run1(data_dir, shared_cache, env_unavailable, tmp_path_factory):
    """The zoo's resnet20 through every default backend but torch-inductor, FAST (test_e2e, test_cards)."""
    return _shared_run("run1", tmp_path_factory, "--backends", ",".join(BACKENDS), "--data-dir", str(data_dir))


@pytest.fixture(scope="session")
def compiled_run(data_dir, shared_cache, tmp_path_factory):
    """torch-inductor's fp32, int8 and uint8 cells through `harness run`, FAST (test_e2e, test_backends)."""
    return _shared_run("compiled", tmp_path_factory, "--backends", "torch-inductor", "--precisions",
                       ",".join(COMPILED_PRECISIONS), "--data-dir", str(data_dir))


SHARED_RUNS = {"run1", "compiled_run"}


def shared_run_of(backend: str, precision: str) -> str | None:
    """The shared run's fixture that makes this cell, if one does."""
    if backend in BACKENDS:
        return "run1"
    return "compiled_run" if backend == "torch-inductor" and precision in COMPILED_PRECISIONS else None


def pytest_collection_finish(session):
    """Under --dist loadgroup xdist renames each node id to carry its group. A pytest that drops the rename
    (9.2 with xdist 3.8) would scatter the shared-runs tests and each worker would wait on the other's run:
    stop loudly instead (pyproject pins pytest below it)."""
    if getattr(session.config.option, "loadgroup", False) and session.items and "@" not in session.items[0].nodeid:
        raise pytest.UsageError("pytest-xdist's --dist loadgroup has no effect with this pytest (node ids lost "
                                "their @group): install pytest < 9.2")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the marks into groups as it finds them
def pytest_collection_modifyitems(config, items):
    """For pytest-xdist's --dist loadgroup (`nox -s tests` runs two workers): every test that reads the shared
    runs goes to one worker, so each run is made once; every other module stays whole on one worker, so its
    module fixtures (a built artifact, a run of its own) are made once too."""
    for item in items:
        if item.get_closest_marker("xdist_group"):  # set where the test is parametrized (test_backends)
            continue
        group = "shared-runs" if SHARED_RUNS & set(item.fixturenames) else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


def run_cells(*outs) -> dict:
    """(backend, precision) -> cell of the runs' resnet20 cells."""
    import json

    return {(c["backend"], c["precision"]): c for out in outs
            for c in (json.loads(p.read_text()) for p in (out / "cells").glob("resnet20__*.json"))}


def backend_python(backend: str):
    """The interpreter `harness run` uses for a backend (IPEX: its own environment) and its env vars."""
    import sys

    from harness import envs

    env = load_target("local").environment_of(backend)
    if env is None:
        return sys.executable, {}
    python = envs.ensure(env, Path(os.environ["PTQ_HARNESS_CACHE"]))
    return str(python), {"PYTHONNOUSERSITE": "1", "PYTHONPATH": envs.pythonpath(python)}


def run_artifact(cells: dict, backend: str, precision: str, env_unavailable: dict) -> Path:
    """The artifact.json `harness run` left beside the cell's built artifact; skips with the cell's reason."""
    from harness.backends import get_backend
    from harness.models import ZOO

    reason = get_backend(backend).why_not(precision, "cpu", ZOO["resnet20"])
    if reason:
        pytest.skip(f"{backend} {precision}: {reason}")
    if backend in env_unavailable:
        pytest.skip(f"{backend}: its environment cannot be installed here: {env_unavailable[backend]}")
    cell = cells.get((backend, precision))
    if cell is None:
        pytest.skip(f"{backend} {precision}: no run of this session makes it (run1 and compiled_run)")
    if cell["status"] == "unsupported":
        pytest.skip(f"{backend} {precision}: {cell['reason']}")
    assert cell["status"] == "ok", f"{backend} {precision}: {cell['reason']}"
    meta = Path(cell["details"]["artifact"]).parent / "artifact.json"
    assert meta.is_file(), f"{backend} {precision}: no {meta}"
    return meta
