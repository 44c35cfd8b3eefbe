"""Accuracy, latency percentiles, throughput, size and memory. Raw samples are kept; statistics derive."""

from __future__ import annotations

import resource
import time

import numpy as np


def evaluate(predict, x: np.ndarray, y: np.ndarray, batch: int, n_classes: int = 10) -> tuple[dict, np.ndarray]:
    """Top-1/top-5 (percent) over all of x, per-class for up to 10 classes (CIFAR-10; ImageNet's 1000 make
    no table), and the per-sample top-1 predictions (uint16: 1000 classes)."""
    top5 = np.empty((len(x), 5), np.int64)
    for i in range(0, len(x), batch):
        scores = np.asarray(predict(x[i:i + batch]), np.float32)
        top5[i:i + batch] = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    pred = top5[:, 0]
    per_class = [round(float((pred[y == c] == c).mean() * 100), 4) if (y == c).any() else None
                 for c in range(n_classes)] if n_classes <= 10 else None
    acc = {"top1": round(float((pred == y).mean() * 100), 4),
           "top5": round(float((top5 == y[:, None]).any(axis=1).mean() * 100), 4),
           "per_class": per_class, "n": int(len(y))}
    return acc, pred.astype(np.uint8 if n_classes <= 256 else np.uint16)


def timed_loop(predict, batch: np.ndarray, warmup: int, min_duration_s: float, min_count: int) -> list[float]:
    """Warm up, then call predict until BOTH min_duration_s and min_count are reached; samples in ms."""
    for _ in range(warmup):
        predict(batch)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_count or time.perf_counter() - start < min_duration_s:
        t0 = time.perf_counter()
        predict(batch)
        samples.append(round((time.perf_counter() - t0) * 1e3, 4))  # 0.1 us: far below the noise, half the JSON
    return samples


def summarize(samples_ms: list[float]) -> dict:
    a = np.asarray(samples_ms, np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if
            len(a) > 1 else 0.0, "min": float(a.min()), "n": int(len(a))}


def throughput(samples_ms: list[float], batch: int) -> float:
    """Images per second from the median batch time (robust to the odd preempted call)."""
    return batch / (float(np.median(samples_ms)) / 1e3)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# Student t 0.975 quantiles for 1..30 degrees of freedom (beyond 30 the normal 1.96 is within 2%).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def repeat_interval(p50s: list[float]) -> dict:
    """Run-to-run interval from N processes' median latencies: their mean with a Student-t 95% interval
    (N-1 degrees of freedom). t, not bootstrap: with N = 3..10 processes a bootstrap cannot see the tails."""
    a = np.asarray(p50s, np.float64)
    n = len(a)
    half = float(T975[min(n - 1, len(T975)) - 1] * a.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    mean = float(a.mean())
    return {"value_ms": mean, "low_ms": mean - half, "high_ms": mean + half, "half_width_ms": float(half), "n": n,
            "method": "mean of per-process median latencies, Student-t 95% interval"}


def bootstrap_median_ci(samples, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): 95% percentile-bootstrap interval of the median of one process's samples."""
    a = np.asarray(samples, np.float64)
    rng = np.random.default_rng(seed)
    meds = np.median(a[rng.integers(0, len(a), size=(n, len(a)))], axis=1)
    return float(np.median(a)), float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def latency_interval(cell: dict) -> tuple[float, float, float, str]:
    """(value, low, high, kind) of a cell's batch-1 latency: the run-to-run interval when it was measured
    with --repeat, else the within-process bootstrap interval of the median (narrower: loop noise only)."""
    iv = cell.get("latency_interval")
    if iv and iv.get("n", 0) > 1:
        return iv["value_ms"], iv["low_ms"], iv["high_ms"], "run-to-run"
    samples = cell.get("latency_samples_ms")
    if samples:
        return (*bootstrap_median_ci(samples), "within-process")
    p50 = cell["latency_ms"]["p50"]
    return p50, p50, p50, "none"


def disjoint(a: tuple, b: tuple) -> bool:
    """Two (value, low, high, ...) intervals do not overlap: the difference is outside the noise."""
    return a[2] < b[1] or b[2] < a[1]
