"""`harness report`: merge runs from result folders and render templates/ into Markdown + HTML + plots."""

from __future__ import annotations

import re
from pathlib import Path

from harness import advice, plots, tables
from harness.diagnosis import speedups, weakest
from harness.errors import UserError
from harness.results import RUN_SCHEMA_VERSION, load_cells, read_json

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def load_runs(dirs: list[Path]) -> list[dict]:
    """Every run (run.json + migrated cells) under the given folders."""
    runs = []
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"results folder {d}: not a directory")
        for manifest in sorted(d.rglob("run.json")):
            run = read_json(manifest, "run", RUN_SCHEMA_VERSION)
            run["cells"] = load_cells(manifest.parent)
            run["_dir"] = str(manifest.parent)
            runs.append(run)
    if not runs:
        raise UserError(f"no run.json under {', '.join(map(str, dirs))}: expected results/<target>/<run>/")
    return runs


def merge(runs: list[dict], strict: bool = False) -> tuple[list[dict], dict]:
    """One cell per (target, model, backend, precision, variant, recipe): the newest run's. Returns the cells
    and a table of the superseded ones (listed in the report, so nothing is hidden). strict (for publishing):
    two results for one cell are an error instead."""
    chosen: dict = {}
    superseded = []
    for run in sorted(runs, key=lambda r: r.get("created", "")):
        for cell in run["cells"]:
            key = (cell["target"], cell["model"], cell["backend"], cell["precision"], cell.get("variant", ""),
                   recipe_group(cell))
            if key in chosen:
                shown = "/".join(k for k in key if k and k != "default")
                if strict:
                    raise UserError(f"two results for {shown}: {chosen[key]['_path']} and {cell['_path']}; "
                                    "--strict wants one result per cell (drop a run, or render without --strict "
                                    "to keep the newest)")
                superseded.append(_plain_row(shown, chosen[key], cell))
            chosen[key] = cell
    table = {"title": "Superseded results (an older run's cell, replaced by a newer run's)",
             "header": ["Cell", "Older run", "Newer run (shown)"], "rows": superseded, "footnotes": []}
    return list(chosen.values()), table


def _plain_row(shown: str, old: dict, new: dict) -> list[dict]:
    runs = (old.get("run_id", old["_path"]), new.get("run_id", new["_path"]))
    return [{"text": t, "bold": False} for t in (shown, *runs)]


def md_escape(text) -> str:
    """Markdown-safe table cell text: result strings (e.g. error reasons) can never inject markup."""
    text = re.sub(r"\s+", " ", str(text))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\|*_`\[\]#])", r"\\\1", text)


def slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(parts)).strip("-").lower()


def recipe_group(cell: dict) -> str:
    """Cells made with different recipes never share a table: a sweep belongs with its base recipe."""
    return (cell.get("recipe") or {}).get("name", "default").removesuffix(" / sweep")


def section(target: str, model: str, cells: list[dict], out: Path, group: str = "default",
            max_drop: float = advice.MAX_DROP) -> dict:
    """One target x model: the Recommendation, the matrix tables and plots, the calibration sweep when there is
    one, and "Why is it slower?" when a cell has a diagnosis."""
    here = [c for c in cells if not tables.is_sweep(c)]
    swept = [c for c in cells if tables.is_sweep(c)]
    suffix = () if group == "default" else (group,)
    name, stem = f"{model} on {target}", out / "plots" / slug(target, model, *suffix)
    figs, tabs = [], []
    if here:
        figs = [("Accuracy vs latency", plots.accuracy_vs_latency(here, name, Path(f"{stem}-acc-latency.svg"))),
                ("Size on disk", plots.size_bars(here, name, Path(f"{stem}-size.svg"))),
                ("Throughput vs batch size", plots.throughput_vs_batch(here, name, Path(f"{stem}-thr.svg")))]
        tabs = [tables.matrix(here, m) for m in tables.METRICS] + [tables.comparison(here)]
        if any(c["status"] == "ok" and c["accuracy"].get("per_class") for c in here):  # CIFAR-10's 10 classes
            tabs.append(tables.per_class(here))
    why = advice.slower(here)
    pairs = _profile_pairs(here)
    if pairs:
        figs.append(("Where the time goes: fp32 vs each diagnosed cell",
                     plots.op_time_bars(pairs, name, Path(f"{stem}-ops.svg"))))
    if swept:
        figs.append(("Top-1 vs calibration size",
                     plots.calibration_sweep(swept, name, Path(f"{stem}-calibration.svg"))))
        tabs.append(tables.sweep(swept))
    return {"target": target, "model": model, "recipe": "" if group == "default" else group,
            "anchor": slug(target, model, *suffix), "tables": tabs, "summary": tables.model_summary(cells),
            "recommendation": advice.recommendation(here, max_drop) if here else None, "slower": why,
            "plots": [{"title": t, "file": p.relative_to(out).as_posix(), "svg": _inline(p)} for t, p in figs]}


def _profile_pairs(cells: list[dict]) -> list[tuple[dict, dict, str]]:
    """(fp32 cell, diagnosed cell, batch) where both have timed profiles at the batch the cell gained least."""
    out = []
    for c in cells:
        ref = tables.fp32_of(cells, c) if c["status"] == "ok" and c.get("diagnosis") else None
        gains = speedups(c, ref) if ref else {}
        batch = weakest(gains, c)
        if batch and all(((x.get("profile") or {}).get("batches") or {}).get(batch, {}).get("total_ms")
                         for x in (ref, c)):
            out.append((ref, c, batch))
    return out


def build(runs: list[dict], cells: list[dict], out: Path, max_drop: float = advice.MAX_DROP) -> dict:
    """The template context: sections per target and model, each with tables and plot files."""
    targets = sorted({c["target"] for c in cells})
    keys = sorted({(c["target"], c["model"], recipe_group(c)) for c in cells},
                  key=lambda k: (k[0], k[1], k[2] != "default", k[2]))  # the default recipe first
    sections = [section(t, m, [c for c in cells if (c["target"], c["model"], recipe_group(c)) == (t, m, g)], out, g,
                        max_drop) for t, m, g in keys]
    plain = [c for c in cells if recipe_group(c) == "default" and not tables.is_sweep(c)]
    return {"sections": sections, "cross_target": tables.cross_target(plain, targets),
            "environments": [tables.environment(r) for r in runs if any(c["_path"].startswith(r["_dir"])
                                                                       for c in cells)],
            "targets": targets, "n_cells": len(cells)}


def _inline(path: Path) -> str:
    """SVG markup for the self-contained HTML (matplotlib's own output, not user text)."""
    svg = path.read_text()
    return svg[svg.index("<svg"):]


def render(dirs: list[Path], out: Path, strict: bool = False, max_drop: float = advice.MAX_DROP) -> tuple[Path, Path]:
    import jinja2

    runs = load_runs(dirs)
    cells, superseded = merge(runs, strict)
    context = {**build(runs, cells, out, max_drop), "superseded": superseded}
    loader = jinja2.FileSystemLoader(str(TEMPLATES))
    md_env = jinja2.Environment(loader=loader, autoescape=False, keep_trailing_newline=True,
                                trim_blocks=True, lstrip_blocks=True)
    md_env.filters["md"] = md_escape
    # autoescape for every HTML template, whatever its file name ends with (.html.j2 included).
    html_env = jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True)
    html_env.filters["safe_svg"] = lambda s: jinja2.utils.markupsafe.Markup(s)
    out.mkdir(parents=True, exist_ok=True)
    md, html = out / "README.md", out / "report.html"
    md.write_text(md_env.get_template("README.md.j2").render(**context))
    html.write_text(html_env.get_template("report.html.j2").render(**context))
    return md, html
