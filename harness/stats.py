"""Significance of accuracy figures: Wilson intervals, McNemar's exact test on paired predictions, and the
seeded class-stratified test subset a time-budgeted accuracy pass uses. scipy does the arithmetic."""

from __future__ import annotations

import numpy as np

ALPHA = 0.05  # a delta with p >= ALPHA is printed "(n.s.)"
SUBSET_SEED = 0  # one seed for every cell, so budgeted cells of a run share their images as far as sizes allow


def wilson(correct: float, n: int) -> list[float] | None:
    """Wilson 95% interval of a top-1 (percent) over n images: stays inside [0, 100] and is honest near the
    ends, where the normal approximation is not (0 of 10 correct: [0, 27.75]%). correct may be tie-aware
    (fractional): it is rounded to whole images."""
    from scipy.stats import binomtest

    if n <= 0:
        return None
    ci = binomtest(int(round(correct)), n).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(float(ci.low) * 100, 4), round(float(ci.high) * 100, 4)]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b images right only in A and c right only in B: under no
    difference each discordant image is a fair coin, so it is the binomial test of b in b + c at 0.5."""
    from scipy.stats import binomtest

    return 1.0 if b + c == 0 else float(binomtest(int(b), int(b + c), 0.5).pvalue)


def paired_delta(correct: np.ndarray, ref_correct: np.ndarray, credit: np.ndarray | None = None,
                 ref_credit: np.ndarray | None = None) -> dict:
    """A cell against its reference on the same images. points: the top-1 change (tie-aware credit when
    given, else plain correctness); discordant [b, c]: images the reference got right and this cell wrong,
    and the reverse; p_value: McNemar's exact test on them."""
    correct, ref_correct = np.asarray(correct, bool), np.asarray(ref_correct, bool)
    b = int((ref_correct & ~correct).sum())
    c = int((correct & ~ref_correct).sum())
    now = correct if credit is None else credit
    was = ref_correct if ref_credit is None else ref_credit
    points = float(np.mean(now) - np.mean(was)) * 100 if len(correct) else 0.0
    return {"points": round(points, 4), "discordant": [b, c], "p_value": float(f"{mcnemar_exact(b, c):.4g}"),
            "n": int(len(correct))}


def ns_mark(delta: dict | None) -> str:
    """' (n.s.)' after a delta whose McNemar p is at least ALPHA; '' when significant or untested."""
    return " (n.s.)" if delta and delta.get("p_value") is not None and delta["p_value"] >= ALPHA else ""


def stratified_order(y: np.ndarray, seed: int = SUBSET_SEED) -> np.ndarray:
    """Every test index, ordered so that each prefix is a class-stratified random subset: within a class the
    order is a seeded permutation, and classes interleave by fractional rank (r + u) / class size, so a
    prefix of m images holds each class in proportion. Prefixes nest: a smaller subset lies inside a larger
    one, so two budgeted cells of different speeds still share their first images."""
    rng = np.random.default_rng(seed)
    key = np.empty(len(y))
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        perm = rng.permutation(idx)
        key[perm] = (np.arange(len(perm)) + rng.random(len(perm))) / len(perm)
    return np.argsort(key, kind="stable")


def stratified_subset(y: np.ndarray, m: int, seed: int = SUBSET_SEED) -> np.ndarray:
    """m test indices, class-stratified and seeded (see stratified_order), sorted ascending."""
    return np.sort(stratified_order(y, seed)[:m])


def paired(a: dict, b: dict) -> tuple[dict | None, dict | None]:
    """Two prediction records cut to the test images both hold (by `index`; a record without one covers the
    test set in order), in the same order."""
    ia = a.get("index", np.arange(len(a["top1"])))
    ib = b.get("index", np.arange(len(b["top1"])))
    common, pa, pb = np.intersect1d(ia, ib, return_indices=True)
    if not len(common):
        return None, None
    return ({k: v[pa] for k, v in a.items() if np.ndim(v) and len(v) == len(ia)},
            {k: v[pb] for k, v in b.items() if np.ndim(v) and len(v) == len(ib)})
