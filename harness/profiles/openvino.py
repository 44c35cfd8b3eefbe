"""OpenVINO's performance counters (PERF_COUNT, set at compile time; a model compiled for this alone). Each
counter is a running mean over every infer since compile, kept in whole microseconds, and has no reset: the
profiled calls' own time per node is taken from two snapshots, (mean_b * n_b - mean_a * n_a) / (n_b - n_a),
so the warm-up drops out. The exec type names the kernel and the precision it ran in (jit_avx2_I8,
brgconv_avx2_f32); "ref" kernels are OpenVINO's reference implementations."""

from __future__ import annotations

from harness.profiles import role_of

TOOL = "OpenVINO performance counters (ov.properties.enable_profiling, InferRequest.get_profiling_info)"
SUFFIX = {"I8": "int8", "U8": "uint8", "f32": "fp32", "FP32": "fp32", "f16": "fp16", "FP16": "fp16",
          "bf16": "bf16", "BF16": "bf16", "i32": "int32", "I32": "int32"}
COMPUTE = {"Convolution", "GroupConvolution", "FullyConnected", "FullyConnectedQuantizedLegacy", "MatMul",
           "Deconvolution", "GroupConvolutionBackpropData"}


def snapshot(request) -> dict[str, tuple]:
    """node -> (node_type, exec_type, mean us) of every executed node."""
    out = {}
    for info in request.get_profiling_info():
        if str(info.status).endswith("EXECUTED") and not str(info.status).endswith("NOT_EXECUTED"):
            out[info.node_name] = (info.node_type, info.exec_type, info.real_time.total_seconds() * 1e6)
    return out


def records(before: dict, after: dict, n_before: int, n_after: int, precisions: dict[str, str]) -> list[dict]:
    """Per node, us a call over the calls between the snapshots. precisions: node -> runtimePrecision
    (u8/i8/f32 from the runtime model), which tells u8 from i8 where the exec type says I8 for both."""
    out = []
    for node, (node_type, exec_type, mean) in after.items():
        us = (mean * n_after - before.get(node, (None, None, 0.0))[2] * n_before) / (n_after - n_before)
        impl, _, suffix = exec_type.rpartition("_")
        precision = {"u8": "uint8", "i8": "int8"}.get(precisions.get(node, ""), SUFFIX.get(suffix, suffix))
        name = node.lower()
        role = ("reorder" if node_type == "Reorder" else "compute" if node_type in COMPUTE
                else "qdq" if node_type == "FakeQuantize" or name.startswith(("quantizelinear", "dequantizelinear"))
                else role_of(node_type))
        out.append({"node": node, "op_type": node_type, "us": max(us, 0.0), "precision": precision,
                    "kernel": exec_type, "role": role, "reference": impl.startswith("ref")})
    return out


def runtime_precisions(compiled) -> dict[str, str]:
    out = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info:
            out[op.get_friendly_name()] = info["runtimePrecision"].astype(str)
    return out
