"""Each runtime's own benchmark tool, run on a cell's artifact at batch 1 and the run's thread count, one short
block at a time (harness/crosscheck.py interleaves the blocks with the harness's own timing loop).

A tool is a small class: NAME, MEANS (its statistic and timed region, as read in its source; see
docs/notes/issue13-vendor-tools.md), version(), command() and block(seconds) -> {value_ms, statistic, n, chunk}.
statistic is "median" or "mean" and chunk how many calls each of its samples averages (1: per-call samples),
so the harness's samples are put into the same statistic before the two are divided."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class NoTool(Exception):
    """This runtime has no vendor benchmark here; the message says why (recorded in the cell)."""


class VendorTool:
    NAME = ""
    PACKAGE = ""
    MEANS = ""
    STATISTIC = "median"  # or "mean": what its figure is, so the harness's samples are reduced the same way

    def __init__(self, job: dict, artifact, session, inp, x1: np.ndarray):
        self.job, self.artifact, self.session, self.inp, self.x1 = job, artifact, session, inp, x1
        self.threads = job["threads"]
        self.tmp = Path(tempfile.mkdtemp(prefix="ptq-xcheck-"))

    def version(self) -> str:
        return importlib.metadata.version(self.PACKAGE)

    def command(self) -> str:
        return self.NAME

    def block(self, seconds: float, call_s: float) -> dict:  # pragma: no cover - protocol
        raise NotImplementedError

    def runtime_block(self, seconds: float) -> dict | None:
        """Where the runtime reports its own per-call time: its median over the harness's own calls, and the
        median of each call's wall-clock time minus it (the Python side). None: it reports none."""
        return None

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def runs(seconds: float, call_s: float) -> int:
    """Calls that fill a block at the speed the harness's warm-up saw (at least 50)."""
    return max(50, int(seconds / max(call_s, 1e-6)))


def _run(argv: list[str], what: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-1:]
        raise RuntimeError(f"{what} exited {proc.returncode}: {tail[0] if tail else 'no output'}")
    return proc.stdout


class BenchmarkApp(VendorTool):
    """OpenVINO's benchmark_app, sync API, the harness's compile config (LATENCY hint, threads, precision hint)
    through -load_config, since -hint latency refuses -nthreads."""

    NAME, PACKAGE = "benchmark_app", "openvino"
    MEANS = ("median (nearest rank) of InferRequest.latency: the C++ infer() alone, input filled once, no "
             "Python dispatch and no output copy")
    MAIN = "import sys; from openvino.tools.benchmark.main import main; sys.argv[0] = 'benchmark_app'; main()"

    def __init__(self, *args):
        super().__init__(*args)
        self.config_file = self.tmp / "config.json"  # written once: every block reads the same file
        hint = self.artifact.details["inference_precision_hint"]
        self.config_file.write_text(json.dumps({"CPU": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint,
                                                   "INFERENCE_NUM_THREADS": str(self.threads)}}))

    def args(self, n: int) -> list[str]:
        shape = "[" + ",".join(map(str, self.x1.shape)) + "]"
        # -ip f32: its default turns a 3-channel 4-D input into u8 with a conversion step (0-6% slower here)
        return ["-m", str(self.artifact.path), "-d", "CPU", "-api", "sync", "-load_config", str(self.config_file),
                "-shape", shape, "-ip", "f32", "-niter", str(n), "-report_type", "no_counters",
                "-report_folder", str(self.tmp)]

    def command(self) -> str:
        return "benchmark_app " + " ".join(self.args(1000)).replace("-niter 1000", "-niter N")

    def block(self, seconds: float, call_s: float) -> dict:
        # -niter, not -t: its -t takes whole seconds only; N calls of the harness's warm-up speed fill the block
        out = _run([sys.executable, "-c", self.MAIN, *self.args(runs(seconds, call_s))], "benchmark_app")
        return {**parse_benchmark_app(out), "statistic": self.STATISTIC, "chunk": 1}

    def runtime_block(self, seconds: float) -> dict:
        """InferRequest.latency (C++ infer() only) of the harness's own calls, each beside its wall-clock time."""
        run, inp, request = self.session.run, self.inp, self.session.request
        wall, lat, end = [], [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            run(inp)
            wall.append((time.perf_counter() - t0) * 1e3)
            lat.append(request.latency)
        return {"runtime_ms": float(np.median(lat)),
                "python_side_ms": float(np.median(np.subtract(wall, lat)))}


def parse_benchmark_app(text: str) -> dict:
    """Median and iteration count from benchmark_app's console; it prints us when the mean is below 1 ms."""
    med = re.search(r"Median:\s+([\d.]+)\s+(ms|us)", text)
    count = re.search(r"Count:\s+(\d+) iterations", text)
    if not med or not count:
        raise RuntimeError("benchmark_app printed no Median/Count lines")
    value = float(med.group(1)) / (1000.0 if med.group(2) == "us" else 1.0)
    return {"value_ms": value, "n": int(count.group(1)), "config": _model_properties(text)}


def _model_properties(text: str) -> dict:
    """The compiled model's properties benchmark_app prints under '[ INFO ] Model:', for comparing configs."""
    props: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if line.rstrip().endswith("] Model:"):
            for prop in lines:
                m = re.match(r"\[ INFO \]\s{3,}(\w+): (.*)$", prop)
                if not m:
                    break
                props[m.group(1)] = m.group(2).strip()
            break
    return {k: props[k] for k in ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "ENABLE_CPU_PINNING", "PERFORMANCE_HINT",
                                  "INFERENCE_PRECISION_HINT", "SCHEDULING_CORE_TYPE", "ENABLE_HYPER_THREADING")
            if k in props}


class LiteRtBenchmark(VendorTool):
    """ai-edge-litert's litert-benchmark (the CompiledModel API on its CPU accelerator)."""

    NAME, PACKAGE = "litert-benchmark", "ai-edge-litert"
    MEANS = ("median of per-call perf_counter times around CompiledModel.run_by_name on buffers filled once: "
             "no input or output copy")
    # The tool's own loop and statistics, run through its run_benchmark(); only its 2-decimal rounding of ms is
    # lifted (a 10 us step is 11% of a 90 us model's latency).
    MAIN = ("import json, sys; import ai_edge_litert.tools.benchmark_litert_model as b; "
            "b.round = lambda v, n=None: v; sys.argv[0] = 'litert-benchmark'; "
            "print('PTQ-XCHECK ' + json.dumps(b.run_benchmark(b.parse_args())['latency']))")

    def args(self, n: int) -> list[str]:
        return ["--model", str(self.artifact.path), "--num_threads", str(self.threads), "--num_runs", str(n),
                "--warmup_runs", str(n)]

    def command(self) -> str:
        return "litert-benchmark " + " ".join(self.args(1000))

    def block(self, seconds: float, call_s: float) -> dict:
        # a run count, not a duration: the tool has no -t
        out = _run([sys.executable, "-c", self.MAIN, *self.args(runs(seconds, call_s))], "litert-benchmark")
        line = next((ln for ln in out.splitlines() if ln.startswith("PTQ-XCHECK ")), None)
        if line is None:
            raise RuntimeError("litert-benchmark printed no results")
        lat = json.loads(line.split(" ", 1)[1])
        return {"value_ms": float(lat["median_ms"]), "statistic": self.STATISTIC, "n": int(lat["num_runs"]), "chunk": 1}


class OrtTest(VendorTool):
    """onnxruntime's onnxruntime_test (onnxruntime.tools): the pip wheel ships no onnxruntime_perf_test
    (microsoft/onnxruntime#17332). It has no thread option (ORT's default: one per physical core) and times
    one loop of N runs, first call included, on random inputs with symbolic dims set to 1."""

    NAME, PACKAGE, STATISTIC = "onnxruntime_test", "onnxruntime", "mean"
    MEANS = ("mean over one loop of InferenceSession.run calls (Python binding included, first call included, "
             "outputs fetched), default session options; compared with the harness's mean")

    def __init__(self, *args):
        super().__init__(*args)
        cores = _physical_cores()
        if cores != self.threads:  # ORT's default intra-op pool would not be the run's thread count
            raise NoTool(f"onnxruntime_test has no thread option: ORT's default is {cores} threads (physical "
                         f"cores), the run used {self.threads}")

    def command(self) -> str:
        return f"onnxruntime_test {self.artifact.path} N"

    def block(self, seconds: float, call_s: float) -> dict:
        n = runs(seconds, call_s)
        out = _run([sys.executable, "-m", "onnxruntime.tools.onnxruntime_test", str(self.artifact.path), str(n)],
                   "onnxruntime_test")
        avg = re.search(r"avg latency: ([\d.eE+-]+) ms", out)
        if not avg:
            raise RuntimeError("onnxruntime_test printed no 'avg latency' line")
        return {"value_ms": float(avg.group(1)), "statistic": self.STATISTIC, "n": n, "chunk": 1}


def _physical_cores() -> int:
    """Physical cores this process may use (ORT's default intra-op thread count)."""
    import os

    import psutil

    usable = len(os.sched_getaffinity(0))
    return min(usable, psutil.cpu_count(logical=False) or usable)


def _loop(call, seconds: float) -> int:
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        call()
        n += 1
    return n


class TorchTimer(VendorTool):
    """torch.utils.benchmark.Timer.blocked_autorange on the harness's own instance and input."""

    NAME, PACKAGE = "torch.utils.benchmark.Timer.blocked_autorange", "torch"
    MEANS = ("median of block means (number_per_run back-to-back calls per block); the harness's samples are "
             "put into the same blocks before comparing")

    def command(self) -> str:
        return (f"Timer('run(inp)', num_threads={self.threads}).blocked_autorange(min_run_time=S)")

    def block(self, seconds: float, call_s: float) -> dict:
        from torch.utils.benchmark import Timer

        m = Timer("run(inp)", globals={"run": self.session.run, "inp": self.inp},
                  num_threads=self.threads).blocked_autorange(min_run_time=seconds)
        return {"value_ms": float(m.median) * 1e3, "statistic": "median",
                "n": len(m.raw_times) * m.number_per_run, "chunk": int(m.number_per_run)}


class Trtexec(VendorTool):
    """TensorRT's trtexec on the cell's serialized engine (GPU targets; needs the trtexec binary)."""

    NAME, PACKAGE = "trtexec", "tensorrt"
    MEANS = "median host latency (H2D + GPU compute + D2H), trtexec's 'Latency: ... median' line"

    def __init__(self, *args):
        super().__init__(*args)
        self.exe = shutil.which("trtexec")
        if self.exe is None:
            raise NoTool("trtexec not found on PATH (it ships with TensorRT's tar/deb packages, not the pip wheel)")

    def command(self) -> str:
        return f"trtexec --loadEngine={self.artifact.path} --duration=S --useSpinWait"

    def block(self, seconds: float, call_s: float) -> dict:
        out = _run([self.exe, f"--loadEngine={self.artifact.path}", f"--duration={max(1, round(seconds))}",
                    "--useSpinWait"], "trtexec")
        med = re.search(r"Latency: min = [\d.]+ ms, max = [\d.]+ ms, mean = [\d.]+ ms, median = ([\d.]+) ms", out)
        count = re.search(r"(\d+) iterations", out)
        if not med:
            raise RuntimeError("trtexec printed no latency line")
        return {"value_ms": float(med.group(1)), "statistic": self.STATISTIC, "n": int(count.group(1)) if count else 0,
                "chunk": 1}


TOOLS: dict[str, type[VendorTool]] = {  # backend -> its runtime's own benchmark
    "openvino": BenchmarkApp,
    "tflite": LiteRtBenchmark,
    "litert": LiteRtBenchmark,  # on the batch-1 file, the artifact (the tool runs the file's own shape)
    "onnxruntime": OrtTest,
    "torch": TorchTimer,
    "torch-inductor": TorchTimer,  # on the harness's compiled instance (compiled in load, before any block)
    "ipex": TorchTimer,
    "tensorrt": Trtexec,
}
