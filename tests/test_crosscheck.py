"""`harness crosscheck`: the vendor tools' output parsed as they print it, the interleaved-pair statistics, and
one registry entry per backend. The end-to-end run over real tools is in test_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends import BACKENDS
from harness.crosscheck import chunk_median, pair_row, ratio_text, summarize
from harness.vendor import TOOLS, parse_benchmark_app

BENCHMARK_APP = Path(__file__).parent / "fixtures" / "vendor" / "benchmark_app-2026.4.1.txt"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_backend_names_its_runtimes_own_tool(backend):
    tool = TOOLS[backend]
    assert tool.NAME and tool.PACKAGE and tool.MEANS and tool.STATISTIC in ("median", "mean")


def test_benchmark_app_console_is_read_in_its_own_units():
    text = BENCHMARK_APP.read_text()  # openvino 2026.4.1, resnet20 int8, 500 iterations
    got = parse_benchmark_app(text)
    assert got["value_ms"] == pytest.approx(0.21498) and got["n"] == 500
    assert got["config"]["INFERENCE_NUM_THREADS"] == "2" and got["config"]["NUM_STREAMS"] == "1"
    assert got["config"]["PERFORMANCE_HINT"] == "LATENCY" and got["config"]["ENABLE_CPU_PINNING"] == "True"
    slow = text.replace("Median:        214.98 us", "Median:        1.52 ms")  # >= 1 ms prints ms
    assert parse_benchmark_app(slow)["value_ms"] == pytest.approx(1.52)
    with pytest.raises(RuntimeError, match="no Median"):
        parse_benchmark_app("[ INFO ] Count: 5 iterations")


def test_harness_samples_are_put_into_the_tools_statistic():
    assert chunk_median([1, 2, 3, 4, 10, 10], 2) == pytest.approx(3.5)  # block means 1.5, 3.5, 10
    assert chunk_median([1, 2, 3, 4, 10, 10, 99], 2) == pytest.approx(3.5)  # a partial block is dropped
    assert chunk_median([5, 1, 3], 1) == 3
    mean = pair_row({"harness": [1.0, 1.0, 4.0], "vendor": {"value_ms": 1.5, "statistic": "mean", "n": 9,
                                                            "chunk": 1}, "runtime": None}, 1)
    assert mean["harness_ms"] == 2.0 and mean["ratio"] == pytest.approx(2.0 / 1.5, abs=1e-4)
    assert mean["first"] == "vendor" and "runtime_ms" not in mean


def test_pairs_summarize_to_the_median_ratio_with_its_range():
    rows = [{"harness_ms": h, "vendor_ms": v, "ratio": round(h / v, 4), "runtime_ms": v, "python_side_ms": 0.01}
            for h, v in ((0.20, 0.20), (0.22, 0.20), (0.18, 0.20), (0.30, 0.25), (0.19, 0.20))]
    got = {"tool": "benchmark_app", **summarize(rows, "median")}
    assert got["ratio"] == pytest.approx(1.0) and got["ratio_range"] == [0.9, 1.2] and got["within_band"]
    assert got["harness_ms"] == 0.2 and got["vendor_p50_ms"] == 0.2 and got["python_side_ms"] == 0.01
    assert summarize(rows, "mean")["vendor_p50_ms"] is None  # a mean is never reported as a p50
    assert ratio_text(got) == "1.00 [0.90–1.20]"
    assert ratio_text({**got, "ratio": 1.23, "within_band": False}).endswith(" ⚠")
    assert ratio_text({"tool": None, "reason": "trtexec not found"}) == "no tool: trtexec not found"
