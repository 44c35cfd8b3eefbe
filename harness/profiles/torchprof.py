"""torch.profiler for the PyTorch columns (eager, IPEX's TorchScript, Inductor's compiled module). Ops are
keyed by name and the dtype of their first tensor input, timed by self time (children excluded, so the keys
add up to the whole call). Inductor's generated C++ kernels are visible only when compiled with
torch._inductor.config.cpp.enable_kernel_profile (the profile process sets it before load() compiles);
without it their time is the self time of "## Call CompiledFxGraph ##"."""

from __future__ import annotations

import re

from harness.profiles import Profiled, drive, role_of

TOOL = "torch.profiler (CPU activity, self time per op)"
# the profiler's dtype strings, lower-cased; anything else (ScalarList, an optional) is not a tensor's
DTYPES = {"float": "fp32", "c10::half": "fp16", "c10::bfloat16": "bf16", "c10::quint8": "uint8",
          "c10::qint8": "int8", "unsigned char": "uint8", "signed char": "int8", "int": "int32",
          "long int": "int64", "double": "fp64", "bool": "bool", "float32": "fp32", "float16": "fp16",
          "bfloat16": "bf16"}
# dynamic int8 kernels take float input and quantize it inside: int8 compute despite their input type
QUANTIZING = {"quantized::linear_dynamic": "int8", "quantized::linear_relu_dynamic": "int8"}
# ATen's dispatch layers above the kernel that does the work (aten::conv2d > convolution > _convolution >
# mkldnn_convolution): their self time is dispatch, and counting them as convolutions would count each 4 times
# Inductor's generated C++ kernels: elementwise / reduction fusions around the extern GEMM and convolution calls,
# named after the ops they came from ("cpp_fused_addmm_mean_view_4" is the classifier's bias and the pooling):
# Q/DQ work when they quantize or dequantize, never a compute op
GENERATED = re.compile(r"^graph_\d+_cpp_fused_")
DISPATCH = re.compile(r"^aten::(conv\dd|convolution|_convolution|linear|thnn_conv2d)$")
# ATen's im2col convolution: what eager PyTorch runs where oneDNN declines a shape (fp32 batch 1 under 20480
# input elements, emulated fp16): a portable reference path, not an optimized kernel
REFERENCE = re.compile(r"slow_conv|thnn_conv")


def _generated(name: str) -> str:
    """One op type for all of Inductor's generated kernels of a kind (each has its own numbered name)."""
    return "inductor kernel (quantize/dequantize)" if "quantize" in name else "inductor kernel (elementwise)"


def _role(name: str) -> str:
    if DISPATCH.match(name):
        return "other"
    if GENERATED.match(name):
        return "qdq" if role_of(name) == "qdq" or "quantize" in name else "other"
    return role_of(name)


def _fused(rec: dict) -> dict:
    """IPEX's oneDNN Graph partitions are named by the ops they fused ("dequantize+dequantize+_convolution+relu+
    quantize_per_tensor"): one record, counted as the compute ops inside it, int8 when it fuses Q/DQ around
    them (the partition's own input types are not recorded)."""
    parts = rec["op_type"].split("+")  # "linear" alone is a compute op (role_of reads it as a word)
    compute = sum(role_of(p) == "compute" for p in parts)
    if not compute:
        return rec
    qdq = any(role_of(p) == "qdq" for p in parts)
    return {**rec, "role": "compute", "count": rec["count"] * compute,
            "precision": "int8" if qdq else rec["precision"], "kernel": "oneDNN Graph fusion"}


def profile(session, x) -> Profiled:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    inp = session.prepare(x)
    prof = torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True)
    _, calls, wall_us = drive(session.run, inp, prof.start)
    prof.stop()
    keys: dict[tuple, dict] = {}
    for name, dtype, self_ns in _self_times(prof.profiler.kineto_results.events()):
        op = _generated(name) if GENERATED.match(name) else name
        rec = keys.setdefault((op, dtype), {
            "node": op, "op_type": op, "us": 0.0, "n": 0,
            "precision": QUANTIZING.get(op) or DTYPES.get(dtype.lower(), ""),
            "kernel": "dispatch" if DISPATCH.match(name) else "Inductor generated C++" if op != name else name,
            "role": _role(name), "reference": bool(REFERENCE.search(name))})
        rec["us"] += self_ns / 1e3 / calls
        rec["n"] += 1
    out = []
    for rec in keys.values():
        n = rec.pop("n")
        if n < calls:  # ops of every call only; a one-off (the profiler's own start event) is left out
            continue
        rec = {**rec, "count": max(1, round(n / calls))}
        rec = _fused(rec) if "+" in rec["op_type"] else rec
        if rec["role"] == "compute" and not rec["precision"]:  # IPEX's prepacked ops record no input types:
            dtype = getattr(session, "dtype", None) or "torch.float32"  # the module's dtype
            rec["precision"] = DTYPES.get(str(dtype).removeprefix("torch."), "")
        out.append(rec)
    return Profiled(out, calls, wall_us, TOOL)


def _self_times(events) -> list[tuple[str, str, int]]:
    """(name, dtype of the first tensor input, self ns) per CPU op event: its duration less its children's,
    nesting read from start/end on each thread. From the profiler's raw events, whose dtypes() exist in torch
    2.8 (IPEX's environment) as in 2.13; FunctionEvent.input_dtypes does not."""
    rows = sorted(((e.start_thread_id(), e.start_ns(), e.end_ns(), e.name(),
                    next((d for d in e.dtypes() if d), "")) for e in events if e.device_type().name == "CPU"),
                  key=lambda r: (r[0], r[1], -r[2]))
    out, stack = [], []  # stack: [end_ns, thread, index into out]
    for thread, start, end, name, dtype in rows:
        while stack and (stack[-1][1] != thread or stack[-1][0] <= start):
            stack.pop()
        if stack:
            parent = out[stack[-1][2]]
            parent[2] -= end - start
        out.append([name, dtype, end - start])
        stack.append([end, thread, len(out) - 1])
    return [tuple(r) for r in out]
