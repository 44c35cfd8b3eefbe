"""PyTorch eager: fp32/fp16/bf16 casts, torch.ao FX static int8 (x86), dynamic (Linear only) on the CPU;
fp32/fp16/bf16 on CUDA (channels-last by default there, cuDNN autotuning on)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from harness.backends.base import Artifact, Backend, Session, Unsupported

CALIB_BATCH = 100
DEPRECATED = ("torch.ao.quantization is deprecated; its replacement is torchao's PT2E flow compiled by Inductor "
              "(the torch-inductor column)")


class TorchBackend(Backend):
    NAME = "torch"
    MODULE = "torch"
    PACKAGES = ("torch",)
    EXTRA = "torch"
    IMPORTS = ("torch", "torch.ao.quantization.quantize_fx")
    UNSUPPORTED = {
        "uint8": "torch.ao's x86 static quantization already runs uint8 activations with int8 weights "
                 "(U8S8, see the int8 cell); its x86 kernels have no signed-activation variant to compare",
    }
    OPTIONS = {"reduce_range": (bool, "7-bit activation range, torch's x86 default (true) avoids VPMADDUBSW "
                                      "saturation on CPUs without VNNI"),
               "channels_last": (bool, "NHWC memory format (default: true on CUDA, where tensor cores want it; "
                                       "false on the CPU)")}
    DEVICES = ("cpu", "cuda")
    NOTE = ("legacy: eager mode, and int8/dynamic through torch.ao.quantization (FX), deprecated since 2025 "
            "(torch 2.11 removed its pt2e parts); PyTorch's current path is the torch-inductor column (torch.compile "
            "+ torchao PT2E). Kept as the baseline the earlier tables used")
    _CPU_ONLY = ("torch.ao's quantized kernels (x86/fbgemm/onednn) run on the CPU only; torch has no CUDA "
                 "int8 convolution for eager/FX models (int8 on the GPU: the tensorrt column)")
    UNSUPPORTED_ON = {"cuda": {"int8": _CPU_ONLY, "uint8": _CPU_ONLY, "dynamic": _CPU_ONLY}}

    def build(self, src, precision: str, workdir: Path) -> Artifact:
        import torch

        if self.device == "cpu" and "channels_last" in src.recipe.options(self.NAME):
            raise Unsupported(f"recipe {src.recipe.name!r} sets [backends.torch] channels_last: the harness "
                              "applies it on CUDA only")
        model, details = self._module(src, precision, src.calib)
        if self.device == "cuda":
            details.update(self._cuda_details(src))
        path = workdir / "model.pt"
        torch.save(model.state_dict(), path)
        return Artifact(path, (path,), details, src=src)

    def _module(self, src, precision: str, calib):
        """The fp32 module turned into this precision; calibrated on `calib` (load passes one image: the
        state_dict it then loads replaces every observed scale, so only the module structure matters)."""
        import torch

        model = src.torch_model()
        details: dict = {"format": "torch.save(state_dict)", "precision": precision}
        if precision in ("fp16", "bf16"):
            dtype = torch.float16 if precision == "fp16" else torch.bfloat16
            model = model.to(dtype)
            self._check_kernels(model, calib, dtype)
            details["compute"] = f"{dtype} weights and activations (eager CPU kernels)"
        elif precision == "int8":
            model, more = self._static_int8(model, src, calib)
            details.update(more)
        elif precision == "dynamic":
            model, more = self._dynamic(model)
            details.update(more)
        return model, details

    def _cuda_details(self, src) -> dict:
        import torch

        return {"device": torch.cuda.get_device_name(0), "cudnn_benchmark": True,
                "channels_last": src.recipe.options(self.NAME).get("channels_last", True)}

    def _check_kernels(self, model, calib, dtype) -> None:
        import torch

        if self.device == "cuda":
            return  # CUDA has fp16 and bf16 kernels for every layer of these models
        try:
            with torch.inference_mode():
                model(torch.from_numpy(calib[:2]).to(dtype))
        except (RuntimeError, NotImplementedError) as exc:
            raise Unsupported(f"torch {dtype} CPU kernel missing: {str(exc).splitlines()[0]}") from None

    def _static_int8(self, model, src, calib):
        import torch
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        from harness.backends.torch_qconfig import qconfig_mapping

        torch.backends.quantized.engine = "x86"
        example = (torch.from_numpy(src.calib[:1]),)
        mapping, recipe_details = qconfig_mapping(get_default_qconfig_mapping("x86"), src.recipe,
                                                  src.recipe.options(self.NAME).get("reduce_range"), True, "torch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization warns it is deprecated in favour of torchao
            prepared = prepare_fx(model, mapping, example)
            with torch.inference_mode():
                for i in range(0, len(calib), CALIB_BATCH):
                    prepared(torch.from_numpy(calib[i:i + CALIB_BATCH]))
            quantized = convert_fx(prepared)
        return quantized, {
            "api": "torch.ao.quantization.quantize_fx prepare_fx/convert_fx (engine x86)",
            "activations": "uint8 per-tensor affine (HistogramObserver, reduce_range)",
            "weights": "int8 per-channel symmetric (PerChannelMinMaxObserver)",
            "calibration_method": "histogram (torch x86 default qconfig)",
            "deprecated": DEPRECATED, **recipe_details,
        }

    @staticmethod
    def _dynamic(model):
        import torch
        from torch import nn

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        n_linear = sum(isinstance(m, nn.Linear) for m in layers)
        return quantized, {
            "api": "torch.ao.quantization.quantize_dynamic({nn.Linear}, qint8)",
            "deprecated": DEPRECATED,
            "note": f"only Linear layers are quantized ({n_linear} of {len(layers)} conv/linear layers); "
                    "torch has no dynamic-quantized Conv2d, so the convolutions stay fp32",
        }

    def profile(self, artifact: Artifact, threads: int, batch: int, x: np.ndarray, workdir: Path):
        from harness.profiles import torchprof

        return torchprof.profile(self.load(artifact, threads, batch), x)

    def load(self, artifact: Artifact, threads: int, batch: int | None = None) -> Session:
        """A fresh module each call: the structure rebuilt (int8: prepared and converted on one image) and the
        artifact's state_dict loaded into it, so every scale and packed weight is the saved one."""
        import torch

        torch.set_num_threads(threads)
        src = artifact.src
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = self._module(src, artifact.details["precision"], src.calib[:1])
            model.load_state_dict(torch.load(artifact.path, map_location="cpu", weights_only=True))
        if self.device == "cuda":
            return CudaSession(model, artifact.details.get("channels_last", True))
        return TorchSession(model)


def _dtype_of(model):
    import torch

    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


class TorchSession(Session):
    """run(): the module's forward under inference_mode on a tensor already in its dtype; the output tensor."""

    def __init__(self, model):
        import torch

        self.model, self.dtype, self.torch = model, _dtype_of(model), torch
        self.config = {"intra_op_threads": torch.get_num_threads(), "quantized_engine":
                       torch.backends.quantized.engine, "mkldnn": torch.backends.mkldnn.is_available()}

    def prepare(self, x):
        return self.torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype)

    def run(self, inp):
        with self.torch.inference_mode():
            return self.model(inp)

    def finish(self, out):
        return out.float().numpy()


class CudaSession(Session):
    """run(): host tensor (already in the model's dtype and memory format) to the GPU, forward, result back to
    the host (.cpu() synchronizes). stages() splits batch-1 into h2d / compute / d2h."""

    def __init__(self, model, channels_last: bool):
        import torch

        torch.backends.cudnn.benchmark = True
        self.torch, self.dtype = torch, _dtype_of(model)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to("cuda", memory_format=self.fmt)
        self.config = {"device": torch.cuda.get_device_name(0), "cudnn_benchmark": True,
                       "channels_last": channels_last}

    def prepare(self, x):
        return self.torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype).contiguous(memory_format=self.fmt)

    def run(self, inp):
        with self.torch.inference_mode():
            return self.model(inp.to("cuda", non_blocking=False)).cpu()

    def finish(self, out):
        return out.float().numpy()

    def stages(self, x):
        torch = self.torch
        host = self.prepare(x).pin_memory()
        dev = torch.empty_like(host, device="cuda")
        out = {}

        def synced(fn):
            with torch.inference_mode():
                fn()
            torch.cuda.synchronize()

        def compute():
            out["y"] = self.model(dev)

        synced(compute)
        return {"h2d": lambda: synced(lambda: dev.copy_(host, non_blocking=True)),
                "compute": lambda: synced(compute), "d2h": lambda: synced(lambda: out["y"].cpu())}
