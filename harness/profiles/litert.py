"""LiteRT / TFLite: the Python interpreter has no op profiler (ai-edge-litert 2.3 exposes none; the op-level
profile of benchmark_model --enable_op_profiling is C++ only), so these profiles carry the model's ops, their
count and precision from the interpreter's op list, with no time per op. DELEGATE entries are the XNNPACK
partitions that took ops over; which op went where the list does not say."""

from __future__ import annotations

import numpy as np

from harness.profiles import Profiled, drive, role_of

TOOL = "LiteRT interpreter op list (no op timer in its Python API)"
NOTE = ("no per-op times: ai-edge-litert's Python interpreter has no op profiler; ops, counts and precision "
        "from its op list, wall_ms from the profiled calls")
DTYPES = {np.float32: "fp32", np.float16: "fp16", np.int8: "int8", np.uint8: "uint8", np.int32: "int32",
          np.int16: "int16", np.int64: "int64"}


def _precision(types) -> str:
    """int8 when the input or the weights are: a dynamic-range op (float input, int8 weights) quantizes its input
    on the fly and multiplies in int8 (TFLite's hybrid kernels, XNNPACK's qd8 ones); else the input's type."""
    names = [DTYPES.get(t, str(t)) for t in types[:2]]
    return "int8" if "int8" in names else (names[0] if names else "")


def profile(session, x) -> Profiled:
    inp = session.prepare(x)
    _, calls, wall_us = drive(session.run, inp)
    interpreter = session._interp(len(inp))[0]
    delegated = sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    records = [{"node": f"{op['op_name']}#{op['index']}", "op_type": op["op_name"], "us": None,
                "precision": _precision(op["operand_types"]),
                "kernel": f"builtin or XNNPACK ({delegated} delegate partitions)",
                "role": role_of(op["op_name"]), "reference": False}
               for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    return Profiled(records, calls, wall_us, TOOL, NOTE)
