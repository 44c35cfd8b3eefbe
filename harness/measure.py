"""Accuracy (tie-aware), latency percentiles, throughput, memory and intervals. Raw samples are kept;
statistics derive from them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

P90_MIN, P99_MIN = 10, 100  # below these sample counts p90 / p99 would be the maximum in disguise
WARMUP_CAP_S = 10.0  # the longest a warm-up waits for steady calls (an emulated fp16 call can take 3 s)
UNSTABLE = 0.10  # (max - min) / mean of the per-process medians above which a --repeat figure is flagged


class NonFinite(Exception):
    """Some outputs were NaN or inf (e.g. an fp16 overflow): argmax of such a row means nothing."""


def topk_credit(scores: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the top-k credit when ties are shared: the t classes tied at the k-th score fill the s
    slots left above them, so each earns s/t (1 when above the tie, 0 below). Also whether the image was
    decided by a tie (its label is among the t > s tied classes, 0 < credit < 1): a stable argsort would have
    handed such a tie to the lowest class index."""
    k = min(k, scores.shape[1])
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    greater = (scores > kth[:, None]).sum(axis=1)
    tied = (scores == kth[:, None]).sum(axis=1)
    slots = k - greater
    own = scores[np.arange(len(y)), y]
    credit = np.where(own > kth, 1.0, np.where(own == kth, slots / tied, 0.0))
    return credit, (credit > 0) & (credit < 1)


def evaluate(predict, x, y: np.ndarray, batch: int, n_classes: int = 10,
             top_k: tuple[int, ...] = (1, 5)) -> tuple[dict, dict]:
    """Tie-aware top-1/top-5 and every k of top_k (percent) over all of x, per-class top-1 for up to 10
    classes (ImageNet's 1000 make no table), the images whose top-1/top-5 was decided by a tie, and per-image
    records: top1 (argmax, lowest index on a tie, for agreement), credit1 (that image's top-1 credit), tied1."""
    ks = sorted({1, 5, *top_k})
    credit = {k: np.empty(len(x)) for k in ks}
    ambiguous = {k: np.zeros(len(x), bool) for k in ks}
    pred = np.empty(len(x), np.int64)
    bad = 0
    for i in range(0, len(x), batch):
        scores = np.asarray(predict(x[i:i + batch]), np.float32)
        finite = np.isfinite(scores).all(axis=1)
        bad += int((~finite).sum())
        scores = np.where(np.isfinite(scores), scores, -np.inf)
        pred[i:i + batch] = scores.argmax(axis=1)
        for k in ks:
            credit[k][i:i + batch], ambiguous[k][i:i + batch] = topk_credit(scores, y[i:i + batch], k)
    if bad:
        raise NonFinite(f"{bad} of {len(x)} images gave non-finite outputs (NaN/inf); their argmax would "
                        "score as class 0")
    per_class = [round(float(credit[1][y == c].mean() * 100), 4) if (y == c).any() else None
                 for c in range(n_classes)] if n_classes <= 10 else None
    acc = {"top1": _pct(credit[1]), "top5": _pct(credit[5]), "per_class": per_class, "n": int(len(y)),
           # the run's top_k (a card's, default 1 and 5); k beyond the class count would be 100% by definition
           "topk": {str(k): _pct(credit[k]) for k in sorted({1, *top_k}) if k <= n_classes},
           "ties": {"top1": int(ambiguous[1].sum()), "top5": int(ambiguous[5].sum())},
           # what a tie-breaking rule could have reported: every tie lost .. every tie won
           "top1_range": [_pct(np.floor(credit[1])), _pct(np.ceil(credit[1]))],
           "top5_range": [_pct(np.floor(credit[5])), _pct(np.ceil(credit[5]))]}
    records = {"top1": pred.astype(np.uint8 if n_classes <= 256 else np.uint16),
               "credit1": credit[1].astype(np.float32), "tied1": ambiguous[1]}
    return acc, records


def _pct(values: np.ndarray) -> float:
    return round(float(values.mean() * 100), 4)


def warm_up(run, inp, calls: int, seconds: float, cap_s: float = WARMUP_CAP_S) -> dict:
    """Call run(inp) until at least `calls` calls and `seconds` have passed AND the median of the last 10 calls
    is within 3% of the 10 before (steady), or cap_s passed. A fresh process is not steady at once: torch eager
    at batch 64 ran 1500 img/s for its first 10 calls and 1900 after 40 (the allocator still faulting in
    ~900 pages a call), so a fixed count of calls measured the ramp."""
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run(inp)
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        steady = len(times) >= 20 and abs(np.median(times[-10:]) / np.median(times[-20:-10]) - 1) <= 0.03
        if (len(times) >= calls and elapsed >= seconds and steady) or elapsed >= cap_s:
            return {"calls": len(times), "s": round(elapsed, 3), "steady": bool(steady)}


def warm_up_if_asked(run, inp, calls: int, seconds: float) -> dict:
    """warm_up, or its record of no warm-up when neither calls nor seconds are asked for."""
    return warm_up(run, inp, calls, seconds) if calls or seconds else {"calls": 0, "s": 0.0, "steady": None}


def timed_loop(run, inp, warmup: int, min_duration_s: float, min_count: int, warmup_s: float = 0.0,
               record: dict | None = None) -> list[float]:
    """Warm up (see warm_up; what it took goes into `record`), then call run(inp) until BOTH min_duration_s
    and min_count are reached; samples in ms. inp is prepared once by the caller (Session.prepare), so only
    the runtime call is inside the clock."""
    info = warm_up_if_asked(run, inp, warmup, warmup_s)
    if record is not None:
        record.update(info)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_count or time.perf_counter() - start < min_duration_s:
        t0 = time.perf_counter()
        run(inp)
        samples.append(round((time.perf_counter() - t0) * 1e3, 4))  # 0.1 us: far below the noise, half the JSON
    return samples


def summarize(samples_ms: list[float]) -> dict:
    """p90 needs 10 samples and p99 100: with fewer, the percentile is the maximum sample, so it is null."""
    a = np.asarray(samples_ms, np.float64)
    out = {"p50": float(np.percentile(a, 50)),
           "p90": float(np.percentile(a, 90)) if len(a) >= P90_MIN else None,
           "p99": float(np.percentile(a, 99)) if len(a) >= P99_MIN else None, "mean": float(a.mean()),
           "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "min": float(a.min()), "n": int(len(a))}
    if len(a) < P99_MIN:
        out["note"] = f"{len(a)} samples: p99 needs {P99_MIN}" + ("" if len(a) >= P90_MIN else f", p90 {P90_MIN}")
    return out


def throughput(samples_ms: list[float], batch: int) -> float:
    """Images per second from the median batch time (robust to the odd preempted call)."""
    return batch / (float(np.median(samples_ms)) / 1e3)


def vm_hwm_bytes() -> int | None:
    """This process's own resident-memory high-water mark (VmHWM). Not getrusage's ru_maxrss: Linux carries
    that across fork + exec, so every worker would start at its runner's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def child_processes() -> list[str]:
    """The command lines of this process's live children: a timing process must have none. (IPEX's import used
    to start Inductor's compile-worker pool, which ran beside the timed loop; see runner.WORKER_ENV_DEFAULTS.)"""
    out = []
    for task in Path("/proc/self/task").glob("*/children"):
        for pid in task.read_text().split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # it ended meanwhile
                continue
            out.append(cmd.strip()[:200])
    return sorted(out)


# Student t 0.975 quantiles for 1..30 degrees of freedom; beyond 30 the last entry (2.042) is used, which
# is conservative (the limit, 1.960, is 4% lower).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def repeat_interval(p50s: list[float]) -> dict:
    """Run-to-run interval from N identical processes' median latencies: their mean with a Student-t 95%
    interval (N-1 degrees of freedom). t, not bootstrap: with N = 3..10 a bootstrap cannot see the tails."""
    a = np.asarray(p50s, np.float64)
    n = len(a)
    half = float(T975[min(n - 1, len(T975)) - 1] * a.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    mean = float(a.mean())
    # pyperf's rule of thumb: processes that disagree by more than 10% make the figure unstable; say so
    spread = float((a.max() - a.min()) / mean) if n > 1 else 0.0
    return {"value_ms": mean, "low_ms": mean - half, "high_ms": mean + half, "half_width_ms": float(half), "n": n,
            "spread": round(spread, 4), "unstable": spread > UNSTABLE,
            "method": "mean of per-process median latencies, Student-t 95% interval"}


def host_swing(timings: list[tuple[list[float], list[list]]]) -> float | None:
    """How far the host moved while the cell was timed, from the interleaved blocks (harness/baton.py):
    each round's median (one block per timing process, taken in turn), then the 10th-90th percentile range
    of the rounds over their median. Identical processes cannot see a slow phase that falls on all of them
    alike, so their agreement says nothing about the host: this does (IPEX int8 resnet20, --repeat 3: the
    processes within 1.5%, the rounds 0.275 ms for 0.4 s and 0.377 ms after). None below 5 rounds.
    timings: per process, (samples in ms, [[start, end, n], ...] blocks in order)."""
    per = []
    for samples, blocks in timings:
        ends = np.cumsum([b[2] for b in blocks])
        per.append([float(np.median(samples[e - b[2]:e])) for e, b in zip(ends, blocks, strict=True)])
    k = min(len(p) for p in per) if per else 0
    if k < 5:
        return None
    rounds = np.median(np.array([p[:k] for p in per]), axis=0)
    lo, hi = np.percentile(rounds, [10, 90])
    return round(float((hi - lo) / np.median(rounds)), 4)


def block_bootstrap_median_ci(samples, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): 95% moving-block bootstrap interval of one process's median. Consecutive samples
    are correlated (frequency, cache and scheduler states last longer than one call), so blocks of about
    n^(1/3) consecutive samples are resampled instead of single samples, which would understate the noise."""
    a = np.asarray(samples, np.float64)
    size = max(1, round(len(a) ** (1 / 3)))
    blocks = -(-len(a) // size)
    rng = np.random.default_rng(seed)
    meds = []
    for chunk in range(0, n, 100):  # 100 resamples at a time: bounded memory for 10^5 samples
        starts = rng.integers(0, len(a) - size + 1, size=(min(100, n - chunk), blocks))
        idx = (starts[..., None] + np.arange(size)).reshape(len(starts), -1)[:, :len(a)]
        meds.append(np.median(a[idx], axis=1))
    meds = np.concatenate(meds)
    return float(np.median(a)), float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def latency_interval(cell: dict) -> tuple[float, float, float, str]:
    """(value, low, high, kind) of a cell's batch-1 latency: the run-to-run interval when it was measured
    with --repeat, else the within-process block bootstrap of the median (loop noise only: narrower)."""
    iv = cell.get("latency_interval")
    if iv and iv.get("n", 0) > 1:
        return iv["value_ms"], iv["low_ms"], iv["high_ms"], "run-to-run"
    samples = cell.get("latency_samples_ms")
    if samples:
        return (*block_bootstrap_median_ci(samples), "within-process")
    p50 = cell["latency_ms"]["p50"]
    return p50, p50, p50, "none"


def disjoint(a: tuple, b: tuple) -> bool:
    """Two (value, low, high, ...) intervals do not overlap: the difference is outside the noise."""
    return a[2] < b[1] or b[2] < a[1]
