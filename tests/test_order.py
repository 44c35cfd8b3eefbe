"""Order of measurement must not change a figure: for every registered backend x precision that runs here,
batch-1 latency on a fresh instance agrees within 15% before and after an accuracy pass at batch 64 (torch.ao
int8 used to be 1.74x slower after it: oneDNN kept the first shape's kernels). Each cell is built and timed in
the interpreter `harness run` would use (IPEX: its own environment).

Timed at ONE thread. On these shared 2-vCPU VMs a 2-thread instance swings between two speeds in phases of a few
seconds, whatever ran before it (OpenVINO int8 resnet20: 0.20 or 0.30 ms, 8 fresh instances in a row slow, then 5
fast; the same loop at 1 thread: 0.267-0.269 ms for 16 instances). Such a swing would both hide an order effect and
fake one (CI failed once on OpenVINO int8 at 2 threads: best of 5 0.221 ms before, 0.263 after). The effect this
test guards against is per instance and per shape, not per thread count: at 1 thread, timing the accuracy
pass's own instance (the old procedure; MEASURE's "reuse" switch) gives torch.ao int8 1.73x before vs after, which
this test fails, against 1.01-1.06x with the fresh instances the harness uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from harness.backends import BACKENDS
from harness.config import PRECISIONS, RunSettings, load_target
from tests.conftest import REPO, source_for

MODEL = "resnet20"

# 3 tries, each timing batch 1 before and after an accuracy pass: the paired median of 3 ratios outvotes one try
# caught by a host swing (5 tries on 200 images took this file 14.1 min here, 3 on 72 take 10.5). torch-inductor
# compiles on every load (~8 s a shape, freezing bypasses Inductor's graph cache), three loads a try: fp32
# only (SKIP below). Each shape has its own compiled graph, so the accuracy pass has no kernels to leave
# behind for batch 1; both sides are timed.
TRIES = 3
# measuring processes a cell may take: a second one only when the first is out of bounds
ATTEMPTS = 2
# fp16/bf16/dynamic compile through the same CompiledSession as fp32/int8 (one graph per shape); each costs ~2 min
SKIP = {("torch-inductor", p): "the same per-shape CompiledSession as its fp32 cell, which is tested here; each "
        "compiled precision costs ~2 min (9 compiles)" for p in ("fp16", "bf16", "int8", "dynamic")}
# fp16/bf16 load and run through the same session classes as their fp32 cell, which is tested here (a per-shape or
# per-instance cache would show there too); 10-40 s a cell
SKIP.update({(b, p): f"{b} {p} loads and runs through the same session as its fp32 cell, tested here"
             for b in BACKENDS if b != "torch-inductor" for p in ("fp16", "bf16")})
THREADS = 1
# the accuracy pass: one full batch of 64 and a short one of 8 (what a real pass leaves behind: both shapes)
N_IMAGES = 72

# Built in one process and measured in a fresh one that loads the artifact from disk, as `harness run` does
# (a process that has just imported TensorFlow and converted a model times its first loops 15-20% slow).
BUILD = """
import json, sys
from pathlib import Path
import numpy as np
from harness.backends import Unsupported, get_backend
from harness.backends.source import Source
from harness.models import ZOO
a = json.loads(sys.argv[1])
backend = get_backend(a["backend"])
try:
    reason = backend.why_not(a["precision"], "cpu", ZOO[a["model"]])
    if reason:
        raise Unsupported(reason)
    art = backend.build(Source(ZOO[a["model"]], Path(a["weights"]), np.load(a["calib"])), a["precision"],
                        Path(a["workdir"]))
except Unsupported as exc:
    print(json.dumps({"unsupported": str(exc)}))
    sys.exit(0)
print(json.dumps({"path": str(art.path), "details": {**art.details, "precision": a["precision"]}}, default=str))
"""

MEASURE = """
import gc, json, sys
from pathlib import Path
import numpy as np
from harness import measure
from harness.backends import Artifact, Unsupported, get_backend
from harness.backends.source import Source
from harness.models import ZOO
a, built = json.loads(sys.argv[1]), json.loads(sys.argv[2])
backend = get_backend(a["backend"])
src = Source(ZOO[a["model"]], Path(a["weights"]), np.load(a["calib"])[:1])
art = Artifact(Path(built["path"]), (Path(built["path"]),), built["details"], src=src)
x = np.load(a["x"])


def p50(s=None):
    s = s or backend.load(art, a["threads"], 1)
    samples = measure.timed_loop(s.run, s.prepare(x[:1]), 10, a["seconds"], 20, a["warmup_s"])
    del s
    gc.collect()
    return float(np.median(samples))


before, after = [], []
try:
    for _ in range(a["tries"]):
        before.append(p50())
        acc = backend.load(art, a["threads"])  # the accuracy pass: batch 64 and a short last batch, on its own instance
        for i in range(0, len(x), 64):
            acc(x[i:i + 64])
        # "reuse" times the accuracy pass's own instance: the old procedure, to show this test catches it
        after.append(p50(acc if a.get("reuse") else None))
        del acc
except Unsupported as exc:  # e.g. OpenVINO accepted an f16 hint the CPU has no kernels for
    print(json.dumps({"unsupported": str(exc)}))
    sys.exit(0)
print(json.dumps({"before": before, "after": after}))
"""


@pytest.fixture(scope="module")
def inputs(data_dir, test_split, shared_cache, tmp_path_factory):
    from harness.models import ZOO

    src = source_for(MODEL, data_dir, 50)
    tmp = tmp_path_factory.mktemp("order")
    np.save(tmp / "x.npy", ZOO[MODEL].preprocess.apply(test_split.images[:N_IMAGES]))
    np.save(tmp / "calib.npy", src.calib)
    return src, tmp


def _python(backend: str, env_unavailable: dict):
    from pathlib import Path

    from harness import envs

    env = load_target("local").environment_of(backend)
    if env is None:
        return sys.executable, {}
    if backend in env_unavailable:
        pytest.skip(f"{backend}: its environment cannot be installed here: {env_unavailable[backend]}")
    python = envs.ensure(env, Path(os.environ["PTQ_HARNESS_CACHE"]))
    return str(python), {"PYTHONNOUSERSITE": "1", "PYTHONPATH": envs.pythonpath(python)}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_batch1_latency_does_not_depend_on_an_earlier_accuracy_pass(backend, precision, inputs, env_unavailable,
                                                                    tmp_path):
    if (backend, precision) in SKIP:
        pytest.skip(f"{backend} {precision}: {SKIP[backend, precision]}")
    # A real order effect shows in every fresh process (the torch.ao reuse mutation: 1.72 twice); a host phase
    # change does not repeat on cue (CI: onnxruntime uint8 at 0.80, its before side alone spread 0.82-1.00 ms).
    # So a cell out of bounds is measured once more in a new process, and fails only if that one is out too.
    results = _order_ratios(backend, precision, inputs, env_unavailable, tmp_path, reuse=False)
    if all(abs(ratio - 1) > 0.15 for ratio, _ in results):
        pytest.fail(f"{backend} {precision}: after/before " + "; then ".join(
            f"{ratio:.3f} (before {r['before']}, after {r['after']} ms)" for ratio, r in results))


def test_the_order_rule_fails_a_slowdown_in_every_try_and_passes_a_host_phase():
    """The decision rule on recorded shapes of samples. The real mutation (timing batch 1 on the accuracy pass's
    own instance, MEASURE's "reuse") gave torch.ao int8 1.72x after on 2026-11-30's CPU but 0.99x on this AVX2-only
    EPYC (2026-12-01; 2.2-3.9 ms a call either way), so it cannot be a test on every CPU."""
    slowed = {"before": [0.50, 0.52, 0.51], "after": [0.87, 0.88, 0.90]}  # every try 1.7x slower after
    assert _order_ratio(slowed) == pytest.approx(0.87 / 0.50)
    # CI's onnxruntime uint8: the host turned fast after try 1; the paired median 0.80 and the best try 0.80 agree,
    # so one process cannot tell it from an order effect (hence a second process)
    ci = {"before": [0.8218, 0.8244, 1.0024], "after": [0.8593, 0.6608, 0.6788]}
    assert _order_ratio(ci) == pytest.approx(0.6608 / 0.8218)
    # a host swing in one try only: the best try stays at 1.0 and wins
    one_try = {"before": [0.76, 0.77, 0.76], "after": [1.00, 1.01, 0.76]}
    assert _order_ratio(one_try) == pytest.approx(1.0)


def _order_ratios(backend, precision, inputs, env_unavailable, tmp_path, reuse: bool) -> list[tuple[float, dict]]:
    """Build the cell, then measure it in up to ATTEMPTS fresh processes, stopping at the first within 15%."""
    src, tmp = inputs
    python, env = _python(backend, env_unavailable)
    # a slow emulated kernel (fp16 without avx512_fp16: ~30 ms a call) still gets 20 samples per try
    args = {"model": MODEL, "backend": backend, "precision": precision, "weights": str(src.weights),
            "calib": str(tmp / "calib.npy"), "x": str(tmp / "x.npy"), "workdir": str(tmp_path),
            "tries": TRIES, "reuse": reuse,
            "seconds": 0.3, "threads": THREADS, "warmup_s": RunSettings().warmup_s}  # the harness's own warm-up
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    proc = subprocess.run([python, "-c", BUILD, json.dumps(args)], capture_output=True, text=True, timeout=900,
                          env={**env, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = json.loads(proc.stdout.strip().splitlines()[-1])
    if "unsupported" in built:
        pytest.skip(f"{backend} {precision}: {built['unsupported']}")
    results = []
    for _ in range(ATTEMPTS):
        result = _measure(python, args, built, env)
        if "unsupported" in result:
            pytest.skip(f"{backend} {precision}: {result['unsupported']}")
        results.append((_order_ratio(result), result))
        if abs(results[-1][0] - 1) <= 0.15:
            break
    return results


def _measure(python: str, args: dict, built: dict, env: dict) -> dict:
    proc = subprocess.run([python, "-c", MEASURE, json.dumps(args), json.dumps(built)], capture_output=True,
                          text=True, timeout=900, env={**env, "OMP_NUM_THREADS": str(THREADS)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _order_ratio(result: dict) -> float:
    """after/before of one measuring process, the paired median or the best-try ratio, whichever is nearer 1."""
    # The median of the per-try ratios: each try times before and after seconds apart. The host's slow phases
    # last longer than a try and can start mid-run even at 1 thread (onnxruntime uint8: tries 1-3 at 0.34 ms,
    # 4-5 at 0.50 ms on both sides), which a median of each side taken apart mistook for a 43% order effect.
    paired = float(np.median(np.divide(result["after"], result["before"])))
    # An order effect slows every try after the accuracy pass: it raises the paired median AND the best try (the
    # torch.ao reuse mutation: 1.72 and 1.72). Host noise breaks one or the other (ipex bf16 at 1 thread: paired
    # 1.31, best 0.76 vs 0.76 ms), so the test fails only when both are off.
    best = min(result["after"]) / min(result["before"])
    return paired if abs(paired - 1) < abs(best - 1) else best
