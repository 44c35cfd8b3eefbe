"""`harness compare`: verdict logic on committed result fixtures, identity refusal, the bootstrap interval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.compare import compare
from harness.errors import UserError
from harness.measure import bootstrap_median_ci
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


def test_slower_run_is_a_regression_with_exit_1():
    result = compare(RUN_A, RUN_C)
    assert result["overall"] == "regression"
    assert {c["verdict"] for c in result["cells"]} == {"slower"}
    assert all(c["latency_ratio"] == pytest.approx(2.0) for c in result["cells"])
    assert run_cli("compare", str(RUN_A), str(RUN_C)).returncode == 1
    assert compare(RUN_C, RUN_A)["overall"] == "changed"  # faster is not a regression


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


def test_bootstrap_interval_of_the_median():
    rng = np.random.default_rng(1)
    small, large = rng.normal(1.0, 0.1, 50), rng.normal(1.0, 0.1, 5000)
    m, lo, hi = bootstrap_median_ci(small)
    assert lo <= m <= hi and hi - lo > 0
    _, lo2, hi2 = bootstrap_median_ci(large)
    assert (hi2 - lo2) < (hi - lo) / 3  # ~1/sqrt(n): 100x the samples, ~10x narrower
    assert bootstrap_median_ci(small) == (m, lo, hi)  # seeded: reproducible
    assert bootstrap_median_ci([2.0] * 10) == (2.0, 2.0, 2.0)
