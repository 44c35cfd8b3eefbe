"""Intel Extension for PyTorch: ipex.optimize + TorchScript trace/freeze (fp32, bf16, fp16) and IPEX's own
static int8 (prepare/convert with the harness's calibration images). IPEX 2.8 needs torch 2.8, so this
backend runs in its own environment (see targets/*.toml [environments] and harness/envs.py)."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from harness.backends.base import Artifact, Backend, Session, Unsupported

CALIB_BATCH = 100


class IpexBackend(Backend):
    NAME = "ipex"
    TRACES = "ipex.optimize and torch.jit.trace"
    MODULE = "intel_extension_for_pytorch"
    PACKAGES = ("intel-extension-for-pytorch", "torch")
    EXTRA = "ipex"
    NOTE = ("IPEX 2.8 is the last release (development stopped in 2025; its x86 optimizations now live in PyTorch's "
            "Inductor, the torch-inductor column) and it is pinned to torch 2.8, in an environment of its own")
    IMPORTS = ("torch", "intel_extension_for_pytorch")
    UNSUPPORTED = {
        "uint8": "IPEX static quantization already uses uint8 activations with int8 weights "
                 "(default_static_qconfig_mapping, see the int8 cell); there is no other activation type",
    }

    def build(self, src, precision: str, workdir: Path) -> Artifact:
        import intel_extension_for_pytorch as ipex
        import torch

        torch.manual_seed(0)
        model = src.torch_model()
        example = torch.from_numpy(src.calib[:1])
        dtype = {"bf16": torch.bfloat16, "fp16": torch.half}.get(precision)
        details = {"format": "TorchScript (ipex.optimize + torch.jit.trace/freeze)"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if precision in ("int8", "dynamic"):
                model, more = self._quantize(model, src, example, precision)
                details.update(more)
            else:
                try:
                    model = ipex.optimize(model, dtype=dtype) if dtype else ipex.optimize(model)
                except (RuntimeError, AssertionError) as exc:  # e.g. bf16 prepacking needs AVX-512
                    raise Unsupported(f"ipex.optimize(dtype={dtype}) failed: {str(exc).splitlines()[0]}") from None
            with torch.no_grad(), _autocast(dtype):
                traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
                traced(example)
                traced(example)  # the first calls run the graph-fusion passes
        path = workdir / "model.pt"
        torch.jit.save(traced, str(path))
        details.update(autocast=str(dtype) if dtype else None, precision=precision)
        return Artifact(path, (path,), details)

    @staticmethod
    def _quantize(model, src, example, precision):
        import intel_extension_for_pytorch as ipex
        import torch
        from intel_extension_for_pytorch.quantization import convert, prepare

        if precision == "dynamic":
            prepared = prepare(model, ipex.quantization.default_dynamic_qconfig_mapping, example_inputs=example)
            return convert(prepared), {
                "api": "intel_extension_for_pytorch.quantization prepare/convert (default_dynamic_qconfig_mapping)",
                "note": "dynamic quantization covers Linear layers only; convolutions stay fp32"}
        from harness.backends.torch_qconfig import qconfig_mapping
        from harness.envinfo import reduce_range_for

        # IPEX's default static qconfig: HistogramObserver without reduce_range, per-channel symmetric weights. On a
        # CPU without VNNI its u8s8 kernels saturate at full range (resnet20, 500 images on an AVX2-only EPYC: 89.8%
        # against fp32's 91.0%), so there the 7-bit range is used, as torch.ao's x86 default and torch-inductor do.
        reduce_range, why = reduce_range_for(None, "IPEX's static qconfig", "its u8s8 kernels saturate at full range")
        mapping, recipe_details = qconfig_mapping(ipex.quantization.default_static_qconfig_mapping, src.recipe,
                                                  True if reduce_range else None, False, "ipex")
        if reduce_range:  # with VNNI IPEX's own default mapping is used untouched, so there is no choice to explain
            recipe_details["reduce_range_why"] = why
        prepared = prepare(model, mapping, example_inputs=example)
        with torch.no_grad():
            for batch in src.calib_batches(CALIB_BATCH):
                prepared(torch.from_numpy(batch))
        return convert(prepared), {
            "api": "intel_extension_for_pytorch.quantization prepare/convert (default_static_qconfig_mapping)",
            "activations": f"uint8 per-tensor affine (HistogramObserver, reduce_range={reduce_range})",
            "weights": "int8 per-channel symmetric",
            "calibration_method": "histogram (IPEX default static qconfig)", **recipe_details}

    def profile(self, artifact: Artifact, threads: int, batch: int, x: np.ndarray, workdir: Path):
        from harness.profiles import torchprof

        return torchprof.profile(self.load(artifact, threads, batch), x)

    def load(self, artifact: Artifact, threads: int, batch: int | None = None) -> Session:
        """torch.jit.load of the saved frozen module, as IPEX deploys it: a fresh graph executor whose fusion
        passes run on the first calls of this instance's own shape (the warm-up)."""
        import intel_extension_for_pytorch  # noqa: F401 - registers IPEX's ops before the graph is loaded
        import torch

        torch.set_num_threads(threads)
        module = torch.jit.load(str(artifact.path))
        dtype = {"bf16": torch.bfloat16, "fp16": torch.half}.get(artifact.details["precision"])
        return IpexSession(module, dtype)


class IpexSession(Session):
    """run(): the frozen TorchScript module under no_grad (and autocast for bf16/fp16); the output tensor."""

    def __init__(self, module, dtype):
        import torch

        self.module, self.dtype, self.torch = module, dtype, torch
        self.config = {"intra_op_threads": torch.get_num_threads(), "autocast": str(dtype) if dtype else None}

    def prepare(self, x):
        return self.torch.from_numpy(np.ascontiguousarray(x, np.float32))

    def run(self, inp):
        with self.torch.no_grad(), _autocast(self.dtype):
            return self.module(inp)

    def finish(self, out):
        return out.float().numpy()


def _autocast(dtype):
    import torch

    return torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
