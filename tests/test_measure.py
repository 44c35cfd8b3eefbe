"""The figures themselves against known quantities: tie-aware top-k, non-finite outputs, percentiles that need
samples, throughput from a known batch time, and each worker's own memory high-water mark."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from harness.measure import NonFinite, evaluate, summarize, throughput, topk_credit
from tests.conftest import REPO


def test_a_tie_shared_by_k_classes_earns_one_kth():
    scores = np.array([[0.5, 0.5, 0.0],    # label 1 tied with class 0 at the top: 1/2
                       [0.2, 0.2, 0.2],    # three-way tie, label 2: 1/3
                       [0.9, 0.1, 0.0],    # clear win for label 0: 1
                       [0.1, 0.1, 0.8]])   # label 0 tied below the top: 0
    credit, ambiguous = topk_credit(scores, np.array([1, 2, 0, 0]), 1)
    assert credit.tolist() == pytest.approx([0.5, 1 / 3, 1.0, 0.0])
    assert ambiguous.tolist() == [True, True, False, False]
    # top-2: in row 4 classes 0 and 1 tie for the one slot left under class 2
    credit2, ambiguous2 = topk_credit(scores, np.array([1, 2, 0, 0]), 2)
    assert credit2.tolist() == pytest.approx([1.0, 2 / 3, 1.0, 0.5])
    assert ambiguous2.tolist() == [False, True, False, True]


def test_evaluate_reports_tie_aware_accuracy_ties_and_the_range_a_tie_rule_could_give():
    scores = np.zeros((4, 10), np.float32)
    scores[0, 3] = 1.0  # image 0: correct (label 3), no tie
    scores[1, [1, 2]] = 1.0  # image 1: label 2 tied with 1: a stable argsort would say 1 (wrong)
    scores[2, :] = 0.5  # image 2: all ten tied
    scores[3, 7] = 1.0  # image 3: wrong
    y = np.array([3, 2, 5, 0])
    acc, rec = evaluate(lambda x: scores[x], np.arange(4), y, batch=3)
    assert acc["top1"] == pytest.approx((1 + 0.5 + 0.1 + 0) / 4 * 100, abs=1e-4)
    assert acc["ties"] == {"top1": 2, "top5": 2}  # images whose label sits in a tie at the boundary
    assert acc["top1_range"] == [25.0, 75.0]
    assert rec["top1"].tolist() == [3, 1, 0, 7] and rec["credit1"].tolist() == pytest.approx([1, 0.5, 0.1, 0])
    # top-5: image 2's ten tied classes share 5 slots; image 3's label ties 9 classes for the 4 slots under 7
    assert acc["top5"] == pytest.approx((1 + 1 + 0.5 + 4 / 9) / 4 * 100, abs=1e-4)


def test_evaluate_reports_every_k_the_card_asks_for():
    """accuracy.topk: the card's k (here 1 and 3) besides 1 and 5, each tie-aware; k above the class count is left
    out (it would be 100% by definition)."""
    scores = np.tile(np.arange(10, 0, -1, dtype=np.float32), (4, 1))  # class 0 highest, then 1, 2, ...
    y = np.array([0, 2, 3, 9])  # ranks 1, 3, 4, 10
    acc, _ = evaluate(lambda x: scores[x], np.arange(4), y, batch=4, n_classes=10, top_k=(1, 3))
    assert acc["topk"] == {"1": 25.0, "3": 50.0}
    assert acc["top1"] == 25.0 and acc["top5"] == 75.0
    acc, _ = evaluate(lambda x: scores[x], np.arange(4), y, batch=4, n_classes=10, top_k=(4, 10, 11))
    assert acc["topk"] == {"1": 25.0, "4": 75.0, "10": 100.0}


def test_non_finite_outputs_fail_the_cell_counting_the_images():
    scores = np.ones((6, 10), np.float32)
    scores[[1, 4], 2] = np.nan
    scores[5, 0] = np.inf
    with pytest.raises(NonFinite, match="3 of 6 images gave non-finite outputs"):
        evaluate(lambda x: scores[x], np.arange(6), np.zeros(6, int), batch=4)


def test_percentiles_need_their_samples():
    few = summarize(list(np.linspace(1, 2, 50)))
    assert few["p99"] is None and few["p90"] == pytest.approx(1.9) and "p99 needs 100" in few["note"]
    assert summarize([1.0] * 5)["p90"] is None
    many = summarize(list(np.arange(1, 201, dtype=float)))
    assert many["p99"] == pytest.approx(198.01) and "note" not in many


def test_throughput_is_the_batch_over_the_median_batch_time():
    """64 images in a median 11.5-ms batch are 5,565.2 img/s; one preempted 500-ms call does not move it."""
    assert throughput([10.0, 12.0, 11.0, 500.0], 64) == pytest.approx(64 / 0.0115)
    assert throughput([2.0], 1) == pytest.approx(500.0)


@pytest.mark.timing  # sleep-timed calls
def test_throughput_of_a_known_call_time_through_the_timed_blocks():
    """Calls that take 5 ms (a sleep) for a batch of 64: every sample is one call's milliseconds, so the
    throughput is 12,800 img/s less only the sleep's overshoot (allowed up to 1.5 ms a call)."""
    import time

    from harness.baton import Turns
    from harness.phases import timed_blocks

    samples, _ = timed_blocks(lambda _: time.sleep(0.005), None, {"min_duration_s": 0.2}, 10, Turns(None), 0.005)
    assert 5.0 <= float(np.median(samples)) <= 6.5, samples
    assert 64 / 0.0065 <= throughput(samples, 64) <= 64 / 0.005


def test_memory_is_the_processes_own_high_water_mark():
    """A process that allocates and touches 300 MB reports about 300 MB more than it started with."""
    code = """
import json
import numpy as np
from harness.measure import vm_hwm_bytes
before = vm_hwm_bytes()
block = np.ones(300 * 2**20 // 8)
peak = vm_hwm_bytes()
del block
print(json.dumps([before, peak, vm_hwm_bytes()]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    before, peak, after = json.loads(proc.stdout)
    assert (peak - before) == pytest.approx(300 * 2**20, rel=0.15)
    assert after >= 0.99 * peak  # a high-water mark: freeing does not lower it (the kernel syncs RSS lazily)


def test_a_large_runner_does_not_leak_into_a_small_cell(data_dir, shared_cache, tmp_path):
    """ru_maxrss is carried across fork + exec; every worker used to report its runner's peak. A runner that
    holds 2 GB runs a small onnxruntime cell: the cell's figures are its own."""
    out = tmp_path / "run"
    code = f"""
import sys
import numpy as np
hog = np.ones(2 * 2**30 // 8)  # 2 GB, touched
from harness.cli import main
sys.exit(main(["run", "--models", "resnet8", "--backends", "onnxruntime", "--precisions", "fp32",
               "--data-dir", {str(data_dir)!r}, "--out", {str(out)!r}, "--test-limit", "200",
               "--calibration-size", "10", "--min-duration", "0.05", "--min-count", "10"]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cell = json.loads((out / "cells" / "resnet8__onnxruntime__fp32.json").read_text())
    mem = cell["memory"]
    assert mem["run_peak_bytes"] < 400e6, mem  # onnxruntime + numpy + the harness, not the runner's 2 GB
    assert mem["build_peak_bytes"] < 1.5e9, mem
    assert cell["peak_rss_bytes"] == max(mem["build_peak_bytes"], mem["run_peak_bytes"])


def test_repeat_interval_is_the_t_interval_and_flags_disagreeing_processes():
    from harness.measure import repeat_interval

    iv = repeat_interval([1.0, 1.02, 0.99])
    assert iv["value_ms"] == pytest.approx(1.003333, abs=1e-6) and not iv["unstable"]
    assert iv["half_width_ms"] == pytest.approx(4.303 * np.std([1.0, 1.02, 0.99], ddof=1) / np.sqrt(3))
    bad = repeat_interval([0.7, 0.7, 1.33])  # one process in the slow mode
    assert bad["unstable"] and bad["spread"] == pytest.approx(0.63 / np.mean([0.7, 0.7, 1.33]), abs=1e-4)


def _blocks(round_values: list[float], per_block: int = 4) -> tuple[list[float], list[list]]:
    samples = [v for v in round_values for _ in range(per_block)]
    return samples, [[float(i), i + 0.5, per_block] for i in range(len(round_values))]


def test_host_swing_is_the_spread_of_the_rounds_not_of_the_processes():
    from harness.measure import host_swing

    rounds = [1.0] * 5 + [1.5] * 5  # the host's two speeds: half the rounds 1.0 ms, half 1.5 ms
    a, b = _blocks(rounds), _blocks([v * 1.02 for v in rounds])  # process B 2% slower throughout
    # round medians 1.01 and 1.515: 10th-90th percentile range 0.505 over their median 1.2625
    assert host_swing([a, b]) == pytest.approx(0.4, abs=1e-4)
    assert host_swing([_blocks([1.0] * 10), _blocks([1.3] * 10)]) == 0.0  # processes apart, host steady
    assert host_swing([_blocks([1.0, 2.0, 1.0, 2.0])]) is None  # 4 rounds: too few to say


def test_a_timing_process_alone_takes_turns_with_itself():
    """Run by hand (no worker, no pipes), a timing process blocks until it has enough, then stops the shape."""
    from harness.baton import Turns

    t = Turns(None)
    assert t.take() is True  # load + warm-up
    t.give()
    assert t.take() is True  # block 1: not enough yet
    t.give(enough=False)
    assert t.take() is True  # block 2: now enough
    t.give(enough=True)
    assert t.take() is False  # the shape stops
    t.give()
    assert t.take() is True  # the next shape loads


@pytest.mark.timing  # counts calls against sleep-timed blocks
@pytest.mark.parametrize("call_s, settles", [(0.0005, True), (0.02, False)])
def test_blocks_settle_with_untimed_calls_unless_one_call_is_longer_than_that(call_s, settles):
    """A block of 10 ms starts with 2.5 ms of untimed calls (the previous holder's threads spin on); a 20-ms
    call would double the work for that, so a pause replaces them: every call is then a sample."""
    import time

    from harness.baton import Turns
    from harness.phases import timed_blocks

    calls = []

    def run(_):
        calls.append(1)
        time.sleep(call_s)

    samples, blocks = timed_blocks(run, None, {"min_duration_s": 0.1}, 3, Turns(None), call_s)
    assert sum(samples) >= 100 and len(samples) >= 3 and sum(b[2] for b in blocks) == len(samples)
    untimed = len(calls) - len(samples)
    assert untimed >= len(blocks) if settles else untimed == 0, (untimed, len(blocks))


class _FirstShapeSession:
    """A test double for one runtime behaviour, not a backend: an instance whose first call fixes its
    outputs, as IPEX 2.8's int8 TorchScript does (it specializes on the first shape it sees)."""

    def __init__(self):
        self.first = None

    def __call__(self, x):
        self.first = self.first or len(x)
        scores = np.eye(10, dtype=np.float32)[x[:, 0, 0, 0].astype(int) % 10]  # image i predicts class i % 10
        return scores if self.first > 1 else scores[:, ::-1]  # one image first: every prediction mirrored


class _Loader:
    def load(self, artifact, threads, batch=None):
        return _FirstShapeSession()


def test_first_shape_check_counts_predictions_that_follow_the_first_shape():
    from harness.phases import first_shape_check

    x, y = np.zeros((30, 3, 4, 4), np.float32), np.arange(30) % 10
    x[:, 0, 0, 0] = np.arange(30)  # the image's index, which the double reads back
    job = {"settings": {"batch_sizes": [8]}, "threads": 1}
    records = {"top1": (np.arange(30) % 10).astype(np.uint8), "credit1": np.ones(30, np.float32)}
    check = first_shape_check(job, _Loader(), None, x, y, records)
    # mirrored: class c becomes 9 - c, which never equals c (10 classes), so nothing agrees and nothing scores
    # 24 of the 30 images: whole batches of 8 only, as the accuracy pass batched them
    assert check == {"images": 24, "first_batch": 1, "agree": 0.0, "top1": 100.0, "top1_first_batch1": 0.0}
    stable = {**records, "top1": (9 - np.arange(30) % 10).astype(np.uint8)}
    assert first_shape_check(job, _Loader(), None, x, y, stable)["agree"] == 100.0
