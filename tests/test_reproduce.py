"""--repeat, `harness reproduce`, `harness sweep` end to end on real data (small subsets), and the report's
intervals and sweep plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.measure import host_swing
from harness.reproduce import run_args
from tests.conftest import FAST as E2E_FAST
from tests.conftest import REPO, run_cli

FAST = ["--test-limit", "300", *E2E_FAST[2:]]  # run1's settings (tests/conftest.py) on 300 images
MINMAX = str(REPO / "targets" / "recipes" / "minmax-per-tensor-1000.toml")


@pytest.fixture(scope="module")
def repeated(data_dir, shared_cache, tmp_path_factory):
    results = tmp_path_factory.mktemp("repro") / "results"
    out = results / "local" / "20260101T000000Z"
    proc = run_cli("run", "--models", "resnet8", "--backends", "onnxruntime,torch", "--precisions", "fp32,int8",
                   "--recipe", MINMAX, "--repeat", "2", "--data-dir", str(data_dir), "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results, out


def test_repeat_gives_each_cell_a_run_to_run_interval(repeated):
    _, out = repeated
    for path in (out / "cells").glob("*.json"):
        cell = json.loads(path.read_text())
        assert cell["status"] == "ok", cell["reason"]
        assert len(cell["repeats"]) == 2 and cell["latency_interval"]["n"] == 2
        iv = cell["latency_interval"]
        p50s = [float(np.median(r["latency_samples_ms"])) for r in cell["repeats"]]
        assert [r["latency_p50_ms"] for r in cell["repeats"]] == pytest.approx(p50s)
        # mean of the two processes' medians, half-width t(0.975, 1 df) * s / sqrt(2)
        assert iv["value_ms"] == pytest.approx(np.mean(p50s))
        assert iv["half_width_ms"] == pytest.approx(12.706 * np.std(p50s, ddof=1) / np.sqrt(2))
        assert iv["high_ms"] - iv["low_ms"] == pytest.approx(2 * iv["half_width_ms"]) and "Student-t" in iv["method"]
        assert cell["latency_samples_ms"] == cell["repeats"][0]["latency_samples_ms"]  # the first process's
        # the processes took turns: block j of process 1, then of process 2, then block j+1 of process 1 ...,
        # each ending before the next began (sequential processes or overlapping ones both fail this)
        # How many blocks a process needs depends on the host (CI once: a 5-ms block held one call of 123 ms, and
        # 4 blocks met --min-duration); two are enough to tell taking turns from one process after the other.
        blocks = [r["latency_blocks"] for r in cell["repeats"]]
        k = min(len(b) for b in blocks)
        assert k >= 2, blocks
        order = [b[j] for j in range(k) for b in blocks]
        assert all(x[1] <= y[0] for x, y in zip(order, order[1:], strict=False)), order
        assert [sum(b[2] for b in p) for p in blocks] == [len(r["latency_samples_ms"]) for r in cell["repeats"]]
        # the host's swing is the rounds' spread recomputed from the cell's own samples and blocks (its value is
        # the host's: this pass runs beside another test worker, 7.19 once; its definition has test_measure's test).
        # Under 5 rounds it is None by definition, and the cell must say so rather than a figure (CI once: 4 rounds)
        swing = host_swing([(r["latency_samples_ms"], r["latency_blocks"]) for r in cell["repeats"]])
        assert (swing is None) == (k < 5), (k, swing)
        recorded = cell["details"]["host_swing"]
        assert recorded is None if swing is None else recorded == pytest.approx(swing, abs=2e-4) and swing >= 0
        assert {r["size_bytes"] for r in cell["repeats"]} == {cell["size_bytes"]}
        assert cell["recipe"]["name"] == "minmax-per-tensor-1000" and cell["recipe"]["calibration_size"] == 100


def test_reproduce_reruns_the_recorded_cells_and_compares(repeated, data_dir):
    results, out = repeated
    proc = run_cli("reproduce", str(out), "--data-dir", str(data_dir), "--results", str(results))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "4/4 cells reproduced their accuracy and status" in proc.stdout
    new = [p for p in (results / "local").iterdir() if p != out]
    assert len(new) == 1 and (new[0] / "reproduce.json").is_file()
    report = json.loads((new[0] / "reproduce.json").read_text())
    assert all(c["top1_delta"] == 0 for c in report["cells"])
    run_new = json.loads((new[0] / "run.json").read_text())
    run_old = json.loads((out / "run.json").read_text())
    assert run_new["identity"]["recipe"] == run_old["identity"]["recipe"]
    assert run_new["identity"]["settings"] == run_old["identity"]["settings"]


def test_run_args_for_a_run_recorded_before_recipes():
    run = json.loads((REPO / "tests" / "fixtures" / "normal" / "local" / "run-a" / "run.json").read_text())
    args = run_args({**run, "_dir": "x"})
    assert "--recipe" not in args and args[args.index("--calibration-size") + 1] == "100"
    assert "--repeat" not in args


def test_compare_names_a_recipe_change(repeated, tmp_path):
    import shutil

    _, out = repeated
    other = tmp_path / "run"
    shutil.copytree(out, other)
    path = next((other / "cells").glob("*onnxruntime__int8.json"))
    cell = json.loads(path.read_text())
    cell["recipe"]["weight_granularity"] = "per_channel"
    path.write_text(json.dumps(cell))
    proc = run_cli("compare", str(out), str(other))
    assert proc.returncode == 2
    assert "recipe.weight_granularity: 'per_tensor' -> 'per_channel' differs" in proc.stderr


def test_report_shows_intervals_and_significance(repeated, tmp_path):
    _, out = repeated
    proc = run_cli("report", str(out), "-o", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "rep" / "README.md").read_text()
    latency_rows = md.split("**Latency at batch 1")[1].split("**Throughput")[0]
    assert "±" in latency_rows
    assert "n.s.: the two latency intervals overlap" in md and "run-to-run" in md


def test_sweep_makes_one_cell_per_setting_and_a_plot(data_dir, shared_cache, tmp_path):
    out = tmp_path / "results" / "local" / "sweep"
    fast = [a for a in FAST if a not in ("--calibration-size", "100")]
    proc = run_cli("sweep", "--models", "resnet20", "--backends", "onnxruntime", "--precisions", "uint8",
                   "--calibration-size", "10,100", "--calibration-method", "minmax,percentile",
                   "--data-dir", str(data_dir), "--out", str(out), *fast)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert sorted(c["variant"] for c in cells) == ["cal10-minmax", "cal10-percentile", "cal100-minmax",
                                                    "cal100-percentile"]
    assert len({c["calibration"]["sha256"] for c in cells}) == 2
    assert {c["details"]["calibration_method"] for c in cells} == {"MinMax", "Percentile"}
    proc = run_cli("report", str(out.parent), "-o", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "rep" / "README.md").read_text()
    assert "Calibration sweep: top-1" in md and "plots/local-resnet20-calibration.svg" in md
    assert (tmp_path / "rep" / "plots" / "local-resnet20-calibration.svg").stat().st_size > 5000
    assert run_cli("sweep", "--calibration-size", "10,x").returncode == 2
