"""LiteRT from PyTorch: litert-torch converts the very torch module every backend starts from (no Keras twin),
so it covers every zoo model; the LiteRT interpreter (XNNPACK delegate) runs it, as the tflite column does.

fp32: litert_torch.convert. fp16: the fp32 flatbuffer with float16 weights (ai-edge-quantizer FLOAT_CASTING,
weight-only, what TFLiteConverter's float16 mode does). int8: litert-torch's PT2EQuantizer (static, calibrated
on the harness's images, int8 I/O). dynamic: the same quantizer with is_dynamic=True (int8 weights, activations
quantized per inference).

A litert-torch model has a fixed batch size: its batch axis cannot be exported dynamic (the jax lowering of
flatten needs a concrete shape), and a non-strict resize of a batch-1 model ran but returned wrong logits
(max diff 9.3 on resnet20). So build() converts one file per batch size the run uses (1, every timed batch);
the batch-1 file is the artifact whose size is reported."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from harness.backends.base import Artifact, Backend, Session, Unsupported, refuse
from harness.backends.pt2e import pad_to, quantized, refuse_unmappable
from harness.backends.tflite_backend import LiteRtSession, strip_strings

QUANTIZER = "litert-torch's PT2EQuantizer"


class LitertBackend(Backend):
    NAME = "litert"
    TRACES = "torch.export"
    MODULE = "litert_torch"
    PACKAGES = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torchao", "torch")
    EXTRA = "litert"
    NOTE = ("litert-torch converts the PyTorch module itself (every zoo model), one file per batch size; the tflite "
            "column is TensorFlow's converter on Keras twins")
    IMPORTS = ("torch", "litert_torch", "ai_edge_quantizer.quantizer", "ai_edge_litert.interpreter")
    UNSUPPORTED = {
        "bf16": "LiteRT has no bfloat16 weight or compute mode for these ops (float16 weights only)",
        "uint8": "LiteRT's integer kernels take int8 activations (PT2EQuantizer has no uint8 config)",
    }
    OPTIONS = {"strip_strings": (bool, "drop tensor names from the flatbuffer as deployments do (default true)")}

    def build(self, src, precision: str, workdir: Path) -> Artifact:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        model, kw = src.torch_model().eval(), {}
        details = {"format": "TFLite flatbuffer (litert-torch convert from the PyTorch module)",
                   "input_layout": src.spec.preprocess.layout + " (the PyTorch module's own)", "precision": precision}
        if precision in ("int8", "dynamic"):
            model, kw, more = self._quantize(model, src, precision == "dynamic")
            details.update(more)
        files = {}
        for batch in sorted(set(src.timed_batches) | {1}):
            files[str(batch)] = self._convert(model, src, batch, precision, workdir, kw, details).name
        details["batch_files"] = files
        path = workdir / files["1"]
        return Artifact(path, (path,), details, src=src)

    def _convert(self, model, src, batch: int, precision: str, workdir: Path, kw: dict, details: dict) -> Path:
        import litert_torch
        import torch

        example = torch.from_numpy(pad_to(np.asarray(src.calib[:batch], np.float32), batch))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blob = bytes(litert_torch.convert(model, (example,), **kw).model_content())
        details["unstripped_size_bytes"] = len(blob)
        if src.recipe.options(self.NAME).get("strip_strings", True):
            # float16: names go before ai-edge-quantizer's pass, which needs unique tensor names and writes its
            # weights after the flatbuffer (a flatbuffer_utils round trip of its output lost them: unloadable)
            blob = strip_strings(blob, keep_unique=precision == "fp16")
            details["strings"] = ("stripped (flatbuffer_utils.strip_strings), as a deployed model ships"
                                  if precision != "fp16" else "tensor names shortened to t0..tN (ai-edge-quantizer "
                                  "needs unique names); other strings stripped")
        if precision == "fp16":
            blob = _float16_weights(blob, details)
        path = workdir / f"model-{precision}-b{batch}.tflite"
        path.write_bytes(blob)
        return path

    def _quantize(self, model, src, dynamic: bool):
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig

        recipe = src.recipe
        refuse_unmappable(recipe, QUANTIZER, ())
        refuse(recipe, {"method": (("minmax",), f"{QUANTIZER} calibrates activations with its HistogramObserver "
                                                "config; it has no min/max one"),
                        "activation_symmetric": ((True,), f"{QUANTIZER} quantizes activations int8 affine only")})
        per_channel = recipe.weight_granularity != "per_tensor"
        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel,
                                                                                 is_dynamic=dynamic))
        # fold_quantize=False: litert-torch lowers the q/dq pairs itself (its README's PT2E flow)
        model = quantized(model, src, quantizer, dynamic, fold_quantize=False)
        granularity = "per-channel" if per_channel else "per-tensor"
        return model, {"quant_config": QuantConfig(pt2e_quantizer=quantizer)}, {
            "api": f"torchao prepare_pt2e/convert_pt2e with {QUANTIZER}"
                   + (" (is_dynamic=True)" if dynamic else "") + ", lowered by litert_torch.convert",
            "weights": f"int8 {granularity} symmetric",
            "activations": "float, quantized per inference" if dynamic else "int8 per-tensor affine",
            "io": "float32" if dynamic else "int8 (quantized/dequantized at the edge)",
            "calibration_method": "per-inference min/max" if dynamic else "histogram (PT2EQuantizer default)"}

    def profile(self, artifact: Artifact, threads: int, batch: int, x: np.ndarray, workdir: Path):
        from harness.profiles import litert

        return litert.profile(self.load(artifact, threads, batch), x)

    def load(self, artifact: Artifact, threads: int, batch: int | None = None) -> Session:
        return PerBatchSession(artifact, threads, batch)


def _float16_weights(blob: bytes, details: dict) -> bytes:
    """Every supported op's weights cast to float16 with a DEQUANTIZE in front (weight-only), by ai-edge-quantizer,
    the library litert-torch's own recipes use; litert-torch's converter has no float16 option."""
    import tempfile

    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        fp32.write_bytes(blob)
        qt = quantizer.Quantizer(str(fp32))
        qt.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                  granularity=qtyping.QuantGranularity.TENSORWISE,
                                  algorithm_key=AlgorithmName.FLOAT_CASTING)
        out = bytes(qt.quantize().quantized_model)
    details.update(api="ai_edge_quantizer weight-only FLOAT_CASTING (16 bits) on the fp32 conversion",
                   weights="float16, dequantized to float32 before each op", activations="float32")
    return out


class PerBatchSession(LiteRtSession):
    """LiteRtSession over one converted file per batch size. A batch size without a file (the accuracy pass's
    short last batch, the parity test's chunks) runs in chunks of the nearest converted size, the last one
    tiled up (pt2e.pad_to); prepare() has already quantized int8 input, so tiling copies quantized images."""

    def __init__(self, artifact: Artifact, threads: int, batch: int | None):
        folder = artifact.path.parent
        self.files = {int(b): folder / name for b, name in artifact.details["batch_files"].items()}
        if batch is not None and batch not in self.files:
            raise Unsupported(f"no converted file for batch {batch} (converted: {sorted(self.files)})")
        super().__init__(artifact, threads, batch)
        self.config["converted_batches"] = sorted(self.files)

    def _interp(self, batch: int) -> tuple:
        if batch not in self.interpreters:
            it = self.Interpreter(model_path=str(self.files[batch]), num_threads=self.threads)
            it.allocate_tensors()
            self.interpreters[batch] = (it, it.get_input_details()[0], it.get_output_details()[0])
        return self.interpreters[batch]

    def run(self, x):
        n = len(x)
        if n in self.files:
            return super().run(x)
        size = min((b for b in self.files if b >= n), default=max(self.files))
        return np.concatenate([super(PerBatchSession, self).run(pad_to(x[i:i + size], size))[:min(size, n - i)]
                               for i in range(0, n, size)])
