"""Progress display (current cell, ETA) and the end-of-run summary table, with rich."""

from __future__ import annotations

from rich import progress as rp
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.measure import UNSTABLE
from harness.tables import top1_text

console = Console(stderr=True)
if not console.is_terminal:
    console.width = 160  # logs and CI: do not squeeze the summary table into 80 columns


def cell_line(cell: dict) -> str:
    if cell["status"] != "ok":
        return f"{cell['status']}: {cell.get('reason')}"
    lat = cell["latency_ms"]
    thr = cell["throughput"][-1]
    iv = cell.get("latency_interval") or {}
    warn = (f"  UNSTABLE: timing processes differ by {iv['spread']:.0%}" if iv.get("unstable") else "")
    swing = (cell.get("details") or {}).get("host_swing")
    if swing is not None and swing > UNSTABLE:
        warn += f"  HOST UNSTABLE: timing rounds swung {swing:.0%}"
    return (f"top-1 {top1_text(cell, '%')}  {cell['size_bytes'] / 1e6:.3f} MB  p50 {lat['p50']:.2f} ms  "
            f"{thr['images_per_s']:.0f} img/s @ bs{thr['batch']}{warn}")


class Progress:
    def __init__(self, total: int):
        self.bar = rp.Progress(rp.SpinnerColumn(), rp.TextColumn("{task.description}"), rp.BarColumn(),
                               rp.MofNCompleteColumn(), rp.TimeElapsedColumn(), rp.TextColumn("ETA"),
                               rp.TimeRemainingColumn(), console=console, transient=True)
        self.total = total

    def __enter__(self):
        self.bar.__enter__()
        self.task = self.bar.add_task("starting", total=self.total)
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def say(self, text: str) -> None:
        self.bar.console.print(escape(text))

    def start(self, label: str) -> None:
        self.bar.update(self.task, description=label)

    def done(self, label: str, cell: dict, skipped: bool = False, seconds: float = 0.0) -> None:
        if skipped:
            self.bar.console.print(f"[dim]skip {label} (finished earlier: {cell['status']})[/dim]")
        else:
            self.bar.console.print(f"{escape(label)}: {escape(cell_line(cell))}  [dim]({seconds:.0f} s)[/dim]",
                                   markup=True, highlight=False)
        self.bar.advance(self.task)


def summary(cells: list[dict], title: str, wall_s: float | None = None) -> Table:
    """Every cell's figures and its share of the run's wall time (what to cut when a run is too slow)."""
    table = Table(title=title)
    for col in ("model", "backend", "precision", "status", "top-1 %", "size MB", "p50 ms bs1", "img/s", "cell s",
                "% of wall"):
        table.add_column(col, justify="left" if col in ("model", "backend", "precision", "status") else "right")
    for c in cells:
        if c["status"] == "ok":
            thr = c["throughput"][-1]
            nums = (top1_text(c), f"{c['size_bytes'] / 1e6:.3f}",
                    f"{c['latency_ms']['p50']:.2f}", f"{thr['images_per_s']:.0f} @{thr['batch']}")
        else:
            nums = ("", "", "", "")
        precision = c["precision"] + (f" ({c['variant']})" if c.get("variant") else "")
        secs = c.get("duration_s") or 0.0
        share = f"{secs / wall_s:.0%}" if wall_s else ""
        table.add_row(c["model"], c["backend"], precision, c["status"], *nums, f"{secs:.0f}", share)
    return table


def wall_line(cells: list[dict], wall_s: float, slowest: int = 5) -> str:
    """The run's wall time and its slowest cells with their shares."""
    top = sorted(cells, key=lambda c: -(c.get("duration_s") or 0))[:slowest]
    cell_s = sum(c.get("duration_s") or 0 for c in cells)
    parts = [f"{c['model']}/{c['backend']}/{c['precision']} {c.get('duration_s') or 0:.0f} s "
             f"({(c.get('duration_s') or 0) / wall_s:.0%})" for c in top]
    return (f"wall time {wall_s / 60:.1f} min for {len(cells)} cells ({cell_s / 60:.1f} min in cells); "
            f"slowest: {', '.join(parts)}")
