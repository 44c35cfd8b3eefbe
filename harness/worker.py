"""One cell in one fresh process: `python -m harness.worker JOB.json`.

Build (convert + quantize, timed) -> artifact on disk -> accuracy on the whole test set -> latency at
batch 1 -> throughput at each batch size -> peak RSS -> predictions (.npz) then the cell JSON, atomically.
A crash or hang here costs only this cell; the runner records it.
"""

from __future__ import annotations

import ctypes
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

from harness import measure
from harness.backends import Unsupported, get_backend
from harness.backends.source import Source
from harness.data.imagenet import Normalized
from harness.models import ZOO
from harness.recipe import from_dict as recipe_from_dict
from harness.results import JOB_FIELDS, CellResult, write_json


def die_with_parent(parent_pid: int) -> None:
    """A SIGKILLed runner must not leave a worker behind that could write into a resumed run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def build_artifact(job: dict, backend):
    """Convert/quantize into a fresh workdir (timed); returns (artifact, seconds)."""
    spec = ZOO[job["model"]]
    weights = job["paths"].get("weights")  # resolved once by the run (e.g. an ImageNet model's seeded weights)
    src = Source(spec, Path(weights) if weights else spec.weights_path(Path(job["data_dir"]), job["may_download"]),
                 np.load(job["paths"]["calib_x"]), recipe_from_dict(job["recipe"]))
    workdir = Path(job["paths"]["workdir"])
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    t0 = time.perf_counter()
    if job["variant"] == "published":
        entry = next(a for a in spec.published if (a.backend, a.precision) == (job["backend"], job["precision"]))
        path = spec.published_path(entry, Path(job["data_dir"]), job["may_download"])
        artifact = backend.published(path, spec, workdir)
        artifact.details["url"] = entry.url
    else:
        artifact = backend.build(src, job["precision"], workdir)
    return artifact, time.perf_counter() - t0


def timings(predict, x: np.ndarray, s: dict) -> tuple[list[float], list[dict]]:
    """Batch-1 latency samples, then throughput at each batch size (raw samples kept)."""
    lat = measure.timed_loop(predict, np.ascontiguousarray(x[:1]), s["warmup"], s["min_duration_s"], s["min_count"])
    thr = []
    for b in s["batch_sizes"]:
        batch = np.ascontiguousarray(np.resize(x[:b], (b, *x.shape[1:])))
        samples = measure.timed_loop(predict, batch, max(2, s["warmup"] // 5), s["min_duration_s"],
                                     max(5, s["min_count"] // 10))
        thr.append({"batch": b, "images_per_s": measure.throughput(samples, b), "samples_ms": samples})
    return lat, thr


def stage_timings(predict, x: np.ndarray, s: dict) -> dict | None:
    """On a GPU, batch-1 latency split into host-to-device copy, compute and device-to-host copy. A backend
    offers this as predict.stages(x) -> {stage: call}; each call returns only after its stream is synchronized,
    so the wall clock around it is the stage's time (latency_ms stays end to end, host array in and out)."""
    stages = getattr(predict, "stages", None)
    if stages is None:
        return None
    calls = stages(np.ascontiguousarray(x[:1]))
    return {name: measure.summarize(measure.timed_loop(lambda _, c=call: c(), None, s["warmup"],
                                                       s["min_duration_s"], s["min_count"]))
            for name, call in calls.items()}


def measure_cell(job: dict, backend) -> dict:
    artifact, quantize_s = build_artifact(job, backend)
    predict = backend.load(artifact, job["threads"])
    s = job["settings"]
    x, y = test_inputs(job), np.load(job["paths"]["test_y"])
    accuracy, pred = measure.evaluate(predict, x, y, max(s["batch_sizes"]), ZOO[job["model"]].num_classes)
    if job.get("accuracy_not_measured"):  # timing inputs without labels: predictions serve agreement only
        accuracy = {"top1": None, "top5": None, "per_class": None, "n": 0, "agree_n": int(len(pred)),
                    "not_measured": job["accuracy_not_measured"]}
    accuracy["agree_fp32"] = agreement(pred, Path(job["paths"]["fp32_pred"]), job["precision"])
    lat, thr = timings(predict, x, s)
    stages = stage_timings(predict, x, s)
    save_predictions(Path(job["paths"]["pred"]), pred)
    fields = {"accuracy": accuracy, "size_bytes": artifact.size_bytes(), "latency_ms": measure.summarize(lat),
              "latency_samples_ms": lat, "throughput": thr, "quantize_s": quantize_s,
              "details": {**artifact.details, "artifact": str(artifact.path)}}
    if stages:
        fields["device_latency_ms"] = stages
    if s.get("repeat", 1) > 1:
        del predict, artifact  # free this process's model before the next ones start
        first = repeat_summary(lat, thr, fields["size_bytes"])
        del first["latency_samples_ms"]  # the first process's samples are the cell's own latency_samples_ms
        fields["repeats"] = [first] + repeat_timings(job)
        fields["latency_interval"] = measure.repeat_interval([r["latency_p50_ms"] for r in fields["repeats"]])
    return fields


def repeat_summary(lat: list[float], thr: list[dict], size: int) -> dict:
    return {"latency_p50_ms": float(np.median(lat)), "latency_samples_ms": lat, "size_bytes": size,
            "throughput": [{"batch": t["batch"], "images_per_s": t["images_per_s"]} for t in thr]}


def repeat_timings(job: dict) -> list[dict]:
    """--repeat N: N-1 more timing runs, each in a fresh process (rebuilding the same artifact), so the
    interval covers process-to-process noise (allocation, thread placement), not only loop noise."""
    out = []
    for k in range(1, job["settings"]["repeat"]):
        proc = subprocess.run([sys.executable, "-m", "harness.worker", "--timing", job["_job_path"]],
                              capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"timing repeat {k + 1} exited with code {proc.returncode}: {tail}")
        out.append(json.loads(lines[-1]))
    return out


def timing_only(job: dict) -> dict:
    """`python -m harness.worker --timing JOB.json`: rebuild, load, time; one JSON line on stdout."""
    backend = get_backend(job["backend"], job["device"], job["variant"])
    backend.record_details = False
    job = {**job, "paths": {**job["paths"], "workdir": job["paths"]["workdir"] + f".repeat{os.getpid()}"}}
    artifact, _ = build_artifact(job, backend)
    predict = backend.load(artifact, job["threads"])
    lat, thr = timings(predict, test_inputs(job), job["settings"])
    summary = repeat_summary(lat, thr, artifact.size_bytes())
    shutil.rmtree(job["paths"]["workdir"], ignore_errors=True)
    return summary


def test_inputs(job: dict):
    """The preprocessed test tensor, memory-mapped; ImageNet-shaped images are stored as uint8 crops and
    normalized slice by slice (as float32 a 50,000-image val set would be 30 GB)."""
    x = np.load(job["paths"]["test_x"], mmap_mode="r")
    spec = ZOO[job["model"]]
    return Normalized(x, spec.preprocess) if spec.dataset == "imagenet" else x


def save_predictions(path: Path, pred: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, top1=pred)
    os.replace(tmp, path)


def agreement(pred: np.ndarray, fp32_pred: Path, precision: str) -> float | None:
    """Percent of images where argmax equals the same backend's fp32 cell (None if that is missing)."""
    if precision == "fp32":
        return 100.0
    if not fp32_pred.is_file():
        return None
    with np.load(fp32_pred) as z:
        ref = z["top1"]
    return round(float((ref == pred).mean() * 100), 4) if ref.shape == pred.shape else None


def run(job: dict) -> CellResult:
    start = time.perf_counter()
    common = {k: job[k] for k in JOB_FIELDS}
    backend = get_backend(job["backend"], job["device"], job["variant"])
    try:
        reason = backend.why_not(job["precision"], job["device"], ZOO[job["model"]])
        if reason:
            raise Unsupported(reason)
        fields = measure_cell(job, backend)
        status, reason = "ok", None
    except Unsupported as exc:
        fields, status, reason = {}, "unsupported", str(exc)
    except Exception as exc:  # noqa: BLE001 - any framework error fails only this cell
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        fields, status, reason = {}, "failed", f"{type(exc).__name__}: {first}"[:500]
    return CellResult(**common, status=status, reason=reason, versions=backend.versions(),
                      peak_rss_bytes=measure.peak_rss_bytes(), duration_s=time.perf_counter() - start,
                      **fields)


def probe_report(name: str, device: str) -> dict:
    """`python -m harness.worker --probe NAME DEVICE`: what a backend can do in *this* interpreter."""
    from harness.config import PRECISIONS

    backend = get_backend(name)
    probe = backend.probe()
    return {"installed": probe.installed, "version": probe.version, "reason": probe.reason,
            "precisions": {p: backend.why_not(p, device) for p in PRECISIONS}}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--probe"]:
        print(json.dumps(probe_report(argv[1], argv[2])))
        return 0
    if argv[:1] == ["--timing"]:
        job = json.loads(Path(argv[1]).read_text())
        die_with_parent(os.getppid())
        print(json.dumps(timing_only(job)), flush=True)
        return 0
    job = {**json.loads(Path(argv[0]).read_text()), "_job_path": argv[0]}
    die_with_parent(job["parent_pid"])
    cell = run(job)
    write_json(Path(job["paths"]["cell"]), cell.to_dict(), overwrite=job["overwrite"])
    print(f"cell {cell.model}/{cell.backend}/{cell.precision}: {cell.status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
