"""One explicit registry of backends. Backend modules import their framework lazily, inside methods,
so `harness list` works with any subset of frameworks installed."""

from harness.backends.base import Artifact, Backend, Probe, Unsupported
from harness.backends.ipex_backend import IpexBackend
from harness.backends.onnxruntime_backend import OnnxRuntimeBackend
from harness.backends.openvino_backend import OpenVinoBackend
from harness.backends.tensorrt_backend import TensorRtBackend
from harness.backends.tflite_backend import TfliteBackend
from harness.backends.torch_backend import TorchBackend

BACKENDS: dict[str, type[Backend]] = {
    "torch": TorchBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "openvino": OpenVinoBackend,
    "tflite": TfliteBackend,
    "ipex": IpexBackend,  # runs in its own environment (torch 2.8), see harness/envs.py
    "tensorrt": TensorRtBackend,  # NVIDIA GPUs only
}


def get_backend(name: str, device: str = "cpu", variant: str = "") -> Backend:
    return BACKENDS[name](device, variant)


__all__ = ["Artifact", "Backend", "BACKENDS", "Probe", "Unsupported", "get_backend"]
