"""Every registered backend x every precision: built for real on resnet20, or skipped with its reason."""

from __future__ import annotations

import pytest

from harness.backends import BACKENDS, get_backend
from harness.config import PRECISIONS
from harness.models import ZOO
from tests.conftest import backend_scores, run_cells, shared_run_of, source_for

N = 500
MODEL = "resnet20"


@pytest.fixture(scope="module")
def setup(data_dir, test_split, shared_cache):
    src = source_for(MODEL, data_dir, 100)
    x = ZOO[MODEL].preprocess.apply(test_split.images[:N])
    return src, x, test_split.labels[:N]


@pytest.fixture(scope="module")
def fp32_of(setup, tmp_path_factory):
    """Each backend's fp32 cell, built once for the module (a compiled or converted build takes 10-25 s)."""
    done = {}

    def get(backend):
        if backend not in done:
            done[backend] = backend_scores(backend, "fp32", setup[0], setup[1], tmp_path_factory.mktemp(backend))
        return done[backend]

    return get


def weights_size(size: int, details: dict) -> int:
    """The weights' bytes where the file also carries a graph that does not shrink with them (a .pt2's JSON)."""
    return details.get("weights_bytes", size)


# the cells the shared runs make run on the worker that holds them; the rest are built on any worker
SHARED = pytest.mark.xdist_group("shared-runs")
CELLS = [pytest.param(b, p, id=f"{b}-{p}", marks=[SHARED] if shared_run_of(b, p) else [])
         for b in BACKENDS for p in PRECISIONS]


@pytest.mark.parametrize("backend, precision", CELLS)
def test_cell_builds_and_keeps_accuracy(backend, precision, request, env_unavailable, setup, fp32_of, tmp_path):
    """Every cell: top-1 within 2 points of its backend's fp32 on the same 500 images, quantized cells saying how
    they were quantized and int8 weights at most 35% of fp32's. The cells `harness run` already made (run1, and
    the compiled run's fp32/int8/uint8) are read, not built again (that was 5 of this file's 8 minutes); the
    rest (compiled fp16/bf16/dynamic, the GPU-only backends) are built here or skipped with their reason."""
    run = shared_run_of(backend, precision)
    if run:
        made = run_cells(request.getfixturevalue(run))
        cell, ref = made[(backend, precision)], made[(backend, "fp32")]
        if cell["status"] == "unsupported" or backend in env_unavailable:
            pytest.skip(f"{backend} {precision}: {cell['reason']}")
        assert cell["status"] == "ok", cell["reason"]
        acc, ref_acc = cell["accuracy"]["top1"], ref["accuracy"]["top1"]
        size, ref_size, details, ref_details = cell["size_bytes"], ref["size_bytes"], cell["details"], ref["details"]
    else:
        src, x, y = setup
        scores, size, details = backend_scores(backend, precision, src, x, tmp_path / precision)
        ref_scores, ref_size, ref_details = fp32_of(backend)
        acc, ref_acc = (scores.argmax(1) == y).mean() * 100, (ref_scores.argmax(1) == y).mean() * 100
    assert abs(acc - ref_acc) <= 2.0, f"{backend} {precision}: top-1 {acc} vs fp32 {ref_acc}"
    assert size > 10_000
    if precision in ("int8", "uint8", "dynamic"):
        assert details.get("api"), "quantized cells record how they were quantized"
    if precision in ("int8", "uint8"):
        assert weights_size(size, details) <= 0.35 * weights_size(ref_size, ref_details)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_declared_unsupported_reasons_are_what_cells_report(backend):
    """A precision a backend declares impossible is refused with exactly that reason, before any work, on its
    devices; and every declared precision is a real one."""
    impl = BACKENDS[backend]
    for device in impl.DEVICES:
        table = impl.UNSUPPORTED if device == "cpu" else impl.UNSUPPORTED_ON.get(device, {})
        assert set(table) <= set(PRECISIONS)
        for precision, reason in table.items():
            assert get_backend(backend, device).precision_reason(precision, device) == reason
            if device == "cpu":
                assert get_backend(backend).supports(precision, "cpu") == reason


def test_gpu_devices_are_reported_unsupported():
    from harness.backends.base import cuda_device_present

    for name in BACKENDS:
        reason = get_backend(name).device_reason("cuda")
        if not cuda_device_present():
            assert reason == "no CUDA device"
        elif "cuda" in BACKENDS[name].DEVICES:
            assert reason is None
        else:
            assert reason == f"{name} runs on cpu only, not cuda"


def test_tflite_resnet8_int8_is_at_most_30_percent_of_fp32(data_dir, shared_cache, tmp_path):
    """Issue 3's size criterion on the MLPerf Tiny model; both artifacts are saved strings-stripped."""
    pytest.importorskip("tensorflow", reason="tflite extra not installed")
    src = source_for("resnet8", data_dir, 100)
    backend = get_backend("tflite")
    fp32, int8 = (backend.build(src, p, tmp_path) for p in ("fp32", "int8"))
    assert int8.size_bytes() <= 0.30 * fp32.size_bytes(), (int8.size_bytes(), fp32.size_bytes())
    for art in (fp32, int8):
        assert art.details["unstripped_size_bytes"] > art.size_bytes()


def test_the_shared_onnx_export_is_keyed_by_the_model_definition(monkeypatch, tmp_path):
    """A cached export made by older model code (resnet8 used to end in softmax) must not be reused: the name
    carries a digest of the defining source files, which changes with any edit to them."""
    import shutil

    import harness.backends.source as source
    from harness.backends.source import definition_digest

    spec = ZOO["resnet8"]
    before = definition_digest(spec)
    assert before != definition_digest(ZOO["resnet20"])  # resnet8.py vs resnet_cifar.py
    copy = tmp_path / "source.py"
    shutil.copy(source.__file__, copy)
    copy.write_text(copy.read_text() + "\n# an edit\n")
    monkeypatch.setattr(source, "__file__", str(copy))
    assert definition_digest(spec) != before


def test_two_processes_sharing_a_cache_export_once_and_report_one_figure(data_dir, tmp_path):
    """Workers of two runs (or two test workers) may meet on an empty cache: one exports, the other waits and
    reads the same file and export_s, instead of both exporting and each recording its own figure."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import json, sys; from pathlib import Path; from tests.conftest import source_for; "
            "s = source_for('resnet8', Path(sys.argv[1]), 10); p = s._onnx_path(); "
            "print(json.dumps({**s.export_record, 'path': str(p)}))")
    env = {**os.environ, "PTQ_HARNESS_CACHE": str(tmp_path), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(data_dir)], env=env, cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    out = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in out]
    records = [json.loads(o.strip().splitlines()[-1]) for o, _ in out]
    assert sorted(r["cached"] for r in records) == [False, True], records
    assert records[0]["export_s"] == records[1]["export_s"] > 0 and records[0]["path"] == records[1]["path"]
    files = sorted(f.name for f in (tmp_path / "onnx").iterdir())
    name = os.path.basename(records[0]["path"])
    assert files == sorted([name, name[:-5] + ".json", name[:-5] + ".lock"]), files  # no temp file left


def test_openvino_times_the_binding_call_which_returns_the_public_calls_output(setup, tmp_path):
    """The timed call goes to the binding's InferRequest.infer directly (4 us less Python a call): its output
    is the public infer() + output tensor's, to the bit, and the session records which call it timed."""
    import numpy as np

    pytest.importorskip("openvino")
    src, x, _ = setup
    backend = get_backend("openvino")
    session = backend.load(backend.build(src, "fp32", tmp_path), 2, 1)
    inp = session.prepare(np.ascontiguousarray(x[:1]))
    fast = np.array(session.run(inp))
    assert session.config["call"] == "binding InferRequest.infer(share_outputs=True)"
    assert fast.shape == (1, 10) and np.array_equal(fast, np.array(session._public(inp)))
    other = session.prepare(np.ascontiguousarray(x[1:2]))  # a second input: the same call, its own output
    assert not np.array_equal(np.array(session.run(other)), fast)


@pytest.mark.parametrize("backend, precision, field", [("ipex", "int8", "activations"),
                                                       ("torch-inductor", "int8", "activations"),
                                                       ("onnxruntime", "uint8", "weights")])
def test_u8s8_takes_the_7bit_range_exactly_when_the_cpu_lacks_vnni(backend, precision, field, run1, compiled_run,
                                                                    env_unavailable):
    """All three default to the full range, which saturates in u8s8 kernels without VNNI (resnet20 on an AVX2-only
    EPYC: IPEX int8 89.8%, compiled 89.79% on 960 images, against ~91%; onnxruntime uint8 91.15% against 91.73%
    on 10,000): the cell records the 7-bit range and why on such a CPU, the full range elsewhere, and its top-1
    stays within 1 point of fp32 either way."""
    from harness.envinfo import has_vnni

    if backend in env_unavailable:
        pytest.skip(f"{backend}: its environment cannot be installed here: {env_unavailable[backend]}")
    made = run_cells(run1, compiled_run)
    cell, ref = made[(backend, precision)], made[(backend, "fp32")]
    details = cell["details"]
    assert f"reduce_range={not has_vnni()}" in details[field], details[field]
    assert ("no VNNI" in (details.get("reduce_range_why") or "")) == (not has_vnni())
    assert abs(cell["accuracy"]["top1"] - ref["accuracy"]["top1"]) <= 1.0
