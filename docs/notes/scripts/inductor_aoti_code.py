"""Which oneDNN calls torch.compile (Python wrapper) and AOTInductor (C++ wrapper) generate for the harness's resnet20
PT2E int8 artifact. Usage: python inductor_aoti_code.py .../resnet20__torch-inductor__int8/model.pt2"""
import importlib, sys, os, tempfile, warnings, zipfile, re, collections, glob
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp()
from pathlib import Path
import torch, torch._inductor.config as cfg
warnings.simplefilter("ignore")
importlib.import_module("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
cfg.freezing = True
torch.set_num_threads(2)
ep = torch.export.load(sys.argv[1]); x = torch.randn(1, 3, 32, 32)
with torch.no_grad():
    c = torch.compile(ep.module(), dynamic=False, fullgraph=True); c(x)
    pkg = torch._inductor.aoti_compile_and_package(ep, package_path=f"{tempfile.mkdtemp()}/m.pt2")
py = [open(f).read() for f in glob.glob(os.environ["TORCHINDUCTOR_CACHE_DIR"] + "/**/*.py", recursive=True)]
py = [s for s in py if "def call(" in s]
print("compile wrapper files:", len(py))
print("compile onednn calls:", collections.Counter(re.findall(r"torch\.ops\.onednn\.(\w+)", "\n".join(py))))
z = zipfile.ZipFile(pkg); cpp = "\n".join(z.read(n).decode(errors="ignore") for n in z.namelist() if n.endswith(".wrapper.cpp") or n.endswith(".cpp"))
print("aoti files:", [n for n in z.namelist() if n.endswith(".cpp")])
print("aoti onednn calls:", collections.Counter(re.findall(r"aoti_torch_cpu_\w*?(qconv\w*|qlinear\w*)\(", cpp)))
