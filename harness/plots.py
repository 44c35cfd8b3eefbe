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
