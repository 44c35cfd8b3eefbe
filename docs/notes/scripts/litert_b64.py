"""Interleaved b64 timing of TFLite fp32 (Keras converter) and LiteRT fp32 (litert-torch) resnet20, one process,
same interpreter class, 2 threads: alternating rounds of N invokes each, medians per round."""
import sys, time, statistics as st
import numpy as np
from ai_edge_litert.interpreter import Interpreter
A = "/root/.cache/ptq-harness/artifacts/20261202-vnni-resnet20-59206cdd"
files = {"tflite": f"{A}/resnet20__tflite__fp32/model-fp32.tflite", "litert": f"{A}/resnet20__litert__fp32/model-fp32-b64.tflite"}
rng = np.random.default_rng(0)
its = {}
for k, f in files.items():
    it = Interpreter(model_path=f, num_threads=2)
    inp = it.get_input_details()[0]
    if inp["shape"][0] != 64:
        it.resize_tensor_input(inp["index"], [64, *inp["shape"][1:]], strict=True)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    data = rng.standard_normal(inp["shape"]).astype(np.float32)
    its[k] = (it, inp, data)
    print(k, inp["shape"], flush=True)
def call(k):
    it, inp, data = its[k]
    it.set_tensor(inp["index"], data); it.invoke()
for k in its:
    for _ in range(5): call(k)
rounds = {k: [] for k in its}
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 12):
    for k in (list(its) if r % 2 == 0 else list(its)[::-1]):
        ts = []
        for _ in range(15):
            t0 = time.perf_counter(); call(k); ts.append((time.perf_counter() - t0) * 1e3)
        rounds[k].append(st.median(ts))
for k, v in rounds.items():
    print(k, "round medians ms:", [round(a, 1) for a in v], "median", round(st.median(v), 2), "img/s", round(64e3 / st.median(v)))
print("ratio litert/tflite per round:", [round(a / b, 2) for a, b in zip(rounds["litert"], rounds["tflite"])])
