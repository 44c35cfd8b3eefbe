"""`harness compare RUN_A RUN_B`: per-cell verdicts with the noise measured in both runs.

Batch-1 latency gets a verdict only when both runs used --repeat 3 or more: the run-to-run Student-t interval
of N identical timing processes. One process's samples are correlated and miss process-to-process noise
(about 30% on these VMs), so without it the latency verdict is `inconclusive`. A change counts only when
the two intervals do not overlap AND the ratio passes the threshold. Those processes take turns, so the
interval is theirs, not the host's: a cell whose timing rounds swung more than the threshold
(details.host_swing) gets `inconclusive` too, since the host alone could have moved it that far.

Accuracy must match exactly on the same CPU: every CPU backend here computes the same artifact from the same
inputs (calibration is deterministic: fixed images, no random sampling inside the quantizers used) and runs it
with deterministic kernels, so any change means the artifact, calibration or runtime changed. Across CPUs
(another ISA runs other fp32 kernels during calibration, so scales move slightly) and for a backend that is not
deterministic (Backend.NONDETERMINISTIC), McNemar's exact test on the two runs' per-image predictions decides:
p >= 0.05 is `same` with the note "accuracy within noise".
Identity fields (weights, calibration images, test set, every recipe key) and how the runs were measured
(threads, batch sizes, warm-up, loop duration and count, test subset) must match, or the cell is refused
naming the field; a different CPU model makes every latency verdict `inconclusive`; version changes are
listed per cell.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness import stats
from harness.errors import UserError
from harness.measure import disjoint, latency_interval
from harness.recipe import differences
from harness.results import RUN_SCHEMA_VERSION, load_cells, read_json

IDENTITY = {  # field shown to the user -> how to read it from a cell
    "model weights sha256": lambda c: (c.get("model_info") or {}).get("weights_sha256"),
    "calibration sha256": lambda c: (c.get("calibration") or {}).get("sha256"),
    "calibration size": lambda c: (c.get("calibration") or {}).get("size"),
    "test set sha256": lambda c: (c.get("test") or {}).get("sha256"),
}


MIN_REPEAT = 3  # timing processes per run before a latency verdict is given
SETTINGS = ("warmup", "warmup_s", "min_duration_s", "min_count", "test_limit")  # run settings that change the figures


def _load(run_dir: Path) -> tuple[dict, dict]:
    if not (run_dir / "run.json").is_file():
        raise UserError(f"{run_dir}: no run.json; expected a run folder such as results/<target>/<run id>")
    run = read_json(run_dir / "run.json", "run", RUN_SCHEMA_VERSION)
    cells = {(c["model"], c["backend"], c["precision"], c.get("variant", "")): c for c in load_cells(run_dir)}
    settings = (run.get("identity") or {}).get("settings") or {}
    for c in cells.values():  # what compare_cell reads of the run: its measurement settings and CPU
        c["_settings"] = {k: settings.get(k) for k in SETTINGS}
        cpu = (run.get("environment") or {}).get("cpu") or {}
        c["_cpu"], c["_isa"] = cpu.get("model"), isa_level(cpu.get("isa") or {})
    return run, cells


ISA_LEVELS = (("amx_tile", "avx512_amx"), ("avx512_fp16", "avx512_fp16"), ("avx512_bf16", "avx512_bf16"),
              ("avx512_vnni", "avx512_vnni"), ("avx512f", "avx512"), ("avx_vnni", "avx_vnni"), ("avx2", "avx2"))


def isa_level(isa: dict) -> str:
    """The richest x86 extension a CPU has, by what changes the kernels a runtime picks (AMX > ... > AVX2)."""
    return next((name for flag, name in ISA_LEVELS if isa.get(flag)), "sse" if isa else "unknown")


def predictions(cell: dict) -> dict | None:
    """A cell's per-image predictions (cells/<stem>.pred.npz beside its JSON), or None if not kept."""
    path = Path(cell["_path"]).with_suffix(".pred.npz")
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def accuracy_verdict(a: dict, b: dict) -> tuple[bool, str | None]:
    """(changed, note). Predictions are compared on the test images both runs evaluated (a time-budgeted
    subset covers fewer): equal argmaxes are the same accuracy. Otherwise exact equality rules on one CPU for a
    deterministic backend, and McNemar's exact test decides across CPUs or for a non-deterministic backend."""
    pa, pb = predictions(a), predictions(b)
    if pa is None or pb is None:  # recorded without predictions: the figures alone
        return a["accuracy"]["top1"] != b["accuracy"]["top1"], None
    ma, mb = stats.paired(pa, pb)
    if ma is None:
        return True, "no test images in common"
    fewer = len(ma["top1"]) < max(len(pa["top1"]), len(pb["top1"]))
    where = f"on the {len(ma['top1']):,} test images both evaluated" if fewer else None
    if np.array_equal(ma["top1"], mb["top1"]):
        return False, where
    why = cpu_or_determinism(a, b)
    label = ma.get("label", mb.get("label"))  # one test set (its sha256 is checked): either run's labels
    if label is None or a["accuracy"]["top1"] is None:
        return True, "; ".join(why + ["no labels to test the change"])
    test = stats.paired_delta(mb["top1"] == label, ma["top1"] == label)
    p = f"McNemar p={test['p_value']:.3g}, discordant {test['discordant'][0]}/{test['discordant'][1]}"
    p += f" {where}" if where else ""
    if not why:
        return True, f"same CPU and a deterministic backend: any change is real ({p})"
    if test["p_value"] >= stats.ALPHA:
        return False, "; ".join(why) + f"; accuracy within noise ({p})"
    return True, "; ".join(why) + f"; accuracy changed beyond noise ({p})"


def cpu_or_determinism(a: dict, b: dict) -> list[str]:
    """Why two runs of one cell may predict differently without anything being wrong (empty: they may not)."""
    from harness.backends import BACKENDS

    why = []
    if (a.get("_cpu"), a.get("_isa")) != (b.get("_cpu"), b.get("_isa")):
        why.append(f"CPU changed: {a.get('_isa')} -> {b.get('_isa')}" if a.get("_isa") != b.get("_isa") else
                   f"CPU changed: {a.get('_cpu')} -> {b.get('_cpu')}")
    nondet = getattr(BACKENDS.get(a["backend"]), "NONDETERMINISTIC", "")
    if nondet:
        why.append(f"{a['backend']} is not deterministic ({nondet})")
    return why


def measurement_differences(a: dict, b: dict) -> list[str]:
    """How two cells were measured, field by field: a change makes their latencies incomparable."""
    out = [f"run.{k}: {a['_settings'][k]!r} -> {b['_settings'][k]!r}" for k in SETTINGS
           if a.get("_settings", {}).get(k) != b.get("_settings", {}).get(k)]
    if a.get("threads") != b.get("threads"):
        out.append(f"threads: {a.get('threads')} -> {b.get('threads')}")
    batches = [[t["batch"] for t in c.get("throughput") or []] for c in (a, b)]
    if a["status"] == b["status"] == "ok" and batches[0] != batches[1]:
        out.append(f"throughput batch sizes: {batches[0]} -> {batches[1]}")
    return out


def compare_cell(a: dict, b: dict, threshold: float, allow_identity: bool) -> dict:
    differs = ([name for name, get in IDENTITY.items() if get(a) != get(b)] + differences(a.get("recipe"),
                                                                                           b.get("recipe"))
               + measurement_differences(a, b))
    versions = sorted(k for k in set(a.get("versions", {})) | set(b.get("versions", {}))
                      if a.get("versions", {}).get(k) != b.get("versions", {}).get(k))
    out = {"identity_differs": differs, "versions_differ": [f"{k}: {a.get('versions', {}).get(k)} -> "
                                                            f"{b.get('versions', {}).get(k)}" for k in versions]}
    if differs and not allow_identity:
        raise UserError(f"cell {a['model']}/{a['backend']}/{a['precision']}: {', '.join(differs)} differs "
                        "between the runs; pass --allow-identity-change to compare anyway")
    if a["status"] != "ok" or b["status"] != "ok":
        same = a["status"] == b["status"]
        return {**out, "verdict": "same" if same else "status changed", "status": [a["status"], b["status"]]}
    top_a, top_b = a["accuracy"]["top1"], b["accuracy"]["top1"]  # None: not measured (timing-only model)
    acc_delta = (top_b - top_a) if None not in (top_a, top_b) else (0.0 if top_a == top_b else None)
    iv_a, iv_b = latency_interval(a), latency_interval(b)
    (ma, la, ha, kind_a), (mb, lb, hb, kind_b) = iv_a, iv_b
    ratio = mb / ma
    overlap = not disjoint(iv_a, iv_b)
    thr_ratio = b["throughput"][-1]["images_per_s"] / a["throughput"][-1]["images_per_s"]
    why = latency_inconclusive(a, b, threshold)
    acc_changed, out["accuracy_note"] = accuracy_verdict(a, b)
    if acc_changed:
        verdict = "accuracy changed"
    elif why and abs(ratio - 1) > threshold:
        verdict, out["inconclusive"] = "inconclusive", why
    elif not overlap and ratio > 1 + threshold:
        verdict = "slower"
    elif not overlap and ratio < 1 - threshold:
        verdict = "faster"
    else:
        verdict = "same"
    return {**out, "verdict": verdict, "top1": [a["accuracy"]["top1"], b["accuracy"]["top1"]],
            "top1_delta": acc_delta, "latency_p50_ms": [[ma, la, ha], [mb, lb, hb]], "latency_ratio": ratio,
            "intervals_overlap": overlap, "interval_kind": [kind_a, kind_b], "throughput_ratio": thr_ratio}


def latency_inconclusive(a: dict, b: dict, threshold: float) -> str | None:
    """Why two cells' latencies cannot be called faster or slower (None: they can)."""
    n = min((c.get("latency_interval") or {}).get("n", 1) for c in (a, b))
    if n < MIN_REPEAT:
        return f"latency needs --repeat {MIN_REPEAT} or more in both runs (run-to-run interval), got {n}"
    if a.get("_cpu") != b.get("_cpu"):
        return f"different CPU: {a.get('_cpu')} -> {b.get('_cpu')}"
    for run, c in (("A", a), ("B", b)):  # a host that moved more than the change sought could have made it
        swing = (c.get("details") or {}).get("host_swing")
        if swing is not None and swing > threshold:
            return f"host unstable in run {run}: its timing rounds swung {swing:.0%} (details.host_swing)"
    return None


def compare(run_a: Path, run_b: Path, threshold: float = 0.10, allow_identity: bool = False) -> dict:
    (_, a), (_, b) = _load(run_a), _load(run_b)
    cells = []
    for key in sorted(set(a) | set(b)):
        row = {"cell": "/".join(k for k in key if k)}
        if key not in a or key not in b:
            row.update(verdict="missing", missing_in="A" if key not in a else "B")
        else:
            row.update(compare_cell(a[key], b[key], threshold, allow_identity))
        cells.append(row)
    regressions = [c for c in cells if c["verdict"] in ("slower", "accuracy changed", "status changed")]
    verdicts = {c["verdict"] for c in cells}
    overall = ("regression" if regressions else "same" if verdicts == {"same"} else
               "inconclusive" if verdicts <= {"same", "inconclusive"} else "changed")
    return {"schema_version": 1, "run_a": str(run_a), "run_b": str(run_b), "threshold": threshold,
            "interval": f"batch-1 latency: run-to-run Student-t 95% interval (--repeat {MIN_REPEAT} or more in "
                        "both runs, else inconclusive beyond the threshold)",
            "overall": overall, "cells": cells}


def markdown(result: dict) -> str:
    lines = [f"# Compare {result['run_a']} -> {result['run_b']}", "",
             f"Overall: **{result['overall']}** (threshold {result['threshold']:.0%}; {result['interval']}).", "",
             "| cell | verdict | top-1 A -> B | p50 ms A [95% CI] | p50 ms B [95% CI] | latency ratio | notes |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in result["cells"]:
        if "latency_p50_ms" in c:
            (ma, la, ha), (mb, lb, hb) = c["latency_p50_ms"]
            top1 = " -> ".join("n/m" if t is None else f"{t:.2f}" for t in c["top1"])
            nums = [top1, f"{ma:.3f} [{la:.3f}, {ha:.3f}]",
                    f"{mb:.3f} [{lb:.3f}, {hb:.3f}]", f"{c['latency_ratio']:.2f}x"]
        else:
            nums = [" -> ".join(c.get("status", [])) or "", "", "", ""]
        notes = "; ".join(c.get("identity_differs", []) + c.get("versions_differ", []) +
                          ([c["accuracy_note"]] if c.get("accuracy_note") else []) +
                          ([c["inconclusive"]] if c.get("inconclusive") else []) +
                          ([f"only in {'B' if c.get('missing_in') == 'A' else 'A'}"] if c["verdict"] == "missing"
                           else []))
        lines.append(f"| {c['cell']} | {c['verdict']} | " + " | ".join(nums) + f" | {notes.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write(result: dict, md: Path | None, js: Path | None) -> str:
    text = markdown(result)
    if md:
        md.write_text(text)
    if js:
        js.write_text(json.dumps(result, indent=1))
    return text
