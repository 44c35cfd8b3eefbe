"""Per-operator profiles, each from the runtime's own profiler, in a process of their own after a cell's timing
and accuracy passes (`python -m harness.phases profile ...`), so profiling never touches a timed figure.

A backend's profile(artifact, threads, batch, x, workdir) returns a Profiled: per-op records of one call
({node, op_type, us, precision, kernel, role, reference}; us None where the runtime has no op timer) and
how they were taken. summarize() turns them into the cell's figures: op types by time (top 15), and shares of
compute in int8 vs float, of Quantize/Dequantize, of layout reorders and of reference kernels."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness import measure

TOP = 15
INT8 = ("int8", "uint8")  # int8 compute: either activation type (ORT QLinearConv u8, ConvInteger u8 x u8, ...)
FLOAT = ("fp32", "fp16", "bf16")
PROFILE_S = 1.0  # profiled calls last about this long (at least MIN_CALLS)
MIN_CALLS, MAX_CALLS = 3, 200
WARMUP_CAP_S = 5.0  # an emulated fp16 call at batch 64 takes ~2 s: the warm-up stops at this, steady or not
# the matrix-multiply family, whatever the runtime calls it: Conv, QLinearConv, ConvInteger, Gemm, QGemm,
# MatMulInteger, Convolution, FullyConnected, quantized::conv2d_relu, onednn::qconv_pointwise,
# aten::_slow_conv2d_forward, mkldnn::_linear_pointwise, aten::addmm, CONV_2D, DEPTHWISE_CONV_2D
# (QLinearAdd and QLinearGlobalAveragePool are not: "linear" counts only as a word of its own)
COMPUTE = re.compile(r"conv|gemm|matmul|fullyconnected|fully_connected|addmm|(^|:)b?mm$|(^|[:_])q?linear(_|$)",
                     re.I)

# Quantize/Dequantize in any runtime's spelling (aten::quantize_per_tensor, aten::dequantize, QuantizeLinear,
# DynamicQuantizeLinear, FakeQuantize, TFLite's QUANTIZE, Inductor's cpp_fused_quantize_per_tensor_0), but not
# quantized::add, an int8 kernel
QDQ = re.compile(r"quantize(_per|linear|$)|fakequantize", re.I)
REORDER = re.compile(r"reorder|to_mkldnn|to_dense|transpose", re.I)


@dataclass(frozen=True)
class Profiled:
    records: list  # per op (node or op key), one call's worth
    calls: int  # profiled calls the records are averaged over
    wall_us: float  # mean wall time of a profiled call (profiler on: not a timed figure)
    tool: str  # the runtime's profiler used
    note: str = ""  # what the profile cannot show (e.g. no op timer)


def role_of(op_type: str) -> str:
    """compute / qdq / reorder / other from an op's name, for runtimes that name ops by what they do."""
    if COMPUTE.search(op_type):
        return "compute"
    if QDQ.search(op_type):
        return "qdq"
    return "reorder" if REORDER.search(op_type) else "other"


def drive(run, inp, mark=None) -> tuple[int, int, float]:
    """Warm up, call mark() (a counter snapshot), then call run(inp) for about PROFILE_S: (warm-up calls,
    profiled calls, mean wall us of a profiled call)."""
    info = measure.warm_up(run, inp, 3, 0.3, cap_s=WARMUP_CAP_S)
    call_s = info["s"] / max(info["calls"], 1)
    calls = max(MIN_CALLS, min(MAX_CALLS, int(PROFILE_S / max(call_s, 1e-6))))
    if mark:
        mark()
    t0 = time.perf_counter()
    for _ in range(calls):
        run(inp)
    return info["calls"], calls, (time.perf_counter() - t0) / calls * 1e6


def summarize(p: Profiled, batch: int) -> dict:
    """The cell's profile at one batch size: op types (with precision and kernel) by time, and the shares."""
    timed = all(r["us"] is not None for r in p.records)
    groups: dict[tuple, dict] = {}
    for r in p.records:
        g = groups.setdefault((r["op_type"], r["precision"], r["kernel"]), {
            "op_type": r["op_type"], "count": 0, "us": 0.0, "precision": r["precision"], "kernel": r["kernel"],
            "role": r["role"]})
        g["count"] += r.get("count", 1)
        g["us"] += r["us"] or 0.0
    total = sum(g["us"] for g in groups.values())
    ops = sorted(groups.values(), key=lambda g: (-g["us"], -g["count"], g["op_type"]))[:TOP]
    compute = [r for r in p.records if r["role"] == "compute"]
    out = {"batch": batch, "tool": p.tool, "calls": p.calls, "wall_ms": round(p.wall_us / 1e3, 4),
           "total_ms": round(total / 1e3, 4) if timed else None, "op_records": len(p.records),
           "ops": [{"op_type": g["op_type"], "count": g["count"], "ms": round(g["us"] / 1e3, 4) if timed else None,
                    "share": round(g["us"] / total, 4) if timed and total else None, "precision": g["precision"],
                    "kernel": g["kernel"], "role": g["role"]} for g in ops],
           "compute_ops": _count(compute), "shares": _shares(p.records, total) if timed and total else None}
    if p.note:
        out["note"] = p.note
    return out


def _count(compute: list) -> dict:
    out: dict[str, int] = {}
    for r in compute:
        out[r["precision"]] = out.get(r["precision"], 0) + r.get("count", 1)
    return dict(sorted(out.items()))


def _shares(records: list, total: float) -> dict:
    def us(pred) -> float:
        return sum(r["us"] for r in records if pred(r))

    compute = us(lambda r: r["role"] == "compute")
    return {"compute": round(compute / total, 4),
            "compute_int8": round(us(lambda r: r["role"] == "compute" and r["precision"] in INT8) / compute, 4)
            if compute else None,
            "qdq": round(us(lambda r: r["role"] == "qdq") / total, 4),
            "reorder": round(us(lambda r: r["role"] == "reorder") / total, 4),
            "reference": round(us(lambda r: r["reference"]) / total, 4)}


def phase(job: dict, backend, artifact) -> dict:
    """The profile process: batch 1 and the largest timed batch, the same inputs the timing phase used, each on
    an instance of its own loaded as for timing (the backend's profile())."""
    import numpy as np

    from harness.phases import test_inputs

    started = time.time()  # after the cell's timing processes have ended: tests check the order
    x = test_inputs(job)
    workdir = Path(job["paths"]["workdir"])
    out = {}
    for b in sorted({1, max(job["settings"]["batch_sizes"])}):
        batch = np.ascontiguousarray(np.resize(x[:b], (b, *x.shape[1:])))
        out[str(b)] = summarize(backend.profile(artifact, job["threads"], b, batch, workdir), b)
    return {"profile": {"started": round(started, 3), "batches": out}}
