"""ONNX Runtime's own session profiler: one Chrome-trace event per node run (`cat == "Node"`, `dur` in us),
nested in one `model_run` event per call. Only the nodes inside the last `calls` model_run windows count, so the
warm-up calls made in the same profiled session are left out. The trace has no domain: the optimized graph,
written by the same session, maps each node to its domain (com.microsoft.nchwc Conv, com.microsoft QLinearConv)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.profiles import role_of

TOOL = "onnxruntime session profiler (SessionOptions.enable_profiling)"
# ORT's tensor element types as its profiler prints them -> the harness's precision names
DTYPES = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8", "uint8": "uint8",
          "int32": "int32", "int64": "int64"}
QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# NCHWc layout changes around fp32 convs; the NHWC Transposes ORT's layout transformer puts around QLinearConv
REORDER = {"ReorderInput", "ReorderOutput", "Transpose"}
# fused com.microsoft ops that take float input and quantize it inside: int8 kernels despite their input type
QUANTIZING = {"DynamicQuantizeMatMul": "uint8", "MatMulIntegerToFloat": "uint8"}


def profiled_options(opts, workdir: Path):
    """opts with the profiler on and the optimized graph written (for each node's domain)."""
    opts.enable_profiling = True
    opts.profile_file_prefix = str(workdir / "ort-profile")
    opts.optimized_model_filepath = str(workdir / "ort-profiled.optimized.onnx")
    return opts


def trace_events(sess) -> list[dict]:
    """End the session's profiling and return its trace's events (the file is removed)."""
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    return events


def node_events(events: list[dict]):
    """(node name, args, event) of every node run in a trace."""
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            yield e["name"][: -len("_kernel_time")], e.get("args", {}), e


def records(sess, calls: int, workdir: Path) -> list[dict]:
    """Per node: mean us per call over the last `calls` runs (run() has been called warm-up + calls times)."""
    events = trace_events(sess)
    domains = _domains(workdir / "ort-profiled.optimized.onnx")
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session"
               and e.get("name") == "model_run"][-calls:]
    if len(windows) < calls:
        raise RuntimeError(f"onnxruntime's trace holds {len(windows)} model_run events, {calls} were profiled")
    start, end = windows[0][0], windows[-1][1]
    nodes: dict[str, dict] = {}
    for name, args, e in node_events(events):
        if not start <= e["ts"] <= end:
            continue
        op = args.get("op_name", "?")
        rec = nodes.setdefault(name, {"node": name, "op_type": op, "us": 0.0,
                                      "precision": QUANTIZING.get(op) or _precision(args),
                                      "kernel": f"{domains.get(name, '') or 'ai.onnx'}:{op} "
                                                f"({args.get('provider', '?')})",
                                      "role": "qdq" if op in QDQ else "reorder" if op in REORDER else role_of(op),
                                      "reference": False})  # ORT labels no kernel as a reference one
        rec["us"] += e["dur"] / calls
    return list(nodes.values())


def _precision(args: dict) -> str:
    """The activation's element type: input 0 (prepacked constant inputs drop out of the list, so never a
    later position)."""
    inputs = args.get("input_type_shape") or [{}]
    dtype = next(iter(inputs[0]), "?")
    return DTYPES.get(dtype, dtype)


def _domains(path: Path) -> dict[str, str]:
    import onnx

    if not path.is_file():
        return {}
    out = {n.name: n.domain for n in onnx.load(str(path)).graph.node}
    path.unlink()
    return out
