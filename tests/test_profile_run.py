"""`harness run --profile` end to end on resnet20 (ONNX Runtime and OpenVINO, fp32 / int8 / dynamic): profiles
taken after the timed figures, diagnoses where a cell is not faster than its fp32, none where it is, and the
report's Recommendation and "Why is it slower?" sections from that real run."""

from __future__ import annotations

import json

import pytest

from harness import diagnosis
from harness.report import md_escape
from tests.conftest import FAST, run_cells, run_cli


@pytest.fixture(scope="module")
def profiled(data_dir, shared_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("profiled") / "run"
    proc = run_cli("run", "--models", "resnet20", "--backends", "onnxruntime,openvino", "--precisions",
                   "fp32,int8,dynamic", "--data-dir", str(data_dir), "--out", str(out), "--profile", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_profiles_come_after_every_timed_figure(profiled):
    for (backend, precision), c in run_cells(profiled).items():
        if c["status"] != "ok":
            continue
        assert set(c["profile"]["batches"]) == {"1", "64"}, (backend, precision)
        timed_until = max(end for _, end, _ in c["details"]["latency_blocks"])
        assert c["profile"]["started"] > timed_until, (backend, precision)  # its own process, after timing


def test_a_cell_not_faster_than_fp32_is_diagnosed_and_a_faster_one_is_not(profiled):
    cells = run_cells(profiled)
    isa = json.loads((profiled / "run.json").read_text())["environment"]["cpu"]["isa"]
    for (backend, precision), c in cells.items():
        if c["status"] != "ok":
            continue
        if precision == "fp32":
            assert c["diagnosis"] is None
            continue
        gains = diagnosis.speedups(c, cells[(backend, "fp32")])
        slow = min(gains.values()) < diagnosis.MIN_SPEEDUP
        assert bool(c["diagnosis"]) == slow, (backend, precision, gains, c["diagnosis"])
        assert c["diagnosis"] == diagnosis.diagnose(c, cells[(backend, "fp32")], isa)  # as stored, so recomputed
        if slow and backend == "onnxruntime" and precision == "dynamic":  # ConvInteger is in its profile
            assert "integer_ops" in [d["rule"] for d in c["diagnosis"]]


def test_the_report_opens_each_section_with_a_recommendation(profiled, tmp_path):
    proc = run_cli("report", str(profiled), "-o", str(tmp_path), "--max-drop", "0.5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (tmp_path / "README.md").read_text()
    section = md.split("## resnet20 on local", 1)[1]
    assert section.index("**Recommendation**") < section.index("**Top-1 accuracy (%)**")
    assert "| Fastest at batch 1 |" in section and "| Fastest overall (batch 1) |" in section
    diagnosed = [c for c in run_cells(profiled).values() if c.get("diagnosis")]
    assert ("### Why is it slower?" in section) == bool(diagnosed)
    for c in diagnosed:
        assert all(md_escape(d["evidence"]) in section for d in c["diagnosis"])
    bad = run_cli("report", str(profiled), "-o", str(tmp_path / "x"), "--max-drop", "-1")
    assert bad.returncode == 2 and "--max-drop -1.0: expected top-1 points >= 0" in bad.stderr


def test_without_profile_a_cell_has_neither(run1):
    cell = run_cells(run1)[("onnxruntime", "int8")]
    assert cell["profile"] is None and cell["diagnosis"] is None
