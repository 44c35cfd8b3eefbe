"""TensorFlow Lite: TFLiteConverter from a Keras twin with the same weights, run by the LiteRT interpreter.

fp32, fp16 (float16 weights), dynamic (dynamic-range int8 weights), int8 (full integer, int8 I/O,
calibrated on the harness's calibration images through representative_dataset). NCHW models get their
input transposed to NHWC at the edge; nothing else about the data changes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from harness.backends.base import Artifact, Backend, Session, refuse

NHWC = (0, 2, 3, 1)


class TfliteBackend(Backend):
    NAME = "tflite"
    MODULE = "tensorflow"
    PACKAGES = ("tensorflow-cpu", "tensorflow", "ai-edge-litert", "keras")
    EXTRA = "tflite"
    NOTE = ("TensorFlow's own TFLiteConverter on Keras models carrying the same weights (MLPerf's original Keras "
            "resnet8, hand-written twins of resnet20-56); the litert column converts the PyTorch module instead")
    IMPORTS = ("torch", "tensorflow", "ai_edge_litert.interpreter")  # torch: the twin's weights come from it
    UNSUPPORTED = {
        "bf16": "the TFLite converter has no bfloat16 weight/compute mode (float16 weights only)",
        "uint8": "full-integer TFLite quantization uses int8 activations (the uint8 scheme is legacy TF1 "
                 "quantization-aware training only)",
    }
    OPTIONS = {"strip_strings": (bool, "drop tensor names from the flatbuffer as deployments do (default true)")}

    def model_reason(self, spec) -> str | None:
        if spec.builder == "resnet8" or spec.builder.startswith("resnet_cifar:"):
            return None
        return (f"no Keras twin of {spec.name}: TFLite converts from a Keras model carrying the same weights, "
                "written here for resnet8 and resnet20/32/44/56 only (any model: the litert column converts from "
                "PyTorch)")

    def probe(self):
        probe = super().probe()
        if probe.installed and importlib_missing("ai_edge_litert"):
            from harness.backends.base import Probe

            return Probe(False, None, "ai-edge-litert not installed (pip install 'ptq-harness[tflite]')")
        return probe

    def build(self, src, precision: str, workdir: Path) -> Artifact:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        from harness.models.keras_twins import keras_twin

        nchw = src.spec.preprocess.layout == "NCHW"
        model = keras_twin(src.spec, src.weights)
        # from_keras_model, not from_concrete_functions: the latter left Keras 3 variables unfrozen (NaN out).
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        details = {"format": "TFLite flatbuffer (TFLiteConverter from a Keras twin)", "input_layout": "NHWC",
                   "layout_change": "NCHW->NHWC at the edge" if nchw else None}
        if precision != "fp32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "int8":
            self._apply_recipe(converter, src.recipe, details)
            calib = src.calib.transpose(NHWC) if nchw else src.calib

            def representative():
                for i in range(len(calib)):
                    yield [np.ascontiguousarray(calib[i:i + 1])]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
            details.update({"api": "TFLiteConverter full-integer (representative_dataset)",
                            "activations": "int8 per-tensor asymmetric", "io": "int8 (quantized/dequantized at "
                            "the edge)", "calibration_method": "MinMax"})
        elif precision == "dynamic":
            details.update({"api": "TFLiteConverter Optimize.DEFAULT (dynamic range)",
                            "weights": "int8", "activations": "float, quantized on the fly per op"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blob = converter.convert()
        path = workdir / f"model-{precision}.tflite"
        details["unstripped_size_bytes"] = len(blob)
        if src.recipe.options(self.NAME).get("strip_strings", True):
            blob = strip_strings(blob)
            details["strings"] = "stripped (flatbuffer_utils.strip_strings), as a deployed model ships"
        path.write_bytes(blob)
        details["nchw_input"] = nchw
        return Artifact(path, (path,), details)

    @staticmethod
    def _apply_recipe(converter, recipe, details: dict) -> None:
        """The TFLite int8 spec fixes symmetric weights and asymmetric activations; min/max is its only
        calibrator. Per-tensor weights exist behind the converter's experimental switch."""
        refuse(recipe, {"method": (("entropy", "percentile", "histogram"), "the TFLite converter calibrates "
                                                                          "with min/max only"),
                        "weight_symmetric": ((False,), "TFLite's int8 spec requires symmetric weights"),
                        "activation_symmetric": ((True,), "TFLite's int8 spec uses asymmetric activations")})
        per_tensor = recipe.weight_granularity == "per_tensor"
        if per_tensor:
            converter._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only switch
        details["weights"] = f"int8 {'per-tensor' if per_tensor else 'per-channel'} symmetric"

    def published(self, path: Path, spec, workdir: Path) -> Artifact:
        import shutil

        out = workdir / path.name
        shutil.copyfile(path, out)
        return Artifact(out, (out,), {"format": "TFLite flatbuffer, published with the model (not converted here)",
                                      "source": str(path), "nchw_input": spec.preprocess.layout == "NCHW"})

    def profile(self, artifact: Artifact, threads: int, batch: int, x: np.ndarray, workdir: Path):
        from harness.profiles import litert

        return litert.profile(self.load(artifact, threads, batch), x)

    def load(self, artifact: Artifact, threads: int, batch: int | None = None) -> Session:
        return LiteRtSession(artifact, threads, batch)


def strip_strings(blob: bytes, keep_unique: bool = False) -> bytes:
    """Drop tensor/subgraph debug names, as TFLite Micro deployments do. Applied to every precision alike (and by
    the litert column), so size ratios compare like with like; the interpreter addresses tensors by index, so
    outputs are unchanged. LiteRT's copy of flatbuffer_utils (byte-identical output to TensorFlow's on MLPerf's
    files), so the litert column needs no TensorFlow. keep_unique: tensors get short unique names instead."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
    flatbuffer_utils.strip_strings(model)
    if keep_unique:
        for g, subgraph in enumerate(model.subgraphs):
            for i, tensor in enumerate(subgraph.tensors):
                tensor.name = f"t{g}_{i}".encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


class LiteRtSession(Session):
    """One LiteRT interpreter resized to the timed batch (the accuracy pass keeps one per batch size it meets).
    prepare(): NCHW -> NHWC and int8 input quantization; run(): set_tensor + invoke + get_tensor, indices
    looked up once; finish(): int8 output dequantization."""

    def __init__(self, artifact: Artifact, threads: int, batch: int | None):
        from ai_edge_litert.interpreter import Interpreter

        self.path, self.threads, self.Interpreter = str(artifact.path), threads, Interpreter
        self.nchw = artifact.details.get("nchw_input", False)
        self.interpreters: dict[int, tuple] = {}
        self.fixed_batch = None  # an artifact whose batch cannot be resized (a published file): loop over images
        self.batch = batch
        it, inp, out = self._interp(batch or 1)
        self.config = {"num_threads": threads, "input_shape": [int(d) for d in inp["shape"]],
                       "input_dtype": np.dtype(inp["dtype"]).name, "output_dtype": np.dtype(out["dtype"]).name,
                       "fixed_batch": self.fixed_batch}
        self.inp_q, self.out_q = inp, out

    def _interp(self, batch: int) -> tuple:
        batch = self.fixed_batch or batch
        if batch in self.interpreters:
            return self.interpreters[batch]
        it = self.Interpreter(model_path=self.path, num_threads=self.threads)
        inp = it.get_input_details()[0]
        if inp["shape"][0] != batch:
            try:
                it.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]], strict=True)
            except (ValueError, RuntimeError):
                self.fixed_batch = int(inp["shape"][0])
                return self._interp(self.fixed_batch)
        it.allocate_tensors()
        self.interpreters[batch] = (it, it.get_input_details()[0], it.get_output_details()[0])
        return self.interpreters[batch]

    def prepare(self, x):
        if self.nchw:
            x = x.transpose(NHWC)
        x = np.ascontiguousarray(x, np.float32)
        inp = self.inp_q
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        return x

    def run(self, x):
        if self.fixed_batch is not None and len(x) != self.fixed_batch:
            return np.concatenate([self.run(x[i:i + 1]) for i in range(len(x))])
        it, inp, out = self._interp(len(x))
        it.set_tensor(inp["index"], x)
        it.invoke()
        return it.get_tensor(out["index"])

    def finish(self, y):
        out = self.out_q
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, np.float32)
