"""OpenVINO (CPU plugin) from the shared ONNX export: fp32, f16/bf16 via the precision hint, NNCF int8."""

from __future__ import annotations

from pathlib import Path

from harness.backends.base import Artifact, Backend, Predict, Unsupported

HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
COMPUTE_OPS = ("Convolution", "FullyConnected", "MatMul", "GroupConvolution")


class OpenVinoBackend(Backend):
    NAME = "openvino"
    MODULE = "openvino"
    PACKAGES = ("openvino", "nncf")
    EXTRA = "openvino"
    UNSUPPORTED = {
        "uint8": "NNCF picks the activation type per layer itself (u8 after ReLU, i8 elsewhere); "
                 "there is no separate uint8-activation mode, see the int8 cell",
        "dynamic": "OpenVINO's CPU dynamic quantization applies to compressed-weight MatMuls (LLMs), "
                   "not to convolutions; there is no dynamic-range mode for a CNN",
    }

    def supports(self, precision: str, device: str) -> str | None:
        reason = super().supports(precision, device)
        if reason or precision not in ("fp16", "bf16"):
            return reason
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision.upper() not in caps:
            return (f"this CPU's OpenVINO plugin lacks {precision.upper()} "
                    f"(OPTIMIZATION_CAPABILITIES = {', '.join(caps)})")
        return None

    def build(self, src, precision: str, workdir: Path) -> Artifact:
        """OpenVINO reads ONNX directly, so its artifact is ONNX like onnxruntime's: fp32/f16/bf16 are runtime
        hints on the shared fp32 export; int8 is NNCF's QDQ model with int8 weights. The equivalent IR
        (.xml/.bin) is saved beside it and its size recorded, since IR is OpenVINO's native format."""
        import shutil

        out = workdir / f"model-{precision}.onnx"
        details = {"format": "ONNX read by OpenVINO's ONNX frontend", "inference_precision_hint": HINTS[precision]}
        if precision == "int8":
            import onnx

            onnx.save(self._quantize(onnx.load(str(src.onnx_path())), src), str(out))
            details.update({"api": "nncf.quantize on the ONNX model (preset PERFORMANCE, fast bias correction)",
                            "calibration_method": "MinMax", "activations": "int8/uint8 per-tensor (NNCF "
                            "chooses per layer)", "weights": "int8 per-channel symmetric"})
        else:
            shutil.copyfile(src.onnx_path(), out)
        details["ir_size_bytes"] = save_ir(out, workdir / "ir" / "model.xml", precision == "fp16")
        return Artifact(out, (out,), details)

    @staticmethod
    def _quantize(model, src):
        import nncf

        items = [{"x": src.calib[i:i + 1]} for i in range(len(src.calib))]
        return nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))

    def load(self, artifact: Artifact, threads: int) -> Predict:
        import openvino as ov

        hint = artifact.details["inference_precision_hint"]
        compiled = ov.Core().compile_model(str(artifact.path), "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
        ran = runtime_precisions(compiled)
        artifact.details["runtime_precisions"] = ran
        if hint in ("f16", "bf16") and not any(k.endswith(f":{hint}") for k in ran):
            raise Unsupported(f"OpenVINO accepted the {hint} hint but ran every compute op in another "
                              f"precision ({ran}): this CPU has no {hint} kernels")
        request = compiled.create_infer_request()

        def predict(x):
            request.infer({0: x})
            return request.get_output_tensor(0).data.copy()

        return predict


def save_ir(onnx_path: Path, xml: Path, fp16_weights: bool) -> int:
    """The same model as OpenVINO IR; returns its size (.xml + .bin) for the record."""
    import openvino as ov

    ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml), compress_to_fp16=fp16_weights)
    return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def runtime_precisions(compiled) -> dict[str, int]:
    """How many compute ops actually run in each precision (read back from the compiled model)."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if kind in COMPUTE_OPS:
            key = f"{kind}:{info['runtimePrecision'].astype(str)}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
