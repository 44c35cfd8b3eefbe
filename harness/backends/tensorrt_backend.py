"""TensorRT on an NVIDIA GPU, built from the shared ONNX export as a strongly typed network: the precision
comes from the ONNX file itself. fp32: the export; fp16: onnxruntime's float16 conversion (the file the
onnxruntime fp16 cell runs); int8: explicit quantization, the QDQ ONNX that onnxruntime's quantize_static
writes from the same calibration images, with symmetric int8 activations, per-channel symmetric int8
weights and float biases (what TensorRT's Q/DQ layers take: int8 with zero point 0, no int32 bias DQ).

Why explicit QDQ and not TensorRT's IInt8EntropyCalibrator2/MinMaxCalibrator: implicit (calibrator) quantization
is deprecated in TensorRT 10 and removed in 11, along with the INT8/FP16 builder flags; and with one QDQ file
TensorRT and onnxruntime's int8 cells share one set of scales, so a difference between them is the runtime's.
The recipe's calibration method/size/seed apply exactly as for onnxruntime.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from harness.backends.base import Artifact, Backend, Probe, Session, Unsupported, refuse
from harness.backends.onnxruntime_backend import OnnxRuntimeBackend

MAX_BATCH = 256  # the accuracy pass's dynamic profile goes up to this batch
# substrings of a TensorRT data type description -> precision name; bf16 before "float", which it contains
DTYPES = (("int8", "int8"), ("fp8", "fp8"), ("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16"),
          ("half", "fp16"), ("fp32", "fp32"), ("float", "fp32"), ("int32", "int32"), ("int64", "int64"),
          ("bool", "bool"))


class TensorRtBackend(Backend):
    NAME = "tensorrt"
    NONDETERMINISTIC = "the engine builder picks its kernels (tactics) by timing them, so rebuilds can differ"
    MODULE = "tensorrt"
    PACKAGES = ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu12-libs", "tensorrt-cu13-libs")
    DEVICES = ("cuda",)
    UNSUPPORTED_ON = {"cuda": {
        "uint8": "TensorRT's int8 is signed and symmetric (zero point 0); there is no uint8-activation mode",
        "dynamic": "TensorRT has no run-time (dynamic-range) activation quantization",
        "bf16": "the harness has no bfloat16 ONNX conversion, and a strongly typed TensorRT network takes its "
                "precision from the ONNX types only",
    }}

    def probe(self) -> Probe:
        if importlib.util.find_spec("tensorrt") is None:
            return Probe(False, None, "tensorrt not installed")
        try:  # the PyPI package can be present without NVIDIA's libraries (they come from NVIDIA's index)
            import tensorrt
        except Exception as exc:  # noqa: BLE001 - any import failure means the same to the user
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return Probe(False, None, f"tensorrt not installed (import failed: {first})")
        return Probe(True, tensorrt.__version__, None)

    def build(self, src, precision: str, workdir: Path) -> Artifact:
        onnx_path, details = self.onnx_for(src, precision, workdir)
        batches = sorted(set(src.timed_batches))
        plan, build_s, layers = build_engine(onnx_path, batches)
        path = workdir / f"model-{precision}.engine"
        path.write_bytes(plan)
        # profile i is static at batches[i] (each timed batch gets kernels tuned for it); the last one is dynamic
        # (min 1, opt and max MAX_BATCH) for the accuracy pass's batches
        return Artifact(path, (path,), {**details, "engine_build_s": round(build_s, 3), "layers": layers,
                                        "profiles": [*batches, f"1..{MAX_BATCH}"]})

    def onnx_for(self, src, precision: str, workdir: Path) -> tuple[Path, dict]:
        """The ONNX file the engine is built from (runs on the CPU: this is the part tests check without a GPU)."""
        fp32 = src.onnx_path()
        ort = OnnxRuntimeBackend("cpu")
        if precision == "fp32":
            return fp32, {"format": "TensorRT plan from the fp32 ONNX export (strongly typed)"}
        out = workdir / f"model-{precision}.onnx"
        if precision == "fp16":
            return out, {**ort._fp16(fp32, out), "format": "TensorRT plan from the fp16 ONNX (strongly typed)"}
        r = src.recipe
        why = "TensorRT's explicit quantization takes symmetric int8 only (zero point 0)"
        refuse(r, {"activation_symmetric": ((False,), why), "weight_symmetric": ((False,), why)})
        # biases stay float: TensorRT's Q/DQ layers take int8 only, and it fuses the float bias into the conv
        qdq = {**r.backend_options, "onnxruntime": {"extra_options": {"QuantizeBias": False}}}
        sym = dataclasses.replace(src, recipe=dataclasses.replace(r, activation_symmetric=True,
                                                                   weight_symmetric=True, backend_options=qdq))
        details = ort._static(sym, fp32, out, "int8", workdir)
        import onnx

        problems = qdq_problems(onnx.load(str(out)))
        if problems:
            raise Unsupported(f"the QDQ ONNX is not what TensorRT takes: {'; '.join(problems[:3])}")
        return out, {**details, "quantization": "explicit QDQ (onnxruntime quantize_static, symmetric int8)",
                     "format": "TensorRT plan from the QDQ ONNX (strongly typed)"}

    def load(self, artifact: Artifact, threads: int, batch: int | None = None) -> Session:
        import tensorrt as trt

        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(artifact.path.read_bytes())
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {artifact.path.name}")
        profiles = artifact.details["profiles"]
        index = profiles.index(batch) if batch in profiles else len(profiles) - 1
        return EngineSession(engine, index, profiles[index])


def build_engine(onnx_path: Path, batches: list[int]) -> tuple[bytes, float, dict]:
    """(serialized plan, build seconds, per-layer precision summary)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT's ONNX parser refused {onnx_path.name}: {'; '.join(errors[:3])}")
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # so the inspector reports per-layer types
    inp = network.get_input(0)
    rest = tuple(inp.shape)[1:]
    for lo, opt, hi in [(b, b, b) for b in batches] + [(1, MAX_BATCH, MAX_BATCH)]:
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (lo, *rest), (opt, *rest), (hi, *rest))
        config.add_optimization_profile(profile)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if plan is None:
        raise RuntimeError("TensorRT could not build the engine (its log is in the cell log)")
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    return bytes(plan), build_s, layer_precisions(json.loads(info))


def layer_precisions(info: dict) -> dict:
    """Summarize the engine inspector's JSON: how many layers run in each precision (a layer's precision is its
    first input's data type), compute layers (convolutions, GEMMs) apart, and the reformat layers TensorRT
    inserted. Takes both TensorRT 10's "Format/Datatype" strings and 11's separate "DataType" field."""
    layers = info.get("Layers", [])
    if layers and not isinstance(layers[0], dict):
        return {"available": False, "why": "the engine was built without DETAILED profiling verbosity"}
    by: dict[str, int] = {}
    compute: dict[str, int] = {}
    reformats = 0
    for layer in layers:
        kind = str(layer.get("LayerType", "")).lower()
        precision = _dtype(layer.get("Inputs") or layer.get("Outputs") or [])
        by[precision] = by.get(precision, 0) + 1
        reformats += kind == "reformat"
        if any(k in kind for k in ("conv", "gemm", "matrixmultiply", "fullyconnected")):
            compute[precision] = compute.get(precision, 0) + 1
    return {"available": True, "layers": len(layers), "by_precision": dict(sorted(by.items())),
            "compute_layers_by_precision": dict(sorted(compute.items())), "reformat_layers": reformats}


def _dtype(tensors: list) -> str:
    if not tensors:
        return "none"
    text = str(tensors[0].get("DataType") or tensors[0].get("Format/Datatype") or "").lower()
    return next((name for token, name in DTYPES if token in text), "other")


def qdq_problems(model) -> list[str]:
    """Why TensorRT would refuse or mis-read a QDQ ONNX: every Q/DQ zero point must be int8 and all zero."""
    import numpy as np
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zp = inits.get(node.input[2])
        if zp is None:
            problems.append(f"{node.name}: zero point {node.input[2]!r} is not a constant")
            continue
        arr = numpy_helper.to_array(zp)
        if arr.dtype != np.int8:
            problems.append(f"{node.name}: zero point is {arr.dtype}, TensorRT takes int8")
        elif np.any(arr != 0):
            problems.append(f"{node.name}: zero point {arr.ravel()[:3].tolist()} is not 0 (asymmetric)")
    return problems


class EngineSession(Session):
    """One execution context on one optimization profile; device buffers per input shape (torch CUDA tensors),
    all work on torch's current stream. run(): host-to-device copy, execute, device-to-host copy."""

    def __init__(self, engine, profile: int, batch):
        import tensorrt as trt
        import torch

        self.torch, self.context = torch, engine.create_execution_context()
        self.context.set_optimization_profile_async(profile, torch.cuda.current_stream().cuda_stream)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inp = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.out = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.buffers: dict[tuple, tuple] = {}
        self.config = {"profile": profile, "profile_batch": batch, "device": torch.cuda.get_device_name(0)}

    def _bind(self, shape: tuple):
        torch, context = self.torch, self.context
        if shape not in self.buffers:
            context.set_input_shape(self.inp, shape)
            d_in = torch.empty(shape, dtype=torch.float32, device="cuda")
            d_out = torch.empty(tuple(context.get_tensor_shape(self.out)), dtype=torch.float32, device="cuda")
            self.buffers[shape] = (d_in, d_out)
        d_in, d_out = self.buffers[shape]
        context.set_input_shape(self.inp, shape)
        context.set_tensor_address(self.inp, d_in.data_ptr())
        context.set_tensor_address(self.out, d_out.data_ptr())
        return d_in, d_out

    def _execute(self):
        if not self.context.execute_async_v3(self.torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def prepare(self, x):
        host = self.torch.from_numpy(np.ascontiguousarray(x, np.float32))
        return host, self._bind(tuple(x.shape))

    def run(self, prepared):
        host, (d_in, d_out) = prepared
        d_in.copy_(host)
        self._execute()
        return d_out.cpu()

    def finish(self, out):
        return out.numpy()

    def stages(self, x):
        torch = self.torch
        host = torch.from_numpy(np.ascontiguousarray(x, np.float32)).pin_memory()
        d_in, d_out = self._bind(tuple(x.shape))
        back = torch.empty(d_out.shape, dtype=d_out.dtype).pin_memory()

        def synced(fn):
            return lambda: (fn(), torch.cuda.synchronize())

        return {"h2d": synced(lambda: d_in.copy_(host, non_blocking=True)), "compute": synced(self._execute),
                "d2h": synced(lambda: back.copy_(d_out, non_blocking=True))}
