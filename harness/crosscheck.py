"""`harness crosscheck RUN_DIR [--cells GLOB]`: would the runtime's own benchmark tool give the same latency?

Each ok cell's own artifact is timed at batch 1 and the run's thread count by the harness's loop (the timed
region of a run: load, prepare once, settle, per-call samples) and by the runtime vendor's tool
(harness/vendor.py), in alternating blocks in one process per cell (the cell's own interpreter). The host of
these VMs moves in phases of seconds (the same benchmark_app command gave 112 us and 181 us minutes apart), so
the figure is the median of per-pair ratios harness / vendor, each pair's two blocks back to back and their
order alternating, with the range of the ratios. Results go to RUN_DIR/crosscheck/<cell>.json, never over an
earlier one without --force; the report reads them into each cell's `crosscheck`.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness.errors import UserError

SCHEMA_VERSION = 1
PAIRS, BLOCK_S = 6, 1.0
BAND = (0.95, 1.05)  # ratios outside it are flagged in the report


def add_parser(sub) -> None:
    p = sub.add_parser("crosscheck", help="re-time each ok cell's artifact with the runtime's own benchmark tool, "
                       "interleaved with the harness's loop")
    p.add_argument("run_dir", help="a run folder: results/<target>/<run id>")
    p.add_argument("--cells", default="*", help="glob over cell names, e.g. 'resnet20__openvino__*' (default: all)")
    p.add_argument("--pairs", type=int, default=PAIRS, help=f"interleaved harness/vendor pairs (default {PAIRS})")
    p.add_argument("--block", type=float, default=BLOCK_S, help=f"seconds per block (default {BLOCK_S:g})")
    p.add_argument("--force", action="store_true", help="redo cells that already have a crosscheck")


def cmd_crosscheck(args) -> int:
    from harness.progress import console

    if args.pairs < 5 or args.block <= 0:
        raise UserError(f"--pairs {args.pairs} / --block {args.block}: expected at least 5 pairs and a positive "
                        "block length")
    rows = crosscheck(Path(args.run_dir), args.cells, args.pairs, args.block, args.force, console.print)
    console.print(table(rows))
    return 0


def crosscheck(run_dir: Path, pattern: str, pairs: int, block_s: float, force: bool, say=print) -> list[dict]:
    from harness.results import load_cells, write_json

    if not (run_dir / "run.json").is_file():
        raise UserError(f"{run_dir}: no run.json; expected a run folder such as results/<target>/<run id>")
    cells = [c for c in load_cells(run_dir) if c["status"] == "ok" and fnmatch.fnmatch(Path(c["_path"]).stem, pattern)]
    if not cells:
        raise UserError(f"--cells {pattern!r}: no ok cell of {run_dir} matches")
    rows = []
    for c in cells:
        stem = Path(c["_path"]).stem
        out = run_dir / "crosscheck" / f"{stem}.json"
        if out.exists() and not force:
            say(f"skip {stem}: already cross-checked ({out}; --force redoes it)")
            rows.append(json.loads(out.read_text()))
            continue
        say(f"crosscheck {stem} ({pairs} pairs of {block_s:g} s blocks)")
        result = run_one(run_dir, c, pairs, block_s)
        if result is not None:
            write_json(out, result, overwrite=force)
            rows.append(result)
    return rows


def run_one(run_dir: Path, cell: dict, pairs: int, block_s: float) -> dict | None:
    """One cell in its own process and interpreter (a backend's environment where it has one)."""
    from harness.runner import worker_env

    stem = Path(cell["_path"]).stem
    job_path = run_dir / "logs" / f"{stem}.job.json"
    job = json.loads(job_path.read_text()) if job_path.is_file() else None
    meta = Path(job["paths"]["workdir"]) / "artifact.json" if job else None
    base = {"schema_version": SCHEMA_VERSION, "cell": stem, "cell_p50_ms": cell["latency_ms"]["p50"]}
    if meta is None or not meta.is_file():
        return {**base, "tool": None, "reason": f"artifact not found ({meta or job_path}): re-run the cell"}
    python = interpreter(run_dir, cell["backend"])
    if isinstance(python, str):
        return {**base, "tool": None, "reason": python}
    tmp = run_dir / "crosscheck" / f".{stem}.{time.monotonic_ns()}.json"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(python or sys.executable), "-m", "harness.crosscheck", str(job_path), str(meta),
                           str(tmp), str(pairs), str(block_s)], env=worker_env(job["threads"], python),
                          capture_output=True, text=True, timeout=pairs * (4 * block_s + 60) + 300)
    if proc.returncode != 0 or not tmp.is_file():
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:]
        return {**base, "tool": None, "reason": f"crosscheck process failed: {tail[0] if tail else proc.returncode}"}
    result = json.loads(tmp.read_text())
    tmp.unlink()
    return {**base, **result}


def interpreter(run_dir: Path, backend: str) -> Path | str | None:
    """None: this interpreter; a Path: the backend's environment; a str: why that is not available."""
    from harness import envs
    from harness.config import load_target
    from harness.data.cifar10 import cache_dir
    from harness.results import read_json

    run = read_json(run_dir / "run.json", "run", 1)
    try:
        target = load_target(run["target"].get("path") or run["target"]["name"])
    except UserError:
        return None
    env = target.environment_of(backend)
    if env is None:
        return None
    return envs.python_of(env, cache_dir()) or f"environment '{env.name}' not installed (a run creates it)"


def cell_process(job: dict, meta: Path, pairs: int, block_s: float) -> dict:
    """Inside the cell's interpreter: one batch-1 instance as a run times it, then the interleaved pairs."""
    from harness import measure
    from harness.backends import get_backend
    from harness.phases import load_artifact, test_inputs
    from harness.vendor import TOOLS, NoTool

    backend = get_backend(job["backend"], job["device"], job["variant"])
    artifact = load_artifact(job, meta)
    x1 = np.ascontiguousarray(test_inputs(job)[:1])
    session = backend.load(artifact, job["threads"], 1)
    inp = session.prepare(x1)
    warm = measure.warm_up(session.run, inp, job["settings"]["warmup"], job["settings"]["warmup_s"])
    try:
        tool = TOOLS[job["backend"]](job, artifact, session, inp, x1)
    except NoTool as exc:
        return {"tool": None, "reason": str(exc)}
    try:
        rows = interleave(tool, session.run, inp, pairs, block_s, warm["s"] / warm["calls"])
        head = {"tool": tool.NAME, "version": tool.version(), "command": tool.command(), "means": tool.MEANS}
    finally:
        tool.close()
    return {**head, **summarize(rows, tool.STATISTIC), "threads": job["threads"], "batch": 1,
            "harness_config": session.config, "vendor_config": rows[0].pop("config", None),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def interleave(tool, run, inp, pairs: int, block_s: float, call_s: float) -> list[dict]:
    """Pairs of blocks back to back, harness first in even pairs and vendor first in odd ones. Where the runtime
    reports its own per-call time, half a block of it follows each harness block (same instance)."""
    from harness import measure

    rows = []
    for i in range(pairs):
        got: dict = {}
        for step in ("harness", "vendor") if i % 2 == 0 else ("vendor", "harness"):
            if step == "harness":
                measure.timed_loop(run, inp, 0, block_s / 4, 1)  # settle, as a run's blocks do (phases.py)
                got[step] = measure.timed_loop(run, inp, 0, block_s, 1)
                got["runtime"] = tool.runtime_block(block_s / 2)
            else:
                got[step] = tool.block(block_s, call_s)
        rows.append(pair_row(got, i))
    return rows


def pair_row(got: dict, i: int) -> dict:
    v = got["vendor"]
    samples = got["harness"]
    h = chunk_median(samples, v["chunk"]) if v["statistic"] == "median" else float(np.mean(samples))
    row = {"harness_ms": round(h, 5), "vendor_ms": round(v["value_ms"], 5), "ratio": round(h / v["value_ms"], 4),
           "n": [len(samples), v["n"]], "chunk": v["chunk"], "first": "harness" if i % 2 == 0 else "vendor"}
    if got["runtime"] is not None:
        row.update({k: round(v, 5) for k, v in got["runtime"].items()})
    if "config" in v:
        row["config"] = v["config"]
    return row


def chunk_median(samples: list[float], k: int) -> float:
    """The median of means of k consecutive samples: a tool that reports block means (torch's Timer) is
    compared with the harness's samples put into the same blocks; k = 1 is the plain median."""
    a = np.asarray(samples, np.float64)
    m = len(a) // k * k
    return float(np.median(a[:m].reshape(-1, k).mean(axis=1))) if m else float(np.median(a))


def summarize(rows: list[dict], statistic: str) -> dict:
    """The median over pairs of each figure and of the per-pair ratios, with the ratios' range. The runtime's
    own time, where there is one, and the Python side of the harness's calls (each call's wall-clock time
    minus the runtime's own time of that call)."""
    ratios = [r["ratio"] for r in rows]
    ratio = float(np.median(ratios))
    vendor = round(float(np.median([r["vendor_ms"] for r in rows])), 5)
    out = {"statistic": statistic, "harness_ms": round(float(np.median([r["harness_ms"] for r in rows])), 5),
           "vendor_ms": vendor, "vendor_p50_ms": vendor if statistic == "median" else None,
           "ratio": round(ratio, 4), "ratio_range": [min(ratios), max(ratios)],
           "within_band": BAND[0] <= ratio <= BAND[1], "band": list(BAND), "pairs": rows}
    if all("runtime_ms" in r for r in rows):
        out["runtime_p50_ms"] = round(float(np.median([r["runtime_ms"] for r in rows])), 5)
        out["python_side_ms"] = round(float(np.median([r["python_side_ms"] for r in rows])), 5)
    return out


def ratio_text(xc: dict | None) -> str:
    """A cell's crosscheck as the report shows it: the ratio, ⚠ outside the band, or why there is none."""
    if not xc:
        return ""
    if xc.get("tool") is None:
        return f"no tool: {xc.get('reason')}"
    lo, hi = xc["ratio_range"]
    return f"{xc['ratio']:.2f} [{lo:.2f}–{hi:.2f}]" + ("" if xc["within_band"] else " ⚠")


def table(rows: list[dict]):
    from rich.table import Table

    t = Table(title="harness / vendor batch-1 p50 (median of interleaved pairs)")
    for col in ("cell", "tool", "statistic", "harness ms", "vendor ms", "ratio [range]", "runtime's own ms",
                "Python side ms"):
        t.add_column(col)
    for r in rows:
        has = r.get("tool") is not None
        t.add_row(r["cell"], r.get("tool") or "", r.get("statistic", ""), f"{r['harness_ms']:.4f}" if has else "",
                  f"{r['vendor_ms']:.4f}" if has else "", ratio_text(r),
                  f"{r['runtime_p50_ms']:.4f}" if r.get("runtime_p50_ms") else "",
                  f"{r['python_side_ms']:.4f}" if r.get("python_side_ms") is not None else "")
    return t


def main(argv: list[str]) -> int:
    from harness.results import write_json

    job_path, meta, out, pairs, block_s = argv
    job = json.loads(Path(job_path).read_text())
    write_json(Path(out), cell_process(job, Path(meta), int(pairs), float(block_s)), overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
