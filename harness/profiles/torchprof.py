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
          "long int": "int64", "double": "fp64", "bool": "bool"}
# ATen's dispatch layers above the kernel that does the work (aten::conv2d > convolution > _convolution >
# mkldnn_convolution): their self time is dispatch, and counting them as convolutions would count each 4 times
DISPATCH = re.compile(r"^aten::(conv\dd|convolution|_convolution|linear|thnn_conv2d)$")
# ATen's im2col convolution: what eager PyTorch runs where oneDNN declines a shape (fp32 batch 1 under 20480
# input elements, emulated fp16): a portable reference path, not an optimized kernel
REFERENCE = re.compile(r"slow_conv|thnn_conv")


def profile(session, x) -> Profiled:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    inp = session.prepare(x)
    prof = torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True)
    _, calls, wall_us = drive(session.run, inp, prof.start)
    prof.stop()
    keys: dict[tuple, dict] = {}
    for e in prof.events():
        dtype = next((d for d in (e.input_dtypes or ()) if d), "")
        rec = keys.setdefault((e.name, dtype), {
            "node": e.name, "op_type": e.name, "us": 0.0, "n": 0, "precision": DTYPES.get(dtype.lower(), ""),
            "kernel": "dispatch" if DISPATCH.match(e.name) else e.name,
            "role": "other" if DISPATCH.match(e.name) else role_of(e.name),
            "reference": bool(REFERENCE.search(e.name))})
        rec["us"] += e.self_cpu_time_total / calls
        rec["n"] += 1
    out = []
    for rec in keys.values():
        n = rec.pop("n")
        if n >= calls:  # ops of every call; a one-off (the profiler's own start event) is left out
            out.append({**rec, "count": max(1, round(n / calls))})
    return Profiled(out, calls, wall_us, TOOL)
