"""One explicit registry of backends. Backend modules import their framework lazily, inside methods,
so `harness list` works with any subset of frameworks installed."""

from harness.backends.base import Artifact, Backend, Probe, Unsupported
from harness.backends.inductor_backend import InductorBackend
from harness.backends.ipex_backend import IpexBackend
from harness.backends.litert_backend import LitertBackend
from harness.backends.onnxruntime_backend import OnnxRuntimeBackend
from harness.backends.openvino_backend import OpenVinoBackend
from harness.backends.tensorrt_backend import TensorRtBackend
from harness.backends.tflite_backend import TfliteBackend
from harness.backends.torch_backend import TorchBackend

BACKENDS: dict[str, type[Backend]] = {
    "torch": TorchBackend,  # eager + torch.ao FX int8: deprecated upstream, kept as the legacy baseline
    "torch-inductor": InductorBackend,  # torch.export + torch.compile, torchao PT2E int8: PyTorch's current path
    "onnxruntime": OnnxRuntimeBackend,
    "openvino": OpenVinoBackend,
    "tflite": TfliteBackend,  # TensorFlow's converter, from Keras twins (resnet8..56)
    "litert": LitertBackend,  # LiteRT's converter from the PyTorch module (every zoo model)
    "ipex": IpexBackend,  # runs in its own environment (torch 2.8), see harness/envs.py
    "tensorrt": TensorRtBackend,  # NVIDIA GPUs only
}


def get_backend(name: str, device: str = "cpu", variant: str = "") -> Backend:
    return BACKENDS[name](device, variant)


__all__ = ["Artifact", "Backend", "BACKENDS", "Probe", "Unsupported", "get_backend"]
