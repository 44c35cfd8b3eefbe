"""Result files: atomic no-clobber writes, versioned reads, the fixed cell fields."""

from __future__ import annotations

import json
import os
import stat

import pytest

from harness.errors import UserError
from harness.measure import summarize, timed_loop
from harness.results import CELL_SCHEMA_VERSION, CellResult, read_json, write_json


def test_write_never_clobbers_unless_told(tmp_path):
    path = tmp_path / "cell.json"
    write_json(path, {"schema_version": 1, "v": 1})
    with pytest.raises(FileExistsError):
        write_json(path, {"schema_version": 1, "v": 2})
    assert json.loads(path.read_text())["v"] == 1
    write_json(path, {"schema_version": 1, "v": 3}, overwrite=True)
    assert json.loads(path.read_text())["v"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["cell.json"]  # no temp files left


@pytest.mark.parametrize("version", [0, CELL_SCHEMA_VERSION + 1, "1", None])
def test_unknown_schema_versions_are_refused(tmp_path, version):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"schema_version": version}))
    with pytest.raises(UserError, match=r"x.json: cell schema_version .* is not supported"):
        read_json(path, "cell", CELL_SCHEMA_VERSION)


def test_cell_carries_the_fixed_fields():
    cell = CellResult(target="local", run_id="r", model="resnet20", backend="torch", precision="int8", variant="",
                      status="unsupported", reason="why", calibration={}, test={}, threads=2,
                      model_info={}, recipe={}).to_dict()
    for key in ("schema_version", "target", "model", "backend", "precision", "status", "reason", "accuracy",
                "size_bytes", "latency_ms", "throughput", "peak_rss_bytes", "quantize_s", "calibration", "recipe",
                "repeats", "latency_interval"):
        assert key in cell
    assert next(iter(cell)) == "schema_version"


def test_timing_loop_meets_both_duration_and_count():
    calls, warm = [], {}
    samples = timed_loop(lambda b: calls.append(b), None, warmup=3, min_duration_s=0.05, min_count=7, record=warm)
    assert len(samples) >= 7 and len(calls) == len(samples) + warm["calls"]
    assert warm["calls"] >= 20 and warm["steady"]  # steadiness compares the last 10 calls with the 10 before
    stats = summarize([1.0, 2.0, 3.0, 4.0])
    assert stats["p50"] == 2.5 and stats["n"] == 4 and stats["min"] == 1.0


def test_written_results_are_readable_by_others(tmp_path):
    """mkstemp makes 0600 files: a published results folder would be unreadable to every other user."""
    path = tmp_path / "cell.json"
    old = os.umask(0o022)
    try:
        write_json(path, {"schema_version": 4})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_schema_3_cells_migrate_keeping_their_memory_figure_with_a_note():
    from harness.results import migrate_cell

    v3 = {"schema_version": 3, "status": "ok", "peak_rss_bytes": 621_694_976, "quantize_s": 5.4,
          "accuracy": {"top1": 91.0, "agree_fp32": 100.0}}
    v4 = migrate_cell(v3)
    assert v4["schema_version"] == CELL_SCHEMA_VERSION
    assert v4["peak_rss_bytes"] == 621_694_976 and v4["quantize_s"] == 5.4
    assert v4["memory"]["run_peak_bytes"] is None and "ru_maxrss" in v4["memory"]["note"]
    assert v4["import_s"] is None and v4["accuracy"]["ties"] is None and v4["accuracy"]["top1"] == 91.0


def test_schema_4_cells_get_the_wilson_interval_of_their_whole_test_set():
    from harness.results import migrate_cell

    v4 = {"schema_version": 4, "status": "ok", "accuracy": {"top1": 90.0, "n": 100}}
    v5 = migrate_cell(v4)
    assert v5["schema_version"] == CELL_SCHEMA_VERSION and v5["accuracy"]["delta_vs_fp32"] is None
    assert v5["accuracy"]["top1_ci95"] == pytest.approx([82.5634, 94.4771], abs=1e-3)  # Wilson, 90 of 100


def test_schema_5_cells_get_topk_from_their_top1_and_top5_and_no_counts():
    from harness.results import migrate_cell

    v5 = {"schema_version": 5, "status": "ok", "accuracy": {"top1": 91.5, "top5": 99.6, "n": 10},
          "model_info": {"name": "resnet20"}}
    v6 = migrate_cell(v5)
    assert v6["schema_version"] == CELL_SCHEMA_VERSION and v6["accuracy"]["topk"] == {"1": 91.5, "5": 99.6}
    assert v6["model_info"] == {"name": "resnet20", "params": None, "macs_per_image": None}
    timing_only = migrate_cell({"schema_version": 5, "status": "ok", "accuracy": {"top1": None, "top5": None}})
    assert timing_only["accuracy"]["topk"] is None


def test_schema_6_cells_have_no_profile_and_no_diagnosis():
    from harness.results import migrate_cell

    v7 = migrate_cell({"schema_version": 6, "status": "ok", "precision": "int8"})
    assert v7 == {"schema_version": 7, "status": "ok", "precision": "int8", "profile": None, "diagnosis": None}


@pytest.mark.timing  # counts calls against a sleep-timed ramp
def test_warm_up_lasts_until_calls_are_steady():
    """A runtime that speeds up over its first 40 calls (torch eager at batch 64 in a fresh process: its
    allocator faulting in pages) is warmed past the ramp, however few calls or seconds were asked for."""
    import time

    from harness.measure import warm_up

    n = []

    def run(_):
        n.append(1)
        time.sleep(max(0.0005, 0.004 - 0.0001 * len(n)))  # 4 ms down to 0.5 ms over 35 calls, then flat

    info = warm_up(run, None, calls=3, seconds=0.0)
    assert info["steady"] and 40 <= info["calls"] <= 70
    capped = warm_up(lambda _: time.sleep(0.001), None, calls=3, seconds=0.05, cap_s=0.005)
    assert 0.005 <= capped["s"] < 0.05 and capped["calls"] < 20 and not capped["steady"]
