"""ONNX Runtime from the shared ONNX export: fp32, fp16, QDQ int8 (S8S8), QDQ uint8 (U8S8), dynamic.

Devices: the CPU execution provider; on a CUDA target the CUDA EP (variant "") and the TensorRT EP (variant
"trt-ep"), each with the CPU EP behind it. Which node ran on which provider is read from ORT's own profile
(`placement`), because a QDQ or dynamic graph silently falling back to the CPU is the usual reason int8 is
slower than fp32 on a GPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from harness.backends.base import Artifact, Backend, Session, Unsupported, refuse
from harness.profiles import ort as ort_profile

CALIB_BATCH = 100
BATCH_DIM = "batch"  # the export's dynamic batch axis (Source.onnx_path), kept by ORT's and NNCF's quantizers
METHODS = {None: "MinMax", "minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
PROVIDERS = {("cpu", ""): "CPUExecutionProvider", ("cuda", ""): "CUDAExecutionProvider",
             ("cuda", "trt-ep"): "TensorrtExecutionProvider"}


class OnnxRuntimeBackend(Backend):
    NAME = "onnxruntime"
    MODULE = "onnxruntime"
    PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnx")
    EXTRA = "onnxruntime"
    IMPORTS = ("torch", "onnx", "onnxruntime", "onnxruntime.quantization")  # torch: the shared ONNX export
    UNSUPPORTED = {
        "bf16": "onnxruntime's CPU execution provider has no bfloat16 Conv/Gemm kernels",
    }
    OPTIONS = {"extra_options": (dict, "passed to quantize_static's extra_options as given, e.g. "
                                       "{CalibMovingAverage = true}"),
               "reduce_range": (bool, "7-bit weights for uint8 (U8S8); default: on when the CPU has no VNNI, where "
                                      "the u8s8 multiply saturates (onnxruntime's quantization guide)")}
    DEVICES = ("cpu", "cuda")
    UNSUPPORTED_ON = {"cuda": {"bf16": "the harness has no bfloat16 ONNX conversion (onnxruntime's float16 "
                                       "converter writes fp16 only)"}}
    VARIANTS = {"cuda": {"trt-ep": "TensorRT execution provider (CUDA EP and CPU EP behind it)"}}

    def build(self, src, precision: str, workdir: Path) -> Artifact:
        fp32 = src.onnx_path()
        out = workdir / f"model-{precision}.onnx"
        if precision == "fp32":
            shutil.copyfile(fp32, out)
            details = {"format": "ONNX (torch.onnx TorchScript exporter)"}
        elif precision == "fp16":
            details = self._fp16(fp32, out)
        elif precision in ("int8", "uint8"):
            details = self._static(src, fp32, out, precision, workdir)
        else:
            details = self._dynamic(fp32, out, workdir)
        return Artifact(out, (out,), {**details, "precision": precision})

    @staticmethod
    def _fp16(fp32: Path, out: Path) -> dict:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        onnx.save(model, str(out))
        return {"format": "ONNX fp16 (onnxruntime.transformers.float16, fp32 I/O)"}

    def _static(self, src, fp32: Path, out: Path, precision: str, workdir: Path) -> dict:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(src.calib_batches(CALIB_BATCH))

            def get_next(self):
                batch = next(self.it, None)
                return None if batch is None else {"x": batch}

        r = src.recipe
        refuse(r, {"method": (("histogram",), "onnxruntime's quantize_static calibrates with MinMax, Entropy, "
                                             "Percentile or Distribution, not a torch-style histogram")})
        _refuse_flush(r)
        pre = workdir / "preprocessed.onnx"
        quant_pre_process(str(fp32), str(pre))
        act = QuantType.QInt8 if precision == "int8" else QuantType.QUInt8
        per_channel = r.weight_granularity != "per_tensor"
        reduce_range, why = self._reduce_range(r, precision)
        extra = {"ActivationSymmetric": bool(r.activation_symmetric),
                 "WeightSymmetric": r.weight_symmetric is not False, **r.options(self.NAME).get("extra_options", {})}
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=act,
                        weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range,
                        calibrate_method=getattr(CalibrationMethod, METHODS[r.method]), extra_options=extra)
        pre.unlink()
        sym = {True: "symmetric", False: "asymmetric"}
        return {"api": "onnxruntime.quantization.quantize_static (QDQ)",
                "activations": f"{precision} per-tensor {sym[extra['ActivationSymmetric']]}",
                "weights": f"int8 {'per-channel' if per_channel else 'per-tensor'} {sym[extra['WeightSymmetric']]}, "
                           f"reduce_range={reduce_range}", "reduce_range_why": why,
                "calibration_method": METHODS[r.method], "extra_options": extra,
                "scheme": "S8S8" if precision == "int8" else "U8S8"}

    def _reduce_range(self, recipe, precision: str) -> tuple[bool, str]:
        """7-bit weights ([-64, 64]) for U8S8 on a CPU without VNNI: there MLAS multiplies uint8 activations by int8
        weights with VPMADDUBSW, whose int16 pair sums saturate (255 * 127 * 2 > 32767); onnxruntime's guide
        advises reduce_range for that. resnet20 uint8 on an AVX2-only EPYC: 91.15% against fp32's 91.73%, while
        S8S8 int8 kept 91.73%. IPEX and torch-inductor do the same for their uint8 activations."""
        from harness.envinfo import reduce_range_for

        chosen = recipe.options(self.NAME).get("reduce_range")
        if chosen is None and precision != "uint8":
            return False, "S8S8: full range (the saturation is U8S8's)"
        return reduce_range_for(chosen, "quantize_static", "U8S8's multiply saturates at full range")

    @staticmethod
    def _dynamic(fp32: Path, out: Path, workdir: Path) -> dict:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = workdir / "preprocessed.onnx"
        quant_pre_process(str(fp32), str(pre))
        # ConvInteger on ORT's CPU EP only has uint8 x uint8 kernels, so weights are uint8 here.
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QUInt8)
        pre.unlink()
        return {"api": "onnxruntime.quantization.quantize_dynamic",
                "weights": "uint8 per-tensor", "activations": "uint8, quantized at run time",
                "note": "Conv becomes ConvInteger (no fused fast path on CPU), so expect it slower than fp32"}

    def load(self, artifact: Artifact, threads: int, batch: int | None = None) -> Session:
        """A new InferenceSession; with a batch, the export's dynamic "batch" axis is fixed to it
        (add_free_dimension_override_by_name), so ORT plans one static shape as for a deployment."""
        opts = _options(threads)
        if batch is not None:
            opts.add_free_dimension_override_by_name(BATCH_DIM, batch)
        providers = self._providers(artifact.details.get("precision", "fp32"))
        sess = self._session(artifact.path, opts, providers)
        session = OrtSession(sess)
        if self.device == "cuda":
            session.stages = lambda x: _cuda_stages(sess, x)
        return session

    def _session(self, path: Path, opts, providers: list):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), opts, providers=providers)
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if sess.get_providers()[0] != wanted:  # ORT falls back to the CPU EP silently when a provider fails
            raise Unsupported(f"{wanted} could not be created (session providers: {sess.get_providers()}); "
                              "see the cell log for onnxruntime's own message")
        return sess

    def inspect(self, session: Session, artifact: Artifact) -> dict:
        """The graph ORT runs after its fusions (op counts) and which provider ran each node (a profiled run):
        both from separate sessions, so no timed session is ever profiled."""
        providers = self._providers(artifact.details.get("precision", "fp32"))
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        opts = _options(session.config["intra_op_threads"])
        opt_path = artifact.path.with_suffix(".optimized.onnx")
        opts.optimized_model_filepath = str(opt_path)
        self._session(artifact.path, opts, providers)
        graph = _op_counts(opt_path)
        opt_path.unlink(missing_ok=True)
        return {"runtime_graph": graph, "placement": _profile_placement(artifact.path, providers,
                                                                        session.config["intra_op_threads"], wanted)}

    def profile(self, artifact: Artifact, threads: int, batch: int, x: np.ndarray, workdir: Path):
        """A profiled session of its own, configured as load() configures the timed one."""
        from harness.profiles import Profiled, drive, ort

        opts = ort.profiled_options(_options(threads), workdir)
        opts.add_free_dimension_override_by_name(BATCH_DIM, batch)
        sess = self._session(artifact.path, opts, self._providers(artifact.details.get("precision", "fp32")))
        session = OrtSession(sess)
        _, calls, wall_us = drive(session.run, session.prepare(x))
        return Profiled(ort.records(sess, calls, workdir), calls, wall_us, ort.TOOL)

    def _providers(self, precision: str) -> list:
        import onnxruntime as ort

        wanted = PROVIDERS[(self.device, self.variant)]
        if wanted not in ort.get_available_providers():
            raise Unsupported(f"onnxruntime {ort.__version__} has no {wanted} here (available: "
                              f"{', '.join(ort.get_available_providers())}; the GPU build is onnxruntime-gpu)")
        if self.device == "cpu":
            return [wanted]
        cuda = ("CUDAExecutionProvider", {"device_id": 0})
        if self.variant != "trt-ep":
            return [cuda, "CPUExecutionProvider"]
        # explicit quantization: the TRT EP reads the QDQ scales; fp16 lets TensorRT pick fp16 kernels
        trt = {"device_id": 0, "trt_fp16_enable": precision == "fp16",
               "trt_int8_enable": precision in ("int8", "uint8"), "trt_engine_cache_enable": False}
        return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]


def _options(threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OrtSession(Session):
    """run(): InferenceSession.run with the input feed (name -> float32 array) built once outside the loop."""

    def __init__(self, sess):
        self.sess = sess
        self.inp, self.out = sess.get_inputs()[0], [sess.get_outputs()[0].name]
        o = sess.get_session_options()
        self.config = {"providers": sess.get_providers(), "intra_op_threads": o.intra_op_num_threads,
                       "inter_op_threads": o.inter_op_num_threads,
                       "graph_optimization_level": str(o.graph_optimization_level).split(".")[-1],
                       "execution_mode": str(o.execution_mode).split(".")[-1], "input_shape": list(self.inp.shape)}

    def prepare(self, x):
        return {self.inp.name: np.ascontiguousarray(x, np.float32)}

    def run(self, feed):
        return self.sess.run(self.out, feed)[0]


def _refuse_flush(recipe) -> None:
    """Checked on onnxruntime 1.32 (resnet20, 3 batches, value 2): 37 of 71 activation scales came from the
    last batch only; with 1 it raises "No data is collected"."""
    if "CalibMaxIntermediateOutputs" in recipe.options(OnnxRuntimeBackend.NAME).get("extra_options", {}):
        raise Unsupported(f"recipe {recipe.name!r} sets extra_options.CalibMaxIntermediateOutputs: onnxruntime's "
                          "MinMax calibrator discards each flushed batch instead of merging its ranges")


def _profile_placement(path: Path, providers: list, threads: int, wanted: str) -> dict:
    """One profiled batch-1 run in a separate session (profiling slows every run, so never the timed one)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_name("ort-profile"))
    sess = ort.InferenceSession(str(path), opts, providers=providers)
    inp = sess.get_inputs()[0]
    shape = [1] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    sess.run(None, {inp.name: np.zeros(shape, np.float32)})
    return placement(ort_profile.trace_events(sess), wanted)


def placement(events: list, wanted: str) -> dict:
    """Nodes per execution provider from an ORT profile, and the nodes that did not run on `wanted`."""
    by_provider: dict[str, int] = {}
    fallback: dict[str, str] = {}
    for node, args, _ in ort_profile.node_events(events):
        if "provider" not in args:
            continue
        by_provider[args["provider"]] = by_provider.get(args["provider"], 0) + 1
        if args["provider"] != wanted:
            fallback[node] = args.get("op_name", "?")
    ops: dict[str, int] = {}
    for op in fallback.values():
        ops[op] = ops.get(op, 0) + 1
    return {"provider": wanted, "nodes_by_provider": dict(sorted(by_provider.items())),
            "fallback_ops": dict(sorted(ops.items())), "fallback_nodes": sorted(fallback)[:20]}


def _cuda_stages(sess, x):
    """Batch-1 h2d / compute / d2h calls through an IO binding (each returns when its copy or run is done)."""
    import onnxruntime as ort

    inp, out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    binding = sess.io_binding()
    binding.bind_ortvalue_input(inp, dev)
    binding.bind_output(out, "cuda", 0)
    return {"h2d": lambda: dev.update_inplace(x), "compute": lambda: sess.run_with_iobinding(binding),
            "d2h": binding.copy_outputs_to_cpu}


def _op_counts(path: Path) -> dict:
    """Op types in the graph ORT actually runs (after its fusions): shows inserted Casts, QLinear/Integer ops."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
