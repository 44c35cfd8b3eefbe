"""Order of measurement must not change a figure: for every registered backend x precision that runs here, a
fresh batch-1 instance made after an accuracy pass at batch 64 runs as fast (within 15%) as one made and warmed
before it (torch.ao int8 used to be 1.74x slower after it: oneDNN kept the first shape's kernels). The timing
phase relies on exactly this: its throughput instances are made after the batch-1 instance, each fresh.

The two instances are timed INTERLEAVED, in alternating short blocks after the pass: a host phase (these shared
2-vCPU VMs swing up to 1.5x for seconds at a time) then falls on both sides alike. Timing them apart, seconds
apart, failed CI on host noise alone (ipex dynamic, 2026-12-01: one side's three tries spread 2.27-3.44 ms, the
ratio 0.83 in one process and 1.32 in the next). The mutation this must catch, timing batch 1 on the accuracy
pass's own instance (MEASURE's "reuse"; the old procedure), stays a slowdown of the after side only.

Each cell is the artifact `harness run` built in the session's runs (conftest's run1 and compiled_run), loaded
in the interpreter the harness would use (IPEX: its own environment), at ONE thread: a 2-thread instance on
these VMs swings between two speeds in phases of a few seconds, whatever ran before it."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from harness.backends import BACKENDS
from harness.config import PRECISIONS, RunSettings
from harness.models import ZOO
from tests.conftest import REPO, backend_python, run_artifact, run_cells

pytestmark = pytest.mark.timing  # after/before ratios of timed blocks: alone on the machine (see the noxfile)

MODEL = "resnet20"
# alternating blocks per side; each block runs >= BLOCK_S and >= BLOCK_CALLS calls (an emulated fp16 call can
# take 30 ms) and gives one median; the cell's ratio is the median of the rounds' after/before
ROUNDS, BLOCK_S, BLOCK_CALLS = 10, 0.1, 5
# measuring processes a cell may take: a second one only when the first is out of bounds
ATTEMPTS = 2
BOUND = 0.15
# fp16/bf16 load and run through the same session classes as their fp32 cell, which is tested here (a per-shape or
# per-instance cache would show there too)
SKIP = {(b, p): f"{b} {p} loads and runs through the same session as its fp32 cell, tested here"
        for b in BACKENDS for p in ("fp16", "bf16")}
THREADS = 1
# the accuracy pass: one full batch of 64 and a short one of 8 (what a real pass leaves behind: both shapes)
N_IMAGES = 72

MEASURE = """
import json, sys
from pathlib import Path
import numpy as np
from harness import measure
from harness.backends import Artifact, Unsupported, get_backend
from harness.backends.source import Source
from harness.models import ZOO
a = json.loads(sys.argv[1])
backend = get_backend(a["backend"])
meta = json.loads(Path(a["meta"]).read_text())
src = Source(ZOO[a["model"]], Path(a["weights"]), np.load(a["calib"])[:1])
art = Artifact(Path(meta["path"]), tuple(Path(f) for f in meta["files"]), meta["details"], src=src)
x = np.load(a["x"])


def batch1(session):
    inp = session.prepare(x[:1])
    measure.warm_up_if_asked(session.run, inp, 10, a["warmup_s"])  # the harness's own warm-up
    return session, inp


try:
    sides = {"before": batch1(backend.load(art, a["threads"], 1))}  # made and warmed before any other shape ran
    acc = backend.load(art, a["threads"])  # the accuracy pass: batch 64 and a short last batch, its own instance
    for i in range(0, len(x), 64):
        acc(x[i:i + 64])
    # "reuse" times the accuracy pass's own instance: the old procedure, which this test must catch
    sides["after"] = batch1(acc if a["reuse"] else backend.load(art, a["threads"], 1))
except Unsupported as exc:  # e.g. OpenVINO accepted an f16 hint the CPU has no kernels for
    print(json.dumps({"unsupported": str(exc)}))
    sys.exit(0)
out = {"before": [], "after": []}
for r in range(a["rounds"]):
    for side in ("before", "after")[::1 if r % 2 == 0 else -1]:  # alternate who goes first: no drift favours one
        session, inp = sides[side]
        out[side].append(float(np.median(measure.timed_loop(session.run, inp, 0, a["block_s"], a["calls"]))))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def inputs(run1, compiled_run, data_dir, test_split, env_unavailable, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("order")
    spec = ZOO[MODEL]
    x = spec.preprocess.apply(test_split.images[:N_IMAGES])
    np.save(tmp / "x.npy", x)
    np.save(tmp / "calib.npy", x[:1])  # a torch artifact is a state_dict rebuilt around one image (its shape)
    return run_cells(run1, compiled_run), tmp, spec.weights_path(data_dir, False), env_unavailable


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_batch1_latency_does_not_depend_on_an_earlier_accuracy_pass(backend, precision, inputs):
    if (backend, precision) in SKIP:
        pytest.skip(f"{backend} {precision}: {SKIP[backend, precision]}")
    # A real order effect shows in every process; host noise that survives the interleaving does not repeat on
    # cue, so a cell out of bounds is measured once more in a new process, and fails only if that one is out too.
    results = _order_ratios(backend, precision, inputs, reuse=False)
    if all(abs(ratio - 1) > BOUND for ratio, _ in results):
        pytest.fail(f"{backend} {precision}: after/before " + "; then ".join(
            f"{ratio:.3f} (before {r['before']}, after {r['after']} ms)" for ratio, r in results))


def test_the_order_rule_fails_a_slowdown_and_passes_a_host_phase():
    """The decision rule on recorded shapes of samples. The real mutation (timing batch 1 on the accuracy pass's
    own instance, MEASURE's "reuse") gave torch.ao int8 1.72x after on 2026-11-30's CPU but 0.99x on this AVX2-only
    EPYC (2026-12-01; 2.2-3.9 ms a call either way), so it cannot be a test on every CPU."""
    slowed = {"before": [0.50, 0.52, 0.51, 0.50], "after": [0.87, 0.88, 0.90, 0.86]}  # 1.7x slower after
    assert _order_ratio(slowed) == pytest.approx(np.median([0.87 / 0.50, 0.88 / 0.52, 0.90 / 0.51, 0.86 / 0.50]))
    # a host phase from round 3 on slows both sides of every round alike: the paired rounds cancel it
    phase = {"before": [0.50, 0.51, 0.75, 0.76, 0.75], "after": [0.51, 0.50, 0.76, 0.75, 0.76]}
    assert abs(_order_ratio(phase) - 1) < 0.02
    # a swing caught by one block of one side: the median of the rounds outvotes it
    one_block = {"before": [0.50, 0.50, 0.51, 0.50, 0.50], "after": [0.50, 0.80, 0.51, 0.50, 0.49]}
    assert abs(_order_ratio(one_block) - 1) < 0.02


def _order_ratios(backend, precision, inputs, reuse: bool) -> list[tuple[float, dict]]:
    """Measure the run's artifact in up to ATTEMPTS fresh processes, stopping at the first within BOUND."""
    cells, tmp, weights, env_unavailable = inputs
    meta = run_artifact(cells, backend, precision, env_unavailable)
    python, env = backend_python(backend)
    args = {"model": MODEL, "backend": backend, "meta": str(meta), "weights": str(weights),
            "calib": str(tmp / "calib.npy"), "x": str(tmp / "x.npy"), "reuse": reuse, "rounds": ROUNDS,
            "block_s": BLOCK_S, "calls": BLOCK_CALLS, "threads": THREADS, "warmup_s": RunSettings().warmup_s}
    env = {**os.environ, "PYTHONPATH": str(REPO), **env, "OMP_NUM_THREADS": str(THREADS)}
    results = []
    for _ in range(ATTEMPTS):
        proc = subprocess.run([python, "-c", MEASURE, json.dumps(args)], capture_output=True, text=True,
                              timeout=900, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if "unsupported" in result:
            pytest.skip(f"{backend} {precision}: {result['unsupported']}")
        results.append((_order_ratio(result), result))
        if abs(results[-1][0] - 1) <= BOUND:
            break
    return results


def _order_ratio(result: dict) -> float:
    """after/before: the median over rounds of each round's two adjacent blocks."""
    return float(np.median(np.divide(result["after"], result["before"])))
