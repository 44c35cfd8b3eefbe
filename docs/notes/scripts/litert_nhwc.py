"""resnet20 fp32 at batch 64: litert-torch with NCHW input (the harness today) vs to_channel_last_io (NHWC input) vs
TFLite (Keras): op counts and interleaved timing in one process, 2 threads."""
import os, sys, time, statistics as st, warnings, collections
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
warnings.simplefilter("ignore")
from pathlib import Path
import numpy as np, torch, litert_torch
from ai_edge_litert.interpreter import Interpreter
sys.path.insert(0, "/work/main")
from tests.conftest import source_for
src = source_for("resnet20", Path("/work/shared/data"), 10)
m = src.torch_model().eval()
x = torch.randn(64, 3, 32, 32)
out = Path("/work/scratch")
(out / "nchw.tflite").write_bytes(bytes(litert_torch.convert(m, (x,)).model_content()))
nhwc = litert_torch.to_channel_last_io(m, args=[0]).eval()
(out / "nhwc.tflite").write_bytes(bytes(litert_torch.convert(nhwc, (x.permute(0, 2, 3, 1).contiguous(),)).model_content()))
A = "/root/.cache/ptq-harness/artifacts/20261202-vnni-resnet20-59206cdd/resnet20__tflite__fp32/model-fp32.tflite"
files = {"tflite": A, "litert-nchw": str(out / "nchw.tflite"), "litert-nhwc": str(out / "nhwc.tflite")}
its = {}
xn = x.numpy()
for k, f in files.items():
    it = Interpreter(model_path=f, num_threads=2)
    inp = it.get_input_details()[0]
    if inp["shape"][0] != 64:
        it.resize_tensor_input(inp["index"], [64, *inp["shape"][1:]], strict=True)
    it.allocate_tensors()
    inp, o = it.get_input_details()[0], it.get_output_details()[0]
    data = xn if inp["shape"][1] == 3 else np.ascontiguousarray(xn.transpose(0, 2, 3, 1))
    ops = collections.Counter(d["op_name"] for d in it._get_ops_details())
    its[k] = (it, inp, o, data)
    print(k, list(inp["shape"]), dict(ops), flush=True)
def call(k):
    it, inp, o, data = its[k]
    it.set_tensor(inp["index"], data); it.invoke(); return it.get_tensor(o["index"])
ref = call("litert-nchw")
print("max |nhwc - nchw| logits:", float(np.abs(call("litert-nhwc") - ref).max()))
for k in its:
    for _ in range(5): call(k)
rounds = {k: [] for k in its}
order = list(its)
for r in range(12):
    for k in (order[r % 3:] + order[:r % 3]):
        ts = []
        for _ in range(15):
            t0 = time.perf_counter(); call(k); ts.append((time.perf_counter() - t0) * 1e3)
        rounds[k].append(st.median(ts))
for k, v in rounds.items():
    print(f"{k}: median {st.median(v):.2f} ms ({64e3 / st.median(v):.0f} img/s), rounds", [round(a, 1) for a in v])
