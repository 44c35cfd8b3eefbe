"""torch-inductor at batch 1: what a call through torch.compile costs beyond its kernels. The harness's artifacts
(resnet20 fp32 and PT2E int8, torch.export.save) compiled three ways in one process, 2 threads, timed interleaved:
  compile  - torch.compile(dynamic=False, fullgraph=True), freezing on: what the harness's cell runs;
  aoti     - AOTInductor (aoti_compile_and_package, freezing on), loaded with aoti_load_package: no Dynamo guards;
  eager    - the exported module uncompiled (fp32 only: PT2E int8 eager is q/dq in fp32, not a deployment path).
Usage: python inductor_b1_overhead.py ARTIFACTS_DIR [BATCH] (a run's artifacts folder with
resnet20__torch-inductor__*; BATCH defaults to 1)."""
import importlib
import statistics as st
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch._inductor.config as cfg

warnings.simplefilter("ignore")
importlib.import_module("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")  # int8 fusion passes
cfg.freezing = True
torch.set_num_threads(2)
root = Path(sys.argv[1])
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
x = torch.randn(batch, 3, 32, 32)
ways = {}
for prec in ("fp32", "int8"):
    ep = torch.export.load(str(root / f"resnet20__torch-inductor__{prec}" / "model.pt2"))
    with torch.no_grad():
        c = torch.compile(ep.module(), dynamic=False, fullgraph=True)
        c(x)
        ways[f"{prec} compile"] = c
        pkg = torch._inductor.aoti_compile_and_package(ep, package_path=f"{tempfile.mkdtemp()}/m.pt2")
        a = torch._inductor.aoti_load_package(pkg)
        a(x)
        ways[f"{prec} aoti"] = a
        if prec == "fp32":
            ways["fp32 eager"] = ep.module()
    ref = ways[f"{prec} compile"](x)
    print(prec, "max |compile - aoti| =", float((ref - ways[f"{prec} aoti"](x)).abs().max()))
samples = {k: [] for k in ways}
calls = max(10, 200 // batch)
with torch.no_grad():
    for _ in range(7):  # rounds, each way in turn, so a slow phase of the host touches all of them
        for k, f in ways.items():
            for _ in range(20):
                f(x)
            t0 = time.perf_counter()
            for _ in range(calls):
                f(x)
            samples[k].append((time.perf_counter() - t0) / calls * 1e6)
print(f"{'way':14s} {'median us/call':>15s} {'min':>8s} {'max':>8s}")
for k, v in samples.items():
    print(f"{k:14s} {st.median(v):15.1f} {min(v):8.1f} {max(v):8.1f}")
