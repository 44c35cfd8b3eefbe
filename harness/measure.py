"""Accuracy, latency percentiles, throughput, size and memory. Raw samples are kept; statistics derive."""

from __future__ import annotations

import resource
import time

import numpy as np


def evaluate(predict, x: np.ndarray, y: np.ndarray, batch: int) -> tuple[dict, np.ndarray]:
    """Top-1/top-5/per-class (percent) over all of x, and the per-sample top-1 predictions."""
    top5 = np.empty((len(x), 5), np.int64)
    for i in range(0, len(x), batch):
        scores = np.asarray(predict(x[i:i + batch]), np.float32)
        top5[i:i + batch] = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    pred = top5[:, 0]
    per_class = [round(float((pred[y == c] == c).mean() * 100), 4) if (y == c).any() else None
                 for c in range(10)]
    acc = {"top1": round(float((pred == y).mean() * 100), 4),
           "top5": round(float((top5 == y[:, None]).any(axis=1).mean() * 100), 4),
           "per_class": per_class, "n": int(len(y))}
    return acc, pred.astype(np.uint8)


def timed_loop(predict, batch: np.ndarray, warmup: int, min_duration_s: float, min_count: int) -> list[float]:
    """Warm up, then call predict until BOTH min_duration_s and min_count are reached; samples in ms."""
    for _ in range(warmup):
        predict(batch)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_count or time.perf_counter() - start < min_duration_s:
        t0 = time.perf_counter()
        predict(batch)
        samples.append((time.perf_counter() - t0) * 1e3)
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
