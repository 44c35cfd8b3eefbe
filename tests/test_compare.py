"""`harness compare`: verdict logic on committed result fixtures, identity refusal, the bootstrap interval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.compare import compare
from harness.errors import UserError
from harness.measure import block_bootstrap_median_ci
from harness.results import migrate_cell
from tests.conftest import run_cli

FIX = Path(__file__).parent / "fixtures"
RUN_A = FIX / "two_targets" / "local" / "run-a"
RUN_C = FIX / "two_targets" / "x86-cpu" / "run-c"  # the same cells, latency doubled


def test_a_run_against_itself_is_same_everywhere(tmp_path):
    proc = run_cli("compare", str(RUN_A), str(RUN_A), "--json", str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["overall"] == "same" and {c["verdict"] for c in result["cells"]} == {"same"}
    assert "| resnet8/torch/fp32 | same |" in proc.stdout


def _with_repeats(tmp_path: Path, run: Path, n: int, cpu: str | None = None) -> Path:
    """A copy of a fixture run whose cells carry an n-process run-to-run interval (+-2% of their p50)."""
    out = tmp_path / run.name
    shutil.copytree(run, out)
    for path in (out / "cells").glob("*.json"):
        cell = migrate_cell(json.loads(path.read_text()))
        if cell["status"] == "ok":
            p50 = cell["latency_ms"]["p50"]
            cell["latency_interval"] = {"value_ms": p50, "low_ms": p50 * 0.98, "high_ms": p50 * 1.02,
                                        "half_width_ms": p50 * 0.02, "n": n, "method": "test"}
        path.write_text(json.dumps(cell))
    if cpu:
        manifest = json.loads((out / "run.json").read_text())
        manifest["environment"]["cpu"]["model"] = cpu
        (out / "run.json").write_text(json.dumps(manifest))
    return out


def test_slower_run_is_a_regression_with_exit_1(tmp_path):
    a, c = _with_repeats(tmp_path / "a", RUN_A, 3), _with_repeats(tmp_path / "c", RUN_C, 3)
    result = compare(a, c)
    assert result["overall"] == "regression"
    assert {v["verdict"] for v in result["cells"]} == {"slower"}
    assert all(v["latency_ratio"] == pytest.approx(2.0) for v in result["cells"])
    assert run_cli("compare", str(a), str(c)).returncode == 1
    assert compare(c, a)["overall"] == "changed"  # faster is not a regression


@pytest.mark.parametrize("n, cpu, why", [(1, None, "needs --repeat 3"), (2, None, "got 2"),
                                         (3, "Other CPU", "different CPU: Example CPU -> Other CPU")])
def test_latency_without_enough_identical_processes_is_inconclusive(tmp_path, n, cpu, why):
    """Within-process samples miss process-to-process noise: a 2x change is not called without --repeat 3."""
    a, c = _with_repeats(tmp_path / "a", RUN_A, n), _with_repeats(tmp_path / "c", RUN_C, n, cpu)
    result = compare(a, c)
    assert result["overall"] == "inconclusive" and {v["verdict"] for v in result["cells"]} == {"inconclusive"}
    assert all(why in v["inconclusive"] for v in result["cells"])
    assert run_cli("compare", str(a), str(c)).returncode == 0


def test_a_host_that_swung_more_than_the_threshold_makes_latency_inconclusive(tmp_path):
    """Interleaved processes agree even when the host moved under all of them; a 2x change measured while
    the timing rounds swung 35% is not called."""
    a, c = _with_repeats(tmp_path / "a", RUN_A, 3), _with_repeats(tmp_path / "c", RUN_C, 3)
    for path in (c / "cells").glob("*.json"):
        cell = json.loads(path.read_text())
        cell.setdefault("details", {})["host_swing"] = 0.35
        path.write_text(json.dumps(cell))
    result = compare(a, c)
    assert {v["verdict"] for v in result["cells"]} == {"inconclusive"}
    assert all("host unstable in run B: its timing rounds swung 35%" in v["inconclusive"] for v in result["cells"])
    assert {v["verdict"] for v in compare(a, c, threshold=0.40)["cells"]} == {"slower"}  # swing below threshold


def test_measurement_settings_must_match(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN_A, run)
    manifest = json.loads((run / "run.json").read_text())
    manifest["identity"]["settings"]["min_count"] = 50
    (run / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"run.min_count: 10 -> 50 differs"):
        compare(RUN_A, run)
    path = run / "cells" / "resnet8__torch__fp32.json"
    cell = json.loads(path.read_text())
    cell["throughput"][0]["batch"] = 32
    cell["threads"] = 4
    path.write_text(json.dumps(cell))
    row = next(v for v in compare(RUN_A, run, allow_identity=True)["cells"] if v["cell"] == "resnet8/torch/fp32")
    assert "threads: 2 -> 4" in row["identity_differs"]
    assert "throughput batch sizes: [64] -> [32]" in row["identity_differs"]


def _copy_with(tmp_path: Path, edit) -> Path:
    run = tmp_path / "run"
    shutil.copytree(RUN_A, run)
    path = run / "cells" / "resnet8__onnxruntime__uint8.json"
    cell = json.loads(path.read_text())
    edit(cell)
    path.write_text(json.dumps(cell))
    return run


def test_identity_change_is_refused_naming_the_field(tmp_path):
    run = _copy_with(tmp_path, lambda c: c["calibration"].update(sha256="0" * 64))
    with pytest.raises(UserError, match="resnet8/onnxruntime/uint8: calibration sha256 differs"):
        compare(RUN_A, run)
    proc = run_cli("compare", str(RUN_A), str(run))
    assert proc.returncode == 2 and "--allow-identity-change" in proc.stderr
    cell = next(c for c in compare(RUN_A, run, allow_identity=True)["cells"] if c["cell"].endswith("uint8"))
    assert cell["identity_differs"] == ["calibration sha256"]


def test_version_and_accuracy_changes_are_named(tmp_path):
    def edit(c):
        c["versions"]["onnxruntime"] = "9.9.9"
        c["accuracy"]["top1"] += 0.01

    cell = next(c for c in compare(RUN_A, _copy_with(tmp_path, edit))["cells"] if c["cell"].endswith("uint8"))
    assert cell["verdict"] == "accuracy changed"
    assert cell["versions_differ"] == ["onnxruntime: 1.32.0 -> 9.9.9"]


def test_missing_cells(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN_A, run)
    (run / "cells" / "resnet8__torch__int8.json").unlink()
    cells = {c["cell"]: c for c in compare(RUN_A, run)["cells"]}
    assert cells["resnet8/torch/int8"]["verdict"] == "missing" and cells["resnet8/torch/int8"]["missing_in"] == "B"


def test_block_bootstrap_interval_of_the_median():
    rng = np.random.default_rng(1)
    small, large = rng.normal(1.0, 0.1, 50), rng.normal(1.0, 0.1, 5000)
    m, lo, hi = block_bootstrap_median_ci(small)
    assert lo <= m <= hi and hi - lo > 0
    _, lo2, hi2 = block_bootstrap_median_ci(large)
    assert (hi2 - lo2) < (hi - lo) / 3  # ~1/sqrt(n): 100x the samples, ~10x narrower
    assert block_bootstrap_median_ci(small) == (m, lo, hi)  # seeded: reproducible
    assert block_bootstrap_median_ci([2.0] * 10) == (2.0, 2.0, 2.0)


def test_block_bootstrap_sees_correlated_samples():
    """Slow drifts (frequency, a noisy neighbour) make consecutive samples alike: the same values in a slowly
    wandering order must give a wider interval than shuffled, where resampling singles would not notice."""
    rng = np.random.default_rng(2)
    drift = np.repeat(rng.normal(1.0, 0.1, 40), 50)  # 40 regimes of 50 calls each
    samples = drift + rng.normal(0, 0.01, len(drift))
    _, lo, hi = block_bootstrap_median_ci(samples)
    _, lo_s, hi_s = block_bootstrap_median_ci(rng.permutation(samples))
    assert hi - lo > 2 * (hi_s - lo_s)
