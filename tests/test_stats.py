"""Significance of accuracy figures (harness/stats.py), the budgeted subset, and how compare and the report
use them: each checked against values worked out by hand."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness import stats
from harness.compare import compare
from harness.report import render
from harness.tables import comparison, delta_text, per_class
from harness.worker import accuracy_plan

RUN_A = Path(__file__).parent / "fixtures" / "two_targets" / "local" / "run-a"


@pytest.mark.parametrize("b, c, p", [
    (1, 5, 14 / 64),  # 2 * P(X <= 1), X ~ Bin(6, 1/2) = 2 * (1 + 6) / 64
    (0, 10, 2 / 1024),
    (2, 8, 2 * (1 + 10 + 45) / 1024),
    (3, 3, 1.0), (0, 0, 1.0), (5, 1, 14 / 64),
])
def test_mcnemar_exact_matches_the_binomial_by_hand(b, c, p):
    assert stats.mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    phat = k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return (centre - half) * 100, (centre + half) * 100


@pytest.mark.parametrize("k, n", [(90, 100), (9162, 10000), (1, 7), (500, 500)])
def test_wilson_interval_matches_the_textbook_formula(k, n):
    low, high = stats.wilson(k, n)
    assert (low, high) == pytest.approx(_wilson_by_hand(k, n), abs=1e-4)
    assert low <= k / n * 100 <= high


def test_wilson_of_nothing_right_is_the_known_upper_bound():
    assert stats.wilson(0, 10) == pytest.approx([0.0, 27.7533], abs=1e-4)  # z^2 / (n + z^2)
    assert stats.wilson(0, 0) is None


def test_paired_delta_counts_discordant_images_both_ways():
    ref = np.array([1, 1, 1, 0, 0, 1], bool)
    now = np.array([1, 0, 0, 0, 1, 1], bool)
    d = stats.paired_delta(now, ref)
    assert d["discordant"] == [2, 1] and d["n"] == 6
    assert d["points"] == pytest.approx((3 / 6 - 4 / 6) * 100, abs=1e-4)
    assert d["p_value"] == pytest.approx(1.0)  # 2 * P(X <= 1), X ~ Bin(3, 1/2) = 2 * 4/8
    assert stats.ns_mark(d) == " (n.s.)" and stats.ns_mark({"p_value": 0.01}) == "" and stats.ns_mark(None) == ""


def test_stratified_subset_is_proportional_reproducible_and_nested():
    y = np.repeat(np.arange(10), 1000)
    a = stats.stratified_subset(y, 1200)
    assert len(a) == 1200 and len(set(a)) == 1200 and np.all(np.diff(a) > 0)
    assert np.bincount(y[a], minlength=10).tolist() == [120] * 10
    assert np.array_equal(a, stats.stratified_subset(y, 1200))  # same seed, same images
    assert not np.array_equal(a, stats.stratified_subset(y, 1200, seed=1))
    assert set(stats.stratified_subset(y, 500)) <= set(a)  # a smaller budget's images lie inside
    uneven = np.repeat([0, 1], [900, 100])
    assert np.bincount(uneven[stats.stratified_subset(uneven, 100)]).tolist() == [90, 10]


def test_paired_keeps_only_the_images_both_records_hold():
    a = {"top1": np.array([5, 6, 7]), "index": np.array([2, 4, 9])}
    b = {"top1": np.arange(10)}  # no index: the whole test set in order
    ma, mb = stats.paired(a, b)
    assert ma["top1"].tolist() == [5, 6, 7] and mb["top1"].tolist() == [2, 4, 9]
    assert stats.paired({"top1": np.array([1]), "index": np.array([3])},
                        {"top1": np.array([1]), "index": np.array([4])}) == (None, None)


def _job(budget: float, n: int = 10000) -> dict:
    return {"settings": {"accuracy_budget_s": budget, "batch_sizes": [64]}, "test": {"size": n}}


def test_accuracy_plan_fits_the_budget_from_the_measured_throughput():
    fast = [{"batch": 64, "images_per_s": 2000.0}]
    assert accuracy_plan(_job(120), fast) is None  # 11,000 images at 2,000/s: 5.5 s
    slow = [{"batch": 64, "images_per_s": 30.0}]  # an emulated fp16 cell: 367 s for the whole set
    plan = accuracy_plan(_job(120), slow)
    assert plan == {"m": 3600 - 1000, "of": 10000, "reason": "over the 120 s budget", "estimate_s": 366.7,
                    "budget_s": 120}  # 3,600 images fit: m of the pass + 1,000 of the first-shape check
    assert accuracy_plan(_job(120), [{"batch": 64, "images_per_s": 10.0}])["m"] == 600  # m + m = 1,200
    assert accuracy_plan(_job(1), slow)["m"] == 500  # never fewer than MIN_SUBSET
    assert accuracy_plan(_job(0), slow) is None  # 0: the whole test set, always


def _cell(backend, precision, top1, delta=None, subset=None, n=10000):
    acc = {"top1": top1, "top5": 99.0, "per_class": [top1] * 10, "n": n, "agree_fp32": None,
           "top1_ci95": stats.wilson(top1 * n / 100, n), "delta_vs_fp32": delta}
    if subset:
        acc["subset"] = subset
    return {"model": "resnet20", "backend": backend, "precision": precision, "variant": "", "status": "ok",
            "target": "local", "accuracy": acc, "size_bytes": 1e6 if precision == "fp32" else 3e5,
            "latency_ms": {"p50": 1.0, "p90": 1.1}, "throughput": [{"batch": 64, "images_per_s": 100.0}]}


def test_comparison_marks_deltas_within_noise_and_footnotes_subsets():
    ns = {"points": -0.11, "discordant": [40, 29], "p_value": 0.228, "n": 10000,
          "per_class": [0.5, 0.01, *[1.0] * 8]}
    real = {"points": -1.5, "discordant": [200, 50], "p_value": 1e-20, "n": 10000, "per_class": None}
    sub = {"reason": "over the 120 s budget", "seed": 0, "of": 10000}
    ref = _cell("openvino", "fp32", 91.73)
    cells = [ref, _cell("openvino", "int8", 91.62, ns), _cell("openvino", "fp16", 90.2, real, sub, n=1200)]
    assert delta_text(cells[1], ref) == "-0.11 (n.s.)" and delta_text(cells[2], ref) == "-1.50"
    table = comparison(cells)
    rows = {r[1]["text"]: [x["text"] for x in r] for r in table["rows"]}
    assert rows["Int8 (static)"][2:5] == ["91.62", "[91.06, 92.15]", "-0.11 (n.s.)"]
    assert rows["Float16"][2] == "90.20‡"
    assert "‡ resnet20 OpenVINO Float16: (n=1,200 of 10,000: over the 120 s budget; seeded class-stratified " \
           "subset, seed 0)" in table["footnotes"]
    pc = {r[1]["text"]: [x["text"] for x in r[2:]] for r in per_class(cells)["rows"]}
    assert pc["Int8 (static)"][:2] == ["-0.1 (n.s.)", "-0.1"]  # class 0: p = 0.5, class 1: p = 0.01


def _with_predictions(tmp_path: Path, name: str, top1: np.ndarray, cpu_isa: str | None) -> Path:
    """A copy of the fixture run whose torch/int8 cell keeps per-image predictions (labels: all class 0)."""
    run = tmp_path / name
    shutil.copytree(RUN_A, run)
    np.savez(run / "cells" / "resnet8__torch__int8.pred.npz", top1=top1, label=np.zeros(len(top1), np.uint8))
    cell_path = run / "cells" / "resnet8__torch__int8.json"
    cell = json.loads(cell_path.read_text())
    cell["accuracy"]["top1"] = round(float((top1 == 0).mean() * 100), 4)
    cell_path.write_text(json.dumps(cell))
    if cpu_isa:
        manifest = json.loads((run / "run.json").read_text())
        manifest["environment"]["cpu"]["isa"] = {cpu_isa: True}
        (run / "run.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.parametrize("flipped, cpu_b, verdict, note", [
    (2, "avx512_vnni", "same", "CPU changed: avx512_amx -> avx512_vnni; accuracy within noise (McNemar p=0.5,"),
    (2, None, "accuracy changed", "same CPU and a deterministic backend: any change is real (McNemar p=0.5,"),
    (40, "avx512_vnni", "accuracy changed", "accuracy changed beyond noise (McNemar p=1.82e-12, discordant 0/40)"),
])
def test_compare_tests_accuracy_changes_across_cpus(tmp_path, flipped, cpu_b, verdict, note):
    before = np.zeros(1000, np.uint8)
    before[:100] = 1  # 90% right
    after = before.copy()
    after[:flipped] = 0  # `flipped` images now right, none lost
    a = _with_predictions(tmp_path, "a", before, "amx_tile")
    b = _with_predictions(tmp_path, "b", after, cpu_b or "amx_tile")
    cell = next(c for c in compare(a, b)["cells"] if c["cell"] == "resnet8/torch/int8")
    assert cell["verdict"] == verdict and note in cell["accuracy_note"], cell["accuracy_note"]


def test_footnote_of_a_budgeted_cell_is_rendered(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN_A, run)
    path = run / "cells" / "resnet8__torch__int8.json"
    cell = json.loads(path.read_text())
    cell["accuracy"].update(n=1200, subset={"reason": "over the 120 s budget", "seed": 0, "of": 10000})
    path.write_text(json.dumps(cell))
    render([run], tmp_path / "out")
    text = (tmp_path / "out" / "README.md").read_text()
    assert "(n=1,200 of 10,000: over the 120 s budget; seeded class-stratified subset, seed 0)" in text


def test_compare_judges_a_budgeted_cell_on_the_images_both_runs_evaluated(tmp_path):
    """A subset run predicts its 300 images exactly as the whole-set run did: the same accuracy, though its
    top-1 figure differs; one changed prediction among them, on one CPU, is a change."""
    full = np.zeros(1000, np.uint8)
    full[::10] = 1  # 90% right
    a = _with_predictions(tmp_path, "a", full, "amx_tile")
    b = _with_predictions(tmp_path, "b", full[:300], "amx_tile")
    pred = b / "cells" / "resnet8__torch__int8.pred.npz"
    index = np.arange(300)  # the whole-set run's first 300 images: 30 wrong, 270 right
    np.savez(pred, top1=full[index], label=np.zeros(300, np.uint8), index=index)
    cell = next(c for c in compare(a, b)["cells"] if c["cell"] == "resnet8/torch/int8")
    assert cell["verdict"] == "same" and cell["accuracy_note"] == "on the 300 test images both evaluated"
    top1 = full[index]
    top1[0] = 0
    np.savez(pred, top1=top1, label=np.zeros(300, np.uint8), index=index)
    cell = next(c for c in compare(a, b)["cells"] if c["cell"] == "resnet8/torch/int8")
    assert cell["verdict"] == "accuracy changed" and "discordant 0/1 on the 300 test images" in cell["accuracy_note"]
