"""Per-op profiles (harness/profiles) from every registered backend's own profiler, on the artifacts the session's
runs built (conftest's run1 and compiled_run), in the interpreter `harness run` would use: the figures are
checked against what resnet20 is known to be (19 convolutions and 1 fully connected layer = 20 compute ops,
each in the precision the cell asked for), and the op times against the call they are part of."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from harness.backends import BACKENDS
from tests.conftest import REPO, backend_python, run_artifact, run_cells

MODEL = "resnet20"
RESNET20_COMPUTE_OPS = 19 + 1  # 19 convolutions (3 x 3 blocks x 2 + the stem) and the classifier
PROFILE = """
import json, sys
from pathlib import Path
import numpy as np
from harness.backends import Artifact, get_backend
from harness.backends.source import Source
from harness.models import ZOO
from harness.profiles import summarize
a = json.loads(sys.argv[1])
backend = get_backend(a["backend"])
meta = json.loads(Path(a["meta"]).read_text())
x = np.load(a["x"])
src = Source(ZOO[a["model"]], Path(a["weights"]), x[:1])
art = Artifact(Path(meta["path"]), tuple(Path(f) for f in meta["files"]), meta["details"], src=src)
print(json.dumps(summarize(backend.profile(art, 1, 1, x[:1], Path(a["workdir"])), 1)))
"""


@pytest.fixture(scope="module")
def inputs(run1, compiled_run, data_dir, test_split, env_unavailable, tmp_path_factory):
    from harness.models import ZOO

    tmp = tmp_path_factory.mktemp("profiles")
    np.save(tmp / "x.npy", ZOO[MODEL].preprocess.apply(test_split.images[:1]))
    return run_cells(run1, compiled_run), tmp, ZOO[MODEL].weights_path(data_dir, False), env_unavailable


# and LiteRT's dynamic range: float inputs, int8 weights, int8 math (its op list says int8, not the input's fp32)
CASES = [pytest.param(b, p, id=f"{b}-{p}") for b in BACKENDS for p in ("fp32", "int8")] + \
    [pytest.param(b, "dynamic", id=f"{b}-dynamic") for b in ("tflite", "litert")]


@pytest.mark.parametrize("backend, precision", CASES)
def test_every_backend_profiles_the_ops_resnet20_is_made_of(backend, precision, inputs, tmp_path):
    cells, tmp, weights, env_unavailable = inputs
    meta = run_artifact(cells, backend, precision, env_unavailable)
    python, env = backend_python(backend)
    args = {"model": MODEL, "backend": backend, "meta": str(meta), "weights": str(weights),
            "x": str(tmp / "x.npy"), "workdir": str(tmp_path)}
    proc = subprocess.run([python, "-c", PROFILE, json.dumps(args)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    p = json.loads(proc.stdout.strip().splitlines()[-1])
    counts = p["compute_ops"]
    assert sum(counts.values()) == RESNET20_COMPUTE_OPS, counts
    if precision == "fp32":
        assert counts == {"fp32": RESNET20_COMPUTE_OPS}
    else:  # int8 kernels for most of them (ONNX Runtime's S8S8 leaves some in float: test_diagnosis)
        assert counts.get("int8", 0) + counts.get("uint8", 0) >= RESNET20_COMPUTE_OPS // 2, counts
    assert p["calls"] >= 3 and p["wall_ms"] > 0
    if p["total_ms"] is None:  # LiteRT / TFLite: no op timer in their Python API, said so
        assert "no per-op times" in p["note"] and all(o["ms"] is None for o in p["ops"])
        return
    # the ops are part of the call: together no longer than it (5% for timer granularity), and most of it
    assert 0.3 * p["wall_ms"] <= p["total_ms"] <= 1.05 * p["wall_ms"], (p["total_ms"], p["wall_ms"])
    assert sum(o["ms"] for o in p["ops"]) <= p["total_ms"] + 1e-4 * len(p["ops"])  # each rounded to 0.1 us
    assert abs(sum(o["share"] for o in p["ops"]) - sum(o["ms"] for o in p["ops"]) / p["total_ms"]) < 0.01
    # resnet20's time is in its convolutions: 0.52-0.96 of the op time measured here (the compiled path's batch-1
    # calls spend the rest in Dynamo's guards and the graph call)
    assert 0.35 <= p["shares"]["compute"] <= 1.0


def test_torch_dynamic_counts_its_dynamic_classifier_as_int8(data_dir, test_split, tmp_path):
    """quantized::linear_dynamic takes float input and multiplies in int8: of resnet20's 20 compute ops the
    classifier is int8 and the 19 convolutions fp32 (by its input type all 20 read fp32, and the cell's
    float_fallback evidence said 20 of 20)."""
    from harness.backends import get_backend
    from harness.models import ZOO
    from harness.profiles import summarize
    from tests.conftest import source_for

    backend = get_backend("torch")
    art = backend.build(source_for(MODEL, data_dir, 10), "dynamic", tmp_path)
    x = ZOO[MODEL].preprocess.apply(test_split.images[:1])
    p = summarize(backend.profile(art, 1, 1, x, tmp_path), 1)
    assert p["compute_ops"] == {"fp32": RESNET20_COMPUTE_OPS - 1, "int8": 1}, p["compute_ops"]
