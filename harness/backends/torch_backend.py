"""PyTorch eager: fp32/fp16/bf16 casts, torch.ao FX static int8 (x86), dynamic (Linear only) on the CPU;
fp32/fp16/bf16 on CUDA (channels-last by default there, cuDNN autotuning on)."""

from __future__ import annotations

import warnings
from pathlib import Path

from harness.backends.base import Artifact, Backend, Predict, Unsupported

CALIB_BATCH = 100


class TorchBackend(Backend):
    NAME = "torch"
    MODULE = "torch"
    PACKAGES = ("torch",)
    EXTRA = "torch"
    UNSUPPORTED = {
        "uint8": "torch.ao's x86 static quantization already runs uint8 activations with int8 weights "
                 "(U8S8, see the int8 cell); its x86 kernels have no signed-activation variant to compare",
    }
    OPTIONS = {"reduce_range": (bool, "7-bit activation range, torch's x86 default (true) avoids VPMADDUBSW "
                                      "saturation on CPUs without VNNI"),
               "channels_last": (bool, "NHWC memory format (default: true on CUDA, where tensor cores want it; "
                                       "false on the CPU)")}
    DEVICES = ("cpu", "cuda")
    _CPU_ONLY = ("torch.ao's quantized kernels (x86/fbgemm/onednn) run on the CPU only; torch has no CUDA "
                 "int8 convolution for eager/FX models (int8 on the GPU: the tensorrt column)")
    UNSUPPORTED_ON = {"cuda": {"int8": _CPU_ONLY, "uint8": _CPU_ONLY, "dynamic": _CPU_ONLY}}

    def build(self, src, precision: str, workdir: Path) -> Artifact:
        import torch

        if self.device == "cpu" and "channels_last" in src.recipe.options(self.NAME):
            raise Unsupported(f"recipe {src.recipe.name!r} sets [backends.torch] channels_last: the harness "
                              "applies it on CUDA only")
        model = src.torch_model()
        details: dict = {"format": "torch.save(state_dict)"}
        if precision in ("fp16", "bf16"):
            dtype = torch.float16 if precision == "fp16" else torch.bfloat16
            model = model.to(dtype)
            self._check_kernels(model, src, dtype)
            details["compute"] = f"{dtype} weights and activations (eager CPU kernels)"
        elif precision == "int8":
            model, more = self._static_int8(model, src)
            details.update(more)
        elif precision == "dynamic":
            model, more = self._dynamic(model)
            details.update(more)
        if self.device == "cuda":
            model, more = self._to_cuda(model, src)
            details.update(more)
        path = workdir / "model.pt"
        torch.save(model.state_dict(), path)
        return Artifact(path, (path,), details, handle=model)

    def _to_cuda(self, model, src):
        import torch

        channels_last = src.recipe.options(self.NAME).get("channels_last", True)
        model = model.to("cuda", memory_format=torch.channels_last if channels_last else torch.preserve_format)
        return model, {"device": torch.cuda.get_device_name(0), "channels_last": channels_last,
                       "cudnn_benchmark": True}

    def _check_kernels(self, model, src, dtype) -> None:
        import torch

        if self.device == "cuda":
            return  # CUDA has fp16 and bf16 kernels for every layer of these models
        try:
            with torch.inference_mode():
                model(torch.from_numpy(src.calib[:2]).to(dtype))
        except (RuntimeError, NotImplementedError) as exc:
            raise Unsupported(f"torch {dtype} CPU kernel missing: {str(exc).splitlines()[0]}") from None

    def _static_int8(self, model, src):
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
                for batch in src.calib_batches(CALIB_BATCH):
                    prepared(torch.from_numpy(batch))
            quantized = convert_fx(prepared)
        return quantized, {
            "api": "torch.ao.quantization.quantize_fx prepare_fx/convert_fx (engine x86)",
            "activations": "uint8 per-tensor affine (HistogramObserver, reduce_range)",
            "weights": "int8 per-channel symmetric (PerChannelMinMaxObserver)",
            "calibration_method": "histogram (torch x86 default qconfig)",
            **recipe_details,
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
            "note": f"only Linear layers are quantized ({n_linear} of {len(layers)} conv/linear layers); "
                    "torch has no dynamic-quantized Conv2d, so the convolutions stay fp32",
        }

    def load(self, artifact: Artifact, threads: int) -> Predict:
        import torch

        torch.set_num_threads(threads)
        model = artifact.handle
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        if self.device == "cuda":
            return _cuda_predict(model, dtype, artifact.details.get("channels_last", True))

        def predict(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x).to(dtype)).float().numpy()

        return predict


def _cuda_predict(model, dtype, channels_last: bool) -> Predict:
    """End-to-end predict (host array in, host array out) plus its h2d / compute / d2h stages."""
    import torch

    torch.backends.cudnn.benchmark = True
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def predict(x):
        with torch.inference_mode():
            dev = torch.from_numpy(x).to("cuda", dtype).contiguous(memory_format=fmt)
            return model(dev).float().cpu().numpy()

    def stages(x):
        host = torch.from_numpy(x).to(dtype).contiguous(memory_format=fmt).pin_memory()
        dev = torch.empty_like(host, device="cuda")
        out = {}

        def run(fn):
            with torch.inference_mode():
                fn()
            torch.cuda.synchronize()

        def compute():
            out["y"] = model(dev)

        run(compute)
        return {"h2d": lambda: run(lambda: dev.copy_(host, non_blocking=True)), "compute": lambda: run(compute),
                "d2h": lambda: run(lambda: out["y"].cpu())}

    predict.stages = stages
    return predict
