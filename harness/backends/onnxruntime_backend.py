"""ONNX Runtime (CPU EP) from the shared ONNX export: fp32, fp16, QDQ int8 (S8S8), QDQ uint8 (U8S8), dynamic."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.backends.base import Artifact, Backend, Predict, refuse

CALIB_BATCH = 100
METHODS = {None: "MinMax", "minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class OnnxRuntimeBackend(Backend):
    NAME = "onnxruntime"
    MODULE = "onnxruntime"
    PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnx")
    EXTRA = "onnxruntime"
    UNSUPPORTED = {
        "bf16": "onnxruntime's CPU execution provider has no bfloat16 Conv/Gemm kernels",
    }
    OPTIONS = {"extra_options": (dict, "passed to quantize_static's extra_options as given, e.g. "
                                       "{CalibMovingAverage = true}")}

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
        return Artifact(out, (out,), details)

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
        pre = workdir / "preprocessed.onnx"
        quant_pre_process(str(fp32), str(pre))
        act = QuantType.QInt8 if precision == "int8" else QuantType.QUInt8
        per_channel = r.weight_granularity != "per_tensor"
        extra = {"ActivationSymmetric": bool(r.activation_symmetric),
                 "WeightSymmetric": r.weight_symmetric is not False, **r.options(self.NAME).get("extra_options", {})}
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=act,
                        weight_type=QuantType.QInt8, per_channel=per_channel,
                        calibrate_method=getattr(CalibrationMethod, METHODS[r.method]), extra_options=extra)
        pre.unlink()
        sym = {True: "symmetric", False: "asymmetric"}
        return {"api": "onnxruntime.quantization.quantize_static (QDQ)",
                "activations": f"{precision} per-tensor {sym[extra['ActivationSymmetric']]}",
                "weights": f"int8 {'per-channel' if per_channel else 'per-tensor'} {sym[extra['WeightSymmetric']]}",
                "calibration_method": METHODS[r.method], "extra_options": extra,
                "scheme": "S8S8" if precision == "int8" else "U8S8"}

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

    def load(self, artifact: Artifact, threads: int) -> Predict:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opt_path = artifact.path.with_suffix(".optimized.onnx")
        opts.optimized_model_filepath = str(opt_path)
        sess = ort.InferenceSession(str(artifact.path), opts, providers=["CPUExecutionProvider"])
        artifact.details["runtime_graph"] = _op_counts(opt_path)
        opt_path.unlink(missing_ok=True)
        name = sess.get_inputs()[0].name

        def predict(x):
            return sess.run(None, {name: x})[0]

        return predict


def _op_counts(path: Path) -> dict:
    """Op types in the graph ORT actually runs (after its fusions): shows inserted Casts, QLinear/Integer ops."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
