"""A cell's measurements, each in a fresh process that loads the artifact from disk:
`python -m harness.phases accuracy|timing|profile JOB.json ARTIFACT.json OUT.json [SUBSET_JSON | FDS]`.

- accuracy: one instance (dynamic shape) over the whole test set, or over a seeded class-stratified subset
  when the worker's time budget says so; predictions saved; the backend's inspect() (e.g. ORT's placement
  profile) asked of that instance afterwards.
- timing: batch-1 latency on a fresh instance, then each throughput batch on a fresh instance of its own,
  each static where the runtime has static shapes. Its memory figure is this process's high-water mark
  (load + inference), nothing of the build or of the runner. Under a worker, the --repeat N timing processes
  take turns in short blocks (harness/baton.py), so the host's slow phases fall on all of them alike.
- profile (--profile): per-op profiles from the runtime's own profiler, last, after every timed figure
  (harness/profiles).
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from harness import measure, stats
from harness.backends import Artifact, Unsupported, get_backend
from harness.baton import BLOCKS_PER_DURATION, Turns
from harness.data.imagenet import Normalized
from harness.models import spec_of

FIRST_SHAPE_IMAGES = 1000  # images re-predicted by the first-shape check (a tenth of CIFAR-10's test set)
SPIN_OUT_S = 0.01  # the pause before a block of calls too long to settle with calls (libgomp spins ~6 ms)


def load_artifact(job: dict, meta: Path) -> Artifact:
    from harness.worker import make_source

    m = json.loads(meta.read_text())
    # a torch artifact is a state_dict: its module is rebuilt around one calibration image (see TorchBackend)
    src = make_source(job, np.load(job["paths"]["calib_x"], mmap_mode="r")[:1])
    return Artifact(Path(m["path"]), tuple(Path(f) for f in m["files"]), m["details"], src=src)


def test_inputs(job: dict):
    """The preprocessed test tensor, memory-mapped; ImageNet-shaped images are stored as uint8 crops and
    normalized slice by slice (as float32 a 50,000-image val set would be 30 GB)."""
    x = np.load(job["paths"]["test_x"], mmap_mode="r")
    spec = spec_of(job)
    return Normalized(x, spec.preprocess) if spec.uint8_inputs else x


class Subset:
    """Rows `index` of a test tensor (memory-mapped array or Normalized), read slice by slice."""

    def __init__(self, x, index: np.ndarray):
        self.x, self.index = x, index
        self.shape = (len(index), *x.shape[1:])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self.x[self.index[key]])


def accuracy(job: dict, backend, artifact: Artifact, subset: dict | None = None) -> dict:
    """subset: {"m": images, ...why}: a time-budgeted pass on a seeded class-stratified subset (the worker
    decides from the measured throughput, see worker.accuracy_plan); None: the whole test set."""
    session = backend.load(artifact, job["threads"])
    s = job["settings"]
    x, y = test_inputs(job), np.load(job["paths"]["test_y"])
    index = stats.stratified_subset(y, subset["m"]) if subset else np.arange(len(y))
    if subset:
        x, y = Subset(x, index), y[index]
    spec = spec_of(job)
    acc, records = measure.evaluate(session, x, y, max(s["batch_sizes"]), spec.num_classes, spec.top_k)
    records.update(index=index.astype(np.int32), label=y)
    if job.get("accuracy_not_measured"):  # timing inputs without labels: predictions serve agreement only
        acc = {"top1": None, "top5": None, "topk": None, "per_class": None, "n": 0,
               "agree_n": int(len(records["top1"])), "not_measured": job["accuracy_not_measured"]}
    if subset:
        acc["subset"] = {**{k: v for k, v in subset.items() if k != "m"}, "seed": stats.SUBSET_SEED}
    save_predictions(Path(job["paths"]["pred"]), records)
    inspected = backend.inspect(session, artifact)
    del session
    acc["first_shape_check"] = first_shape_check(job, backend, artifact, x, y, records)
    # the peak is read before the statistics: importing scipy added 50-90 MB to every cell's accuracy peak,
    # the harness's memory, not the runtime's
    peak = measure.vm_hwm_bytes()
    if not job.get("accuracy_not_measured"):
        acc["top1_ci95"] = stats.wilson(acc["top1"] * acc["n"] / 100, acc["n"])
    acc.update(against_reference(records, job))
    return {"accuracy": acc, "inspect": inspected, "peak_bytes": peak}


def first_shape_check(job: dict, backend, artifact: Artifact, x, y: np.ndarray, records: dict) -> dict:
    """Whether predictions depend on the first input shape an instance saw. The accuracy instance's first
    call is a full batch; the batch-1 latency instance's is one image. A second instance that sees one image
    first then predicts the first images again at the accuracy batch size: any disagreement means the
    runtime specializes on its first shape (IPEX 2.8 int8 resnet56: 90.25% top-1 one way, 93.00% the other)."""
    batch = max(job["settings"]["batch_sizes"])
    # whole batches only, the very batches of the accuracy pass: dynamic quantization scales activations per
    # batch, so a short last batch (40 images instead of 64) changed 2 of onnxruntime dynamic's predictions
    n = min(len(x), FIRST_SHAPE_IMAGES)
    n = n - n % batch if n >= batch else n
    session = backend.load(artifact, job["threads"])
    session(x[:1])
    scores = np.concatenate([np.asarray(session(x[i:min(i + batch, n)]), np.float32) for i in range(0, n, batch)])
    out = {"images": int(n), "first_batch": 1,
           "agree": round(float((scores.argmax(axis=1) == records["top1"][:n]).mean() * 100), 4)}
    if not job.get("accuracy_not_measured"):  # top-1 on these images, tie-aware, by each instance
        out["top1"] = round(float(records["credit1"][:n].mean() * 100), 4)
        out["top1_first_batch1"] = round(float(measure.topk_credit(scores, y[:n], 1)[0].mean() * 100), 4)
    return out


def against_reference(records: dict, job: dict) -> dict:
    """Against the reference (the same backend's fp32 cell of this run, variant "" or the sweep arm's), on the
    images both saw: agree_fp32, the percent of equal argmaxes, and delta_vs_fp32 (stats.paired_delta: the
    top-1 change with McNemar's exact p on the discordant images). The reference itself carries null."""
    ref = job["agree_ref"]
    if ref is None:
        return {"agree_fp32": None, "agree_ref": "self: this cell is the fp32 reference", "delta_vs_fp32": None}
    path = Path(job["paths"]["cell"]).with_name(f"{ref}.pred.npz")
    if not path.is_file():
        return {"agree_fp32": None, "agree_ref": f"{ref} (no predictions: that cell did not run)",
                "delta_vs_fp32": None}
    with np.load(path) as z:
        theirs = {k: z[k] for k in z.files}
    mine, theirs = stats.paired(records, theirs)
    if mine is None:
        return {"agree_fp32": None, "agree_ref": f"{ref} (no images in common)", "delta_vs_fp32": None}
    delta = None
    if not job.get("accuracy_not_measured"):
        delta = stats.paired_delta(mine["top1"] == mine["label"], theirs["top1"] == theirs["label"],
                                   mine["credit1"], theirs["credit1"])
        delta["per_class"] = per_class_p(mine, theirs, spec_of(job).num_classes)
    return {"agree_fp32": round(float((mine["top1"] == theirs["top1"]).mean() * 100), 4), "agree_ref": ref,
            "delta_vs_fp32": delta}


def per_class_p(mine: dict, theirs: dict, n_classes: int) -> list | None:
    """McNemar's exact p of each class's top-1 change (CIFAR-10's 10 classes; ImageNet's 1000 make none)."""
    if n_classes > 10 or "label" not in theirs:
        return None
    ok, ref_ok, label = mine["top1"] == mine["label"], theirs["top1"] == theirs["label"], mine["label"]
    return [stats.paired_delta(ok[label == c], ref_ok[label == c])["p_value"] if (label == c).any() else None
            for c in range(n_classes)]


def save_predictions(path: Path, records: dict) -> None:
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **records)
    os.replace(tmp, path)


def time_shape(backend, artifact: Artifact, job: dict, batch: np.ndarray, warmup: int, count: int,
               turns: Turns) -> dict:
    """One timed configuration on an instance loaded for this shape alone, then dropped. Every step runs while
    this process holds the baton (harness/baton.py): load and warm-up in one turn, then one block per turn
    until the worker says stop."""
    s = job["settings"]
    turns.take()
    t0 = time.perf_counter()
    session = backend.load(artifact, job["threads"], len(batch))
    load_s = time.perf_counter() - t0
    inp = session.prepare(batch)
    warm = measure.warm_up_if_asked(session.run, inp, warmup, s["warmup_s"])
    turns.give()
    samples, blocks = timed_blocks(session.run, inp, s, count, turns, warm["s"] / max(warm["calls"], 1))
    out = {"samples_ms": samples, "load_s": round(load_s, 4), "warmup": warm, "config": session.config,
           "children": measure.child_processes(), "blocks": blocks}
    stages = getattr(session, "stages", None)
    if stages is not None:  # GPU: h2d / compute / d2h, each stage synchronized (latency_ms stays end to end)
        calls = stages(batch)
        out["stages"] = {name: measure.summarize(measure.timed_loop(lambda _, c=call: c(), None, warmup,
                                                                    s["min_duration_s"], count))
                         for name, call in calls.items()}
    del session, inp
    gc.collect()
    turns.give()  # "stop" answered: the shape is done and its instance dropped
    return out


def timed_blocks(run, inp, s: dict, count: int, turns: Turns, call_s: float) -> tuple[list[float], list[list]]:
    """Samples (ms) in blocks of min_duration_s / 10, one per turn, and when each block ran: [start, end]
    in Unix seconds and its sample count. call_s: how long a call took in the warm-up."""
    samples: list[float] = []
    blocks: list[list] = []
    block_s = s["min_duration_s"] / BLOCKS_PER_DURATION
    while turns.take():
        # Untimed settling, a quarter block: the previous holder's runtime threads go on spinning for a few ms
        # after its block, and its data fill the caches (torch.ao int8 resnet20 under --repeat 3: a block's
        # first 6 calls ran 1.1-1.5x its tail; IPEX its first call 1.2x). A call longer than that (an emulated
        # fp16 batch: seconds) would double the cell's time for little: a pause lets the spinning end instead.
        if call_s < block_s / 4:
            measure.timed_loop(run, inp, 0, block_s / 4, 1)
        else:
            time.sleep(SPIN_OUT_S)
        start = time.time()
        block = measure.timed_loop(run, inp, 0, block_s, 1)
        call_s = block[-1] / 1e3
        samples += block
        blocks.append([round(start, 4), round(time.time(), 4), len(block)])
        turns.give(len(samples) >= count and sum(samples) >= s["min_duration_s"] * 1e3)
    return samples, blocks


def timing(job: dict, backend, artifact: Artifact, turns: Turns) -> dict:
    s = job["settings"]
    x = test_inputs(job)
    one = time_shape(backend, artifact, job, np.ascontiguousarray(x[:1]), s["warmup"], s["min_count"], turns)
    thr, load_s, warmup, children = [], {"1": one["load_s"]}, {"1": one["warmup"]}, set(one["children"])
    for b in s["batch_sizes"]:
        batch = np.ascontiguousarray(np.resize(x[:b], (b, *x.shape[1:])))
        r = time_shape(backend, artifact, job, batch, max(2, s["warmup"] // 5), max(5, s["min_count"] // 10), turns)
        thr.append({"batch": b, "images_per_s": measure.throughput(r["samples_ms"], b), "samples_ms": r["samples_ms"]})
        load_s[str(b)], warmup[str(b)] = r["load_s"], r["warmup"]
        children.update(r["children"])
    return {"latency_samples_ms": one["samples_ms"], "latency_blocks": one["blocks"], "throughput": thr,
            "runtime_config": one["config"], "load_s": load_s, "warmup": warmup,
            "device_latency_ms": one.get("stages"), "peak_bytes": measure.vm_hwm_bytes(), "children": sorted(children)}


def main(argv: list[str]) -> int:
    import os

    from harness.results import write_json
    from harness.worker import die_with_parent

    # extra: timing: the baton's pipes (under a worker); accuracy: the subset plan as JSON (a budgeted pass)
    mode, job_path, meta, out, *extra = argv
    die_with_parent(os.getppid())  # the cell's worker: killed on its timeout, it takes this process along
    job = json.loads(Path(job_path).read_text())
    backend = get_backend(job["backend"], job["device"], job["variant"])
    try:
        artifact = load_artifact(job, Path(meta))
        if mode == "profile":
            from harness.profiles import phase as profile_phase

            result = profile_phase(job, backend, artifact)
        else:
            result = (accuracy(job, backend, artifact, json.loads(extra[0]) if extra else None)
                      if mode == "accuracy" else timing(job, backend, artifact, Turns(extra[0] if extra else None)))
    except Unsupported as exc:
        result = {"unsupported": str(exc)}
    except measure.NonFinite as exc:
        result = {"failed": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the framework's own error becomes the cell's reason
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        result = {"failed": f"{mode} process: {type(exc).__name__}: {first}"[:500]}
    write_json(Path(out), result, overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
