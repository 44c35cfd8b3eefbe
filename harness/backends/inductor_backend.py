"""PyTorch (compiled): torch.export + torch.compile (Inductor, freezing) on the CPU, PyTorch's current
deployment path. int8 and dynamic go through torchao's PT2E flow with X86InductorQuantizer.

The artifact is the exported program (torch.export.save): quantized weights, no compiled code. Every process
that runs it compiles it for the one shape it runs (dynamic=False, fullgraph=True): load() does that, so a cell's
load_s per batch size is its compile time, apart from quantize_s. Inductor's on-disk cache lives in the cell's own
folder, so the first timed process compiles cold and no other cell's kernels are reused."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np

from harness.backends.base import Artifact, Backend, Session, Unsupported
from harness.backends.pt2e import export_graph, pad_to, quantized, refuse_unmappable
from harness.envinfo import reduce_range_for

XIQ = "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer"
DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
COMPILE = "torch.compile(backend=inductor, dynamic=False, fullgraph=True), freezing on, one compile per batch size"


class InductorBackend(Backend):
    NAME = "torch-inductor"
    TRACES = "torch.export"
    MODULE = "torchao"
    PACKAGES = ("torch", "torchao")
    EXTRA = "inductor"
    NOTE = "PyTorch's current deployment path: torch.export + torch.compile (Inductor, freezing), torchao PT2E int8"
    IMPORTS = ("torch", "torch._inductor.config", "torchao.quantization.pt2e.quantize_pt2e", XIQ)
    UNSUPPORTED = {
        "uint8": "X86InductorQuantizer's int8 already runs uint8 activations with int8 weights (U8S8, see the "
                 "int8 cell); it has no signed-activation config to compare",
    }
    OPTIONS = {"reduce_range": (bool, "7-bit activations; default: on when the CPU has no VNNI, where oneDNN's "
                                      "u8s8 multiply (VPMADDUBSW) saturates its int16 sums"),
               "freezing": (bool, "default on; off compiles without freezing, where Inductor keeps int8 as "
                                  "dequantize -> fp32 (to measure what freezing is worth, never for a column)")}

    def build(self, src, precision: str, workdir: Path) -> Artifact:
        import torch

        model = src.torch_model().eval()  # (a converted PT2E graph refuses .eval(): called here, before)
        details = {"format": "torch.export ExportedProgram (torch.export.save), compiled in each process",
                   "precision": precision, "compile": COMPILE,
                   "freezing": bool(src.recipe.options(self.NAME).get("freezing", True))}
        if not details["freezing"]:
            details["compile"] = COMPILE.replace("freezing on", "freezing OFF (recipe option)")
        dtype = getattr(torch, DTYPES[precision]) if precision in DTYPES else torch.float32
        if precision in DTYPES:
            model = model.to(dtype)
            details["compute"] = f"{dtype} weights and activations (cast, then compiled)"
        elif precision in ("int8", "dynamic"):
            model, more = self._quantize(model, src, precision == "dynamic")
            details.update(more)
        program = export_graph(model, src.calib, dtype)
        # the file also holds the graph as JSON (0.3 MB for resnet20), which does not shrink with the weights
        details["weights_bytes"] = sum(t.numel() * t.element_size() for t in
                                       [*program.state_dict.values(), *program.constants.values()]
                                       if isinstance(t, torch.Tensor))
        path = workdir / "model.pt2"
        torch.export.save(program, str(path))
        return Artifact(path, (path,), details, src=src)

    def _quantize(self, model, src, dynamic: bool):
        import importlib

        xiq = importlib.import_module(XIQ)
        refuse_unmappable(src.recipe, "X86InductorQuantizer")
        if src.recipe.activation_symmetric:
            raise Unsupported(f"recipe {src.recipe.name!r} sets activation_symmetric = true: X86InductorQuantizer "
                              "quantizes activations as uint8 affine only")
        reduce_range, why = reduce_range_for(src.recipe.options(self.NAME).get("reduce_range"),
                                             "X86InductorQuantizer", "without it oneDNN's u8s8 multiply saturates "
                                             "(resnet20 lost 1.6 points of top-1 on an AVX2-only EPYC)")
        config = xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic, reduce_range=reduce_range)
        method = "per-batch min/max at run time" if dynamic else "histogram (X86InductorQuantizer default)"
        if src.recipe.method == "minmax" and not dynamic:
            config, method = _minmax(config), "minmax"
        model = quantized(model, src, xiq.X86InductorQuantizer().set_global(config), dynamic)
        return model, {
            "api": "torchao PT2E: torch.export -> prepare_pt2e(X86InductorQuantizer) -> convert_pt2e"
                   + (" (is_dynamic=True)" if dynamic else ""),
            "activations": f"uint8 per-tensor affine, {'dynamic' if dynamic else 'static'}, "
                           f"reduce_range={reduce_range}",
            "reduce_range_why": why, "weights": "int8 per-channel symmetric (PerChannelMinMaxObserver)",
            "calibration_method": method,
            "note": ("Inductor has dynamic-activation int8 kernels for Linear only: the convolutions compute in "
                     "fp32 on dequantized values (see runtime_config.int8_kernels)") if dynamic else None}

    def profile(self, artifact: Artifact, threads: int, batch: int, x: np.ndarray, workdir: Path):
        """torch.profiler on a module compiled as load() compiles it, with Inductor's kernel profile on (its
        generated C++ kernels: fused quantize/dequantize/eltwise, else hidden in the graph call's self time)."""
        import torch._inductor.config as inductor_config

        from harness.profiles import torchprof

        inductor_config.cpp.enable_kernel_profile = True
        return torchprof.profile(self.load(artifact, threads, batch), x)

    def load(self, artifact: Artifact, threads: int, batch: int | None = None) -> Session:
        import importlib

        import torch

        # Per-cell cache: a compile is never served by another cell's (or another run's) kernels.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(artifact.path.parent / "inductor-cache")
        import torch._inductor.config as inductor_config

        importlib.import_module(XIQ)  # registers the int8 fusion passes; without it int8 compiles as dq -> fp32
        # the int8 (and fp32 weight-prepack) fusions run on frozen graphs only
        inductor_config.freezing = artifact.details.get("freezing", True)
        inductor_config.compile_threads = 1  # no compile-worker pool left spinning beside the timed loop
        torch.set_num_threads(threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.export.load(str(artifact.path)).module()
        shape = artifact.src.calib.shape[1:]
        return CompiledSession(module, DTYPES.get(artifact.details["precision"], "float32"), shape, batch)


def _minmax(config):
    """X86InductorQuantizer's config with MinMax activation observers (same dtype, range and eps)."""
    import dataclasses

    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantizer.utils import QuantizationConfig

    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return QuantizationConfig(act, act, config.weight, config.bias, False)


class CompiledSession(Session):
    """run(): the compiled module under no_grad on a tensor already in its dtype; the output tensor. load() with a
    batch compiles that shape before returning. The accuracy pass (batch None) compiles each new batch size it
    meets, except that a short last batch is tiled up to a size already compiled (pt2e.pad_to)."""

    def __init__(self, module, dtype: str, shape: tuple, batch: int | None):
        import torch

        self.torch, self.dtype, self.shape = torch, getattr(torch, dtype), shape
        self.compiled = torch.compile(module, dynamic=False, fullgraph=True)
        self.compile_s: dict[int, float] = {}
        self.int8_kernels: dict | None = None
        if batch:
            self._compile(batch)
        self.config = {"intra_op_threads": torch.get_num_threads(), "dynamic_shapes": False,
                       "freezing": bool(torch._inductor.config.freezing),
                       "compile_s": {str(k): v for k, v in self.compile_s.items()},
                       "int8_kernels": self.int8_kernels, "dtype": dtype}

    def _compile(self, n: int) -> None:
        before = _lowered_int8()  # the counters are the process's: this compile's share is the difference
        t0 = time.perf_counter()
        with self.torch.no_grad():
            self.compiled(self.torch.zeros((n, *self.shape), dtype=self.dtype))
        self.compile_s[n] = round(time.perf_counter() - t0, 3)
        if self.int8_kernels is None:
            self.int8_kernels = {k: v - before[k] for k, v in _lowered_int8().items()}

    def prepare(self, x):
        return self.torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.dtype)

    def run(self, inp):
        with self.torch.no_grad():
            return self.compiled(inp)

    def finish(self, out):
        return out.float().numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        bigger = [b for b in self.compile_s if b > n]
        if n not in self.compile_s and bigger:
            return super().__call__(pad_to(x, min(bigger)))[:n]
        if n not in self.compile_s:
            self._compile(n)
        return super().__call__(x)


def _lowered_int8() -> dict:
    """Inductor's pattern-matcher counts of int8 ops lowered to oneDNN kernels so far in this process (the first
    compile's share is recorded): zero for an int8 model means the quantized kernels were not selected (no
    freezing, or the fusion passes not registered)."""
    from torch._dynamo.utils import counters

    c = counters["inductor"]
    return {"qconv": c["qconv_unary_lower_count"] + c["qconv2d_binary_lower_count"],
            "qlinear": c["qlinear_unary_lower_count"] + c["qlinear_binary_lower_count"]}
