"""One cell: `python -m harness.worker JOB.json`, a fresh process per cell.

Build phase, here: import the framework (import_s), convert + calibrate + quantize (quantize_s; the shared
ONNX export is export_s), save the artifact; memory.build_peak_bytes is this process's own high-water mark.
Then every measurement runs in a fresh process of its own that loads the artifact from disk
(harness/phases.py): --repeat N identical timing processes that take turns in short blocks
(harness/baton.py), then one accuracy pass, on a seeded stratified subset when the measured throughput says
the whole test set would overrun the run's accuracy_budget_s. So no timed instance was ever touched by
another input shape, the N timing processes follow one procedure, and the host's slow phases fall on all of
them alike. A crash or hang here costs only this cell; the runner records it.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from harness import baton, measure
from harness.backends import Unsupported, get_backend
from harness.backends.source import Source
from harness.models import spec_of
from harness.phases import FIRST_SHAPE_IMAGES
from harness.recipe import from_dict as recipe_from_dict
from harness.results import JOB_FIELDS, CellResult, write_json

MIN_SUBSET = 500  # the fewest images a budgeted accuracy pass evaluates (50 per CIFAR-10 class), budget or not


def die_with_parent(parent_pid: int) -> None:
    """A SIGKILLed runner must not leave a worker behind that could write into a resumed run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def make_source(job: dict, calib: np.ndarray | None = None) -> Source:
    spec = spec_of(job)
    weights = job["paths"].get("weights")  # resolved once by the run (e.g. an ImageNet model's seeded weights)
    return Source(spec, Path(weights) if weights else spec.weights_path(Path(job["data_dir"]), job["may_download"]),
                  np.load(job["paths"]["calib_x"], mmap_mode="r") if calib is None else calib,
                  recipe_from_dict(job["recipe"]), timed_batches=(1, *job["settings"]["batch_sizes"]))


def build_phase(job: dict, backend) -> tuple:
    """-> (artifact, {import_s, export_s, export_cached, quantize_s}). quantize_s excludes the imports, the
    shared ONNX export and by-products such as OpenVINO's IR copy (each timed apart, see Source.aside)."""
    t0 = time.perf_counter()
    for module in backend.IMPORTS:
        importlib.import_module(module)
    import_s = time.perf_counter() - t0
    src = make_source(job)
    workdir = Path(job["paths"]["workdir"])
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    t0 = time.perf_counter()
    if job["variant"] == "published":
        spec = src.spec
        entry = next(a for a in spec.published if (a.backend, a.precision) == (job["backend"], job["precision"]))
        artifact = backend.published(spec.published_path(entry, Path(job["data_dir"]), job["may_download"]),
                                     spec, workdir)
        artifact.details["url"] = entry.url
    else:
        artifact = backend.build(src, job["precision"], workdir)
    total = time.perf_counter() - t0
    artifact.details["precision"] = job["precision"]
    if src.spec.ends_in_softmax:
        artifact.details["output"] = (
            "softmax probabilities, as published: quantized to int8 after the softmax, so many outputs tie "
            "(see accuracy.ties)" if job["variant"] == "published" else
            "logits: the model's final softmax is left out (top-k unchanged in float; a quantized softmax ties)")
    export = src.export_record or {}
    return artifact, {"import_s": round(import_s, 4), "export_s": export.get("export_s"),
                      "export_cached": export.get("cached"),
                      # a published artifact is copied, not made here
                      "quantize_s": None if job["variant"] == "published" else
                      round(total - sum(src.timers.values()), 4)}


class PhaseFailed(Exception):
    """A measurement process failed; its message is the cell's reason as it stands (type name included)."""


def spawn_phase(mode: str, job: dict, meta: Path, *extra: str) -> dict:
    """Run `python -m harness.phases MODE ...` (same interpreter, so a backend's own environment too) and
    read its JSON. Its output goes to this cell's log. Unsupported/failed verdicts come back as such."""
    out = meta.with_name(f"{mode}.{time.monotonic_ns()}.json")
    proc = subprocess.run([sys.executable, "-m", "harness.phases", mode, job["_job_path"], str(meta), str(out),
                           *extra])
    return phase_result(mode, proc.returncode, out)


def spawn_timings(job: dict, meta: Path) -> list[dict]:
    """The --repeat N timing processes, taking turns under one baton (harness/baton.py)."""
    outs = [meta.with_name(f"timing.{i}.{time.monotonic_ns()}.json") for i in range(job["settings"]["repeat"])]
    codes = baton.run_timing(job, meta, outs)
    return [phase_result("timing", code, out) for code, out in zip(codes, outs, strict=True)]


def phase_result(mode: str, code: int, out: Path) -> dict:
    if code != 0 or not out.is_file():
        raise RuntimeError(f"{mode} process exited with code {code} (see the cell log)")
    result = json.loads(out.read_text())
    out.unlink()
    if "unsupported" in result:
        raise Unsupported(result["unsupported"])
    if "failed" in result:
        raise PhaseFailed(result["failed"])
    return result


def measure_cell(job: dict, backend) -> dict:
    artifact, build = build_phase(job, backend)
    build_peak = measure.vm_hwm_bytes()
    meta = Path(job["paths"]["workdir"]) / "artifact.json"
    meta.write_text(json.dumps({"path": str(artifact.path), "files": [str(f) for f in artifact.files],
                                "details": artifact.details}, default=str))
    timings = spawn_timings(job, meta)  # first: the accuracy budget is planned from the measured throughput
    first = timings[0]
    plan = accuracy_plan(job, first["throughput"])
    accuracy = spawn_phase("accuracy", job, meta, *([json.dumps(plan)] if plan else []))
    memory = {"build_peak_bytes": build_peak, "run_peak_bytes": max(t["peak_bytes"] for t in timings),
              "accuracy_peak_bytes": accuracy["peak_bytes"]}
    fields = {"accuracy": accuracy["accuracy"], "size_bytes": artifact.size_bytes(),
              "latency_ms": measure.summarize(first["latency_samples_ms"]),
              "latency_samples_ms": first["latency_samples_ms"], "throughput": first["throughput"],
              "memory": memory, "peak_rss_bytes": max(v for v in (build_peak, memory["run_peak_bytes"]) if v),
              **build, "details": {**artifact.details, **accuracy["inspect"], "artifact": str(artifact.path),
                                   "runtime_config": first["runtime_config"], "load_s": first["load_s"],
                                   "warmup": first["warmup"], "latency_blocks": first["latency_blocks"],
                                   # processes that ran beside a timing loop: none, or the figure is suspect
                                   "timing_children": sorted({c for t in timings for c in t["children"]}),
                                   "host_swing": measure.host_swing([(t["latency_samples_ms"], t["latency_blocks"])
                                                                     for t in timings])}}
    if first.get("device_latency_ms"):
        fields["device_latency_ms"] = first["device_latency_ms"]
    if job["settings"].get("profile"):  # last: after every timed and accuracy figure, in a process of its own
        fields["profile"] = profile_of(job, meta)
        fields["diagnosis"] = diagnosis_of(job, fields)
    if len(timings) > 1:
        fields["repeats"] = [repeat_summary(t, fields["size_bytes"]) for t in timings]
        fields["latency_interval"] = measure.repeat_interval([r["latency_p50_ms"] for r in fields["repeats"]])
    return fields


def profile_of(job: dict, meta: Path) -> dict:
    """The per-op profile, or why there is none: a profiler failing never fails the cell it describes."""
    try:
        return spawn_phase("profile", job, meta)["profile"]
    except (Unsupported, PhaseFailed, RuntimeError) as exc:
        return {"unavailable": str(exc)}


def diagnosis_of(job: dict, fields: dict) -> list | None:
    """harness.diagnosis against this backend's fp32 cell of the run (written before this one, when it ran)."""
    from harness import diagnosis, envinfo

    ref = None
    if job["agree_ref"]:
        path = Path(job["paths"]["cell"]).with_name(f"{job['agree_ref']}.json")
        ref = json.loads(path.read_text()) if path.is_file() else None
    return diagnosis.diagnose({**fields, "precision": job["precision"], "backend": job["backend"]}, ref,
                              envinfo.cpu_info()["isa"])


def accuracy_plan(job: dict, throughput: list[dict]) -> dict | None:
    """None: the whole test set fits the run's accuracy_budget_s (or there is none). Else the subset that
    fits, estimated from this cell's measured throughput at the evaluation batch: the pass plus the
    first-shape check's re-prediction (an emulated fp16 resnet56 took 836 s on the whole set)."""
    budget = job["settings"].get("accuracy_budget_s", 0)
    n, batch = int(job["test"]["size"]), max(job["settings"]["batch_sizes"])
    ips = next(t["images_per_s"] for t in throughput if t["batch"] == batch)
    estimate = (n + min(n, FIRST_SHAPE_IMAGES)) / ips
    if not budget or estimate <= budget:
        return None
    fit = budget * ips  # images that fit: m of the pass + min(m, FIRST_SHAPE_IMAGES) of the check
    m = int(fit / 2 if fit <= 2 * FIRST_SHAPE_IMAGES else fit - FIRST_SHAPE_IMAGES)
    m = max(min(m, n), min(n, MIN_SUBSET))
    return {"m": m, "of": n, "reason": f"over the {budget:g} s budget", "estimate_s": round(estimate, 1),
            "budget_s": budget}


def repeat_summary(t: dict, size: int) -> dict:
    """One timing process: its median, its raw samples (the first's are also the cell's) and when their blocks
    ran, its throughput."""
    return {"latency_p50_ms": float(np.median(t["latency_samples_ms"])), "latency_samples_ms":
            t["latency_samples_ms"], "latency_blocks": t["latency_blocks"], "size_bytes": size,
            "run_peak_bytes": t["peak_bytes"],
            "throughput": [{"batch": r["batch"], "images_per_s": r["images_per_s"]} for r in t["throughput"]]}


def run(job: dict) -> CellResult:
    start = time.perf_counter()
    common = {k: job[k] for k in JOB_FIELDS}
    backend = get_backend(job["backend"], job["device"], job["variant"])
    try:
        reason = backend.why_not(job["precision"], job["device"], spec_of(job))
        if reason:
            raise Unsupported(reason)
        fields = measure_cell(job, backend)
        status, reason = "ok", None
    except Unsupported as exc:
        fields, status, reason = {}, "unsupported", str(exc)
    except Exception as exc:  # noqa: BLE001 - any framework error fails only this cell
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        name = "" if isinstance(exc, PhaseFailed) else f"{type(exc).__name__}: "
        fields, status, reason = {}, "failed", f"{name}{first}"[:500]
    return CellResult(**common, status=status, reason=reason, versions=backend.versions(),
                      duration_s=time.perf_counter() - start, **fields)


def probe_report(name: str, device: str, card: str = "") -> dict:
    """`python -m harness.worker --probe NAME DEVICE [CARD]`: what a backend can do in *this* interpreter
    (with the model of a card, when given)."""
    from harness.config import PRECISIONS
    from harness.models import lookup

    backend = get_backend(name)
    probe = backend.probe()
    spec = lookup("", card) if card else None
    return {"installed": probe.installed, "version": probe.version, "reason": probe.reason,
            "precisions": {p: backend.why_not(p, device, spec) for p in PRECISIONS}}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--probe"]:
        print(json.dumps(probe_report(argv[1], argv[2], *argv[3:4])))
        return 0
    job = {**json.loads(Path(argv[0]).read_text()), "_job_path": argv[0]}
    die_with_parent(job["parent_pid"])
    cell = run(job)
    write_json(Path(job["paths"]["cell"]), cell.to_dict(), overwrite=job["overwrite"])
    print(f"cell {cell.model}/{cell.backend}/{cell.precision}: {cell.status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
