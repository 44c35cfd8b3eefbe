"""The answer at the top of each report section ("which one should I pick?") and the "Why is it slower?" table:
plain data (header, rows, footnotes) like harness.tables, from the cells' measured figures and diagnoses."""

from __future__ import annotations

from harness.diagnosis import MIN_SPEEDUP, REFERENCE_SHARE, reference_names, speedups, weakest
from harness.stats import ALPHA
from harness.tables import PRECISION_LABELS, _plain, best_throughput, column, fp32_of, p50, size_mb, top1, top1_text

MAX_DROP = 0.5  # top-1 points a pick may lose against its fp32 cell when the loss is significant
TOP_OPS = 5


def label(c: dict) -> str:
    return f"{column(c)} {PRECISION_LABELS[c['precision']]}"


def drop(c: dict, cells: list[dict]) -> tuple[float | None, float | None]:
    """(top-1 points lost against the same backend's fp32 cell, McNemar's p); (0, None) for an fp32 cell."""
    if c["precision"] == "fp32":
        return 0.0, None
    d = c["accuracy"].get("delta_vs_fp32")
    if d:
        return -d["points"], d.get("p_value")
    ref = fp32_of(cells, c)
    return ((top1(ref) - top1(c)), None) if ref and top1(ref) is not None and top1(c) is not None else (None, None)


def keeps_accuracy(c: dict, cells: list[dict], max_drop: float) -> bool:
    """Its drop is within max_drop points, or not significant (McNemar p >= ALPHA)."""
    points, p = drop(c, cells)
    return points is not None and (points <= max_drop or (p is not None and p >= ALPHA))


def _drop_text(c: dict, cells: list[dict]) -> str:
    points, p = drop(c, cells)
    if c["precision"] == "fp32" or points is None:
        return "the fp32 reference" if c["precision"] == "fp32" else "no fp32 cell to compare"
    return f"top-1 {top1_text(c)}%, Δ {-points:+.2f}" + (f" (p={p:.2g})" if p is not None else "")


def _lost(cells: list[dict]) -> list[str]:
    """The "obvious" choices that lost: each diagnosed cell, its speed against its fp32, its rules."""
    out = []
    for c in cells:
        if c["status"] == "ok" and c.get("diagnosis"):
            ref = fp32_of(cells, c)
            shown = ", ".join(f"{v:.2f}x at batch {b}" for b, v in (speedups(c, ref) if ref else {}).items())
            out.append(f"{label(c)} ran {shown} against its fp32 ({', '.join(d['rule'] for d in c['diagnosis'])}; "
                       "see Why is it slower?)")
    return out


def _why(c: dict, cells: list[dict], ranked: list[dict], figure) -> str:
    """Its gain over its own fp32 and the runner-up it beat."""
    ref = fp32_of(cells, c)
    gains = speedups(c, ref) if ref and c is not ref else {}
    own = ", ".join(f"{v:.2f}x its fp32 at batch {b}" for b, v in gains.items()) or "an fp32 cell"
    runner = next((r for r in ranked if r is not c), None)
    return own + (f"; next: {label(runner)} {figure(runner)}" if runner else "")


def recommendation(cells: list[dict], max_drop: float = MAX_DROP) -> dict | None:
    """The fastest cell at batch 1 and at the largest batch, and the smallest, among those that keep accuracy;
    the fastest overall with its accuracy cost."""
    ok = [c for c in cells if c["status"] == "ok" and c.get("latency_ms") and c.get("throughput")]
    if not ok:
        return None
    measured = [c for c in ok if top1(c) is not None]
    kept = [c for c in measured if keeps_accuracy(c, cells, max_drop)]
    picks = []
    if kept:
        batch = max(t["batch"] for c in kept for t in c["throughput"])
        picks = [("Fastest at batch 1", sorted(kept, key=p50), lambda c: f"p50 {p50(c):.3f} ms"),
                 (f"Fastest at batch {batch}", sorted(kept, key=lambda c: -best_throughput(c)),
                  lambda c: f"{best_throughput(c):.0f} images/s"),
                 ("Smallest", sorted(kept, key=lambda c: c["size_bytes"]), lambda c: f"{size_mb(c):.3f} MB")]
    picks.append(("Fastest overall (batch 1)", sorted(ok, key=p50), lambda c: f"p50 {p50(c):.3f} ms"))
    rows = []
    for name, ranked, figure in picks:
        c = ranked[0]
        acc = _drop_text(c, cells) if top1(c) is not None else "accuracy not measured"
        if name.startswith("Fastest overall") and top1(c) is not None and c not in kept:
            p = drop(c, cells)[1]
            acc += f": not a pick above (loses more than {max_drop:g} points" + (
                ", significantly)" if p is not None else "; no paired test recorded for this cell)")
        rows.append(_plain(name, label(c), figure(c), acc, _why(c, cells, ranked, figure)))
    notes = [f"Picks keep accuracy: top-1 within {max_drop:g} points of the same framework's fp32 cell, or a drop "
             f"McNemar's exact test finds not significant (p >= {ALPHA}); harness report --max-drop sets the points."]
    if not measured:
        notes.append("No cell of this section has a measured top-1: the picks are by speed and size alone.")
    return {"title": "Recommendation", "header": ["Pick", "Cell", "Figure", "Accuracy", "Why"], "rows": rows,
            "footnotes": notes + _lost(cells)}


def slower(cells: list[dict]) -> dict | None:
    """One row per diagnosed cell: its speed against fp32, what each rule found, its top ops."""
    rows = []
    for c in cells:
        if c["status"] != "ok" or not c.get("diagnosis"):
            continue
        ref = fp32_of(cells, c)
        gains = speedups(c, ref) if ref else {}
        batch = weakest(gains, c)
        prof = ((c.get("profile") or {}).get("batches") or {}).get(batch) or {}
        ops = ", ".join(f"{o['op_type']} ({o['precision']}) " + (f"{o['share'] * 100:.0f}%" if o["share"] is not None
                                                                  else f"x{o['count']}")
                        for o in prof.get("ops", [])[:TOP_OPS])
        for i, d in enumerate(c["diagnosis"]):
            first = i == 0
            rows.append(_plain(label(c) if first else "",
                               ", ".join(f"{v:.2f}x @{b}" for b, v in gains.items()) if first else "",
                               d["rule"], d["evidence"], d["advice"], ops if first else ""))
    if not rows:
        return None
    header = ["Cell", "Speed vs fp32", "Rule", "Evidence (measured)", "Advice", "Top ops at the slowest batch"]
    return {"title": "Diagnosis of each quantized cell not faster than fp32", "header": header, "rows": rows,
            "footnotes": [f"Every quantized or reduced-precision cell less than {MIN_SPEEDUP}x faster than its "
                          "framework's fp32 cell at batch 1 or at the largest batch (harness/diagnosis.py); "
                          "evidence from the cell's per-op profile (harness run --profile), its artifact and "
                          "the CPU flags in run.json.", *slow_references(cells)]}


def slow_references(cells: list[dict]) -> list[str]:
    """fp32 cells whose profile spent REFERENCE_SHARE or more of a batch's op time in reference kernels: their
    framework's speedups at that batch are against a portable path (torch eager fp32 at batch 1 on resnet20:
    PyTorch leaves small fp32 convolutions to aten::_slow_conv2d_forward, 69-84% of the op time)."""
    notes = []
    for c in (c for c in cells if c["precision"] == "fp32" and c["status"] == "ok"):
        for batch, prof in ((c.get("profile") or {}).get("batches") or {}).items():
            share = (prof.get("shares") or {}).get("reference") or 0.0
            if share >= REFERENCE_SHARE:
                notes.append(f"The reference itself: {label(c)} at batch {batch} spent {share * 100:.0f}% of its op "
                             f"time in reference kernels ({', '.join(reference_names(prof))}); its framework's "
                             "speedups at that batch are against that portable path.")
    return notes
