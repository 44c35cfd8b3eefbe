"""Report plots (matplotlib, SVG with text kept as text so files are small and deterministic)."""

from __future__ import annotations

from pathlib import Path

from harness.tables import column, p50, size_mb, top1


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "ptq-harness", "font.size": 9})
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _label(c: dict) -> str:
    return f"{column(c)} {c['precision']}"


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by one both faster (lower x) and at least as accurate (higher y)."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def accuracy_vs_latency(cells: list[dict], title: str, path: Path) -> Path:
    plt = _pyplot()
    ok = [c for c in cells if c["status"] == "ok" and top1(c) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in ok:
        ax.scatter(p50(c), top1(c), s=18)
        ax.annotate(_label(c), (p50(c), top1(c)), fontsize=6, xytext=(3, 2), textcoords="offset points")
    front = pareto([(p50(c), top1(c)) for c in ok])
    if front:
        ax.step(*zip(*front, strict=True), where="post", color="black", linewidth=1, label="Pareto front")
        ax.legend(loc="lower right")
    ax.set_xscale("log")
    ax.set(xlabel="p50 latency at batch 1 (ms, log)", ylabel="top-1 (%)", title=title)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def size_bars(cells: list[dict], title: str, path: Path) -> Path:
    plt = _pyplot()
    ok = [c for c in cells if c["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(ok) + 1))
    ax.barh([_label(c) for c in ok], [size_mb(c) for c in ok])
    ax.set(xlabel="size on disk (MB)", title=title)
    ax.invert_yaxis()
    return _save(fig, path)


def throughput_vs_batch(cells: list[dict], title: str, path: Path) -> Path:
    """Batch 1 (from the latency median) and every measured batch size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in (c for c in cells if c["status"] == "ok"):
        pts = sorted({1: 1000.0 / p50(c), **{t["batch"]: t["images_per_s"] for t in c["throughput"]}}.items())
        ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, linewidth=1, label=_label(c))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="batch size", ylabel="images/s", title=title)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def calibration_sweep(cells: list[dict], title: str, path: Path) -> Path:
    """Top-1 against the number of calibration images, one line per framework / precision / method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines: dict = {}
    for c in (c for c in cells if c["status"] == "ok" and top1(c) is not None):
        key = f"{column({**c, 'variant': ''})} {c['precision']} {c['recipe'].get('method') or 'default'}"
        lines.setdefault(key, []).append((c["calibration"]["size"], top1(c)))
    for key, pts in sorted(lines.items()):
        ax.plot(*zip(*sorted(pts), strict=True), marker="o", markersize=3, linewidth=1, label=key)
    ax.set_xscale("log")
    ax.set(xlabel="calibration images (log)", ylabel="top-1 (%)", title=f"{title}: calibration sweep")
    ax.legend(fontsize=6)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _by_op(cell: dict, batch: str) -> dict[str, float]:
    """ms a call by op type from a cell's profile; ops past the profile's top 15 as "(rest)"."""
    prof = cell["profile"]["batches"][batch]
    ops: dict[str, float] = {}
    for o in prof["ops"]:
        ops[o["op_type"]] = ops.get(o["op_type"], 0.0) + (o["ms"] or 0.0)
    ops["(rest)"] = max(prof["total_ms"] - sum(ops.values()), 0.0)
    return ops


def op_time_bars(pairs: list[tuple[dict, dict, str]], title: str, path: Path) -> Path:
    """One panel per diagnosed cell: its fp32 cell's and its own per-op profile at the batch where it gained
    least, stacked by op type (ms a call; the 7 op types that take most time across the pair, the rest together)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(pairs), 1, figsize=(7, 1.5 * len(pairs) + 0.6), squeeze=False)
    for ax, (ref, cell, batch) in zip(axes[:, 0], pairs, strict=True):
        stacks = [_by_op(ref, batch), _by_op(cell, batch)]
        totals = {k: stacks[0].get(k, 0.0) + stacks[1].get(k, 0.0) for k in {*stacks[0], *stacks[1]} - {"(rest)"}}
        keep = sorted(totals, key=lambda k: (-totals[k], k))[:7]
        for i, ops in enumerate(stacks):
            left = 0.0
            for j, k in enumerate([*keep, "(rest)"]):
                v = sum(v for n, v in ops.items() if n not in keep) if k == "(rest)" else ops.get(k, 0.0)
                ax.barh(i, v, left=left, color="lightgray" if k == "(rest)" else plt.cm.tab10(j),
                        label=k if i == 0 else None)
                left += v
        ax.set_yticks([0, 1], [f"{_label(ref)}", f"{_label(cell)}"], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"ms a call at batch {batch}, by op type", fontsize=7)
        ax.legend(fontsize=5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes[0, 0].set_title(f"{title}: where the time goes (per-op profiles)")
    fig.tight_layout()
    return _save(fig, path)
