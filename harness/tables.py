"""Report tables as plain data (header, rows of {text, bold}, footnotes); templates only lay them out."""

from __future__ import annotations

from harness.crosscheck import BAND, ratio_text
from harness.data.cifar10 import CLASSES
from harness.measure import disjoint, latency_interval
from harness.stats import ALPHA, ns_mark

PRECISION_LABELS = {"fp32": "Float32", "fp16": "Float16", "bf16": "BFloat16", "int8": "Int8 (static)",
                    "uint8": "UInt8", "dynamic": "Dynamic range"}
# column order: the two PyTorch paths and IPEX side by side (the compiled path now does what IPEX did)
FRAMEWORKS = {"torch": "PyTorch (eager/FX, legacy)", "torch-inductor": "PyTorch (compiled)",
              "ipex": "IPEX 2.8 (last release)", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO",
              "tflite": "TFLite (Keras converter)", "litert": "LiteRT (litert-torch)", "tensorrt": "TensorRT"}
STATUS_TEXT = {"unsupported": "Not supported", "failed": "Failed", "timeout": "Timeout"}
FLAG_DROP = -3.0  # per-class points lost vs fp32 that a report flags


def column(cell: dict) -> str:
    name = FRAMEWORKS.get(cell["backend"], cell["backend"])
    return f"{name} ({cell['variant']})" if cell.get("variant") else name


def top1(c):
    """None when accuracy was not measured (an ImageNet-shaped model without published weights or val set)."""
    return c["accuracy"]["top1"]


def top1_text(c, unit: str = "") -> str:
    """† (after the unit) marks a runtime whose predictions changed with the first input shape an instance saw
    (README); ‡ a top-1 measured on a time-budgeted subset (see subset_notes)."""
    if top1(c) is None:
        return "not measured"
    check = (c.get("accuracy") or {}).get("first_shape_check") or {}
    return (f"{top1(c):.2f}{unit}" + ("†" if check.get("agree", 100.0) < 100.0 else "")
            + ("‡" if c["accuracy"].get("subset") else ""))


def subset_notes(cells: list[dict]) -> list[str]:
    """One footnote per cell whose accuracy pass ran on a subset: how many images of how many, and why."""
    out = []
    for c in cells:
        sub = c["status"] == "ok" and (c.get("accuracy") or {}).get("subset")
        if sub:
            out.append(f"‡ {c['model']} {column(c)} {PRECISION_LABELS[c['precision']]}: (n={c['accuracy']['n']:,} "
                       f"of {sub['of']:,}: {sub['reason']}; seeded class-stratified subset, seed {sub['seed']})")
    return out


def delta_text(c: dict, ref: dict) -> str:
    """Top-1 change vs the same backend's fp32, paired on the images both saw, with (n.s.) when McNemar's
    exact test finds it within noise; cells recorded before the test get the plain difference."""
    d = c["accuracy"].get("delta_vs_fp32")
    if d:
        return f"{d['points']:+.2f}{ns_mark(d)}"
    agree = c["accuracy"].get("agree_fp32")  # without labels, agreement with fp32 is the fidelity left
    return (f"{top1(c) - top1(ref):+.2f}" if top1(c) is not None and top1(ref) is not None
            else f"agrees {agree:.1f}%" if agree is not None else "n/a")


def ci_text(c: dict) -> str:
    """Wilson 95% interval of the top-1 (cells recorded before it was stored get it by migration)."""
    ci = c["accuracy"].get("top1_ci95")
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "n/a"


def size_mb(c):
    return c["size_bytes"] / 1e6


def p50(c):
    return c["latency_ms"]["p50"]


def best_throughput(c):
    """images/s at the largest batch measured."""
    return max(c["throughput"], key=lambda t: t["batch"])["images_per_s"]


METRICS = {  # key: (title, value, format, higher is better)
    "top1": ("Top-1 accuracy (%)", top1, "{:.2f}", True),
    "size": ("Size on disk (MB)", size_mb, "{:.3f}", False),
    "latency": ("Latency at batch 1: p50 ms (p90); with --repeat: mean of per-process p50s ± 95% t half-width", p50,
                "{:.2f}", False),
    "throughput": ("Throughput (images/s at the largest batch)", best_throughput, "{:.0f}", True),
}


def _text(cell: dict, metric: str) -> str:
    _, value, fmt, _ = METRICS[metric]
    if value(cell) is None:
        return "not measured"
    text = fmt.format(value(cell))
    if metric == "latency":
        iv = cell.get("latency_interval") or {}
        if iv.get("n", 0) > 1:  # --repeat: mean of per-process medians ± the t half-width
            text = f"{iv['value_ms']:.3f} ±{iv['half_width_ms']:.3f}"
        p90 = cell["latency_ms"].get("p90")
        text += f" ({p90:.2f})" if p90 is not None else " (p90: <10 samples)"
    if metric == "throughput":
        text += f" @{max(t['batch'] for t in cell['throughput'])}"
    return text


def _order(cell: dict) -> tuple:
    known = list(FRAMEWORKS)
    return (known.index(cell["backend"]) if cell["backend"] in known else len(known), cell["backend"],
            cell.get("variant", ""))


def matrix(cells: list[dict], metric: str) -> dict:
    """The seed-style table: rows precisions, columns frameworks; best per row bold; reasons footnoted
    (listed under the top-1 table; the other tables of a section use the same numbers)."""
    title, value, _, higher = METRICS[metric]
    cols = list(dict.fromkeys(column(c) for c in sorted(cells, key=_order)))
    rows, notes = [], []
    for precision, label in PRECISION_LABELS.items():
        here = {column(c): c for c in cells if c["precision"] == precision}
        if not here:
            continue
        ok = [value(c) for c in here.values() if c["status"] == "ok" and value(c) is not None]
        best = (max(ok) if higher else min(ok)) if ok else None
        row = [{"text": label, "bold": False}]
        for col in cols:
            c = here.get(col)
            if c is None:
                row.append({"text": "", "bold": False})
            elif c["status"] != "ok":
                notes.append(f"{col} {label}: {c.get('reason') or c['status']}")
                row.append({"text": f"{STATUS_TEXT[c['status']]} [{len(notes)}]", "bold": False})
            else:
                row.append({"text": _text(c, metric), "bold": best is not None and value(c) == best})
        rows.append(row)
    unmeasured = {c["accuracy"].get("not_measured") for c in cells if c["status"] == "ok" and value(c) is None}
    notes += sorted(f"accuracy not measured: {why}" for why in unmeasured if why)
    notes += subset_notes(cells) if metric == "top1" else []
    if notes and metric != "top1":
        notes = ["reasons [1]..[n]: see the top-1 accuracy table above"]
    return {"title": title, "header": ["Precision", *cols], "rows": rows, "footnotes": notes,
            "numbered": metric == "top1", "legend": legend(cells) if metric == "top1" else []}


def model_summary(cells: list[dict]) -> str:
    """The model in numbers (from its fp32 module, the same in every cell) and where it came from."""
    info = next((c.get("model_info") or {} for c in cells if (c.get("model_info") or {}).get("params")), {})
    if not info:
        return ""
    batch = max((t["batch"] for c in cells if c["status"] == "ok" for t in c.get("throughput") or []), default=64)
    macs = info.get("macs_per_image")
    text = f"{info['params']:,} parameters"
    if macs:
        text += f"; {macs / 1e6:,.2f} M multiply-accumulates per image, {macs * batch / 1e9:,.2f} G per batch of " \
                f"{batch}"
    if info.get("card"):
        text += f"; model card {info['card'].rsplit('/', 1)[-1]} ({info.get('source')}" + (
            f", {info['license']}" if info.get("license") else "") + ")"
    return text


def legend(cells: list[dict]) -> list[str]:
    """What each column is, where its backend carries a note (a legacy API, a last release, a converter)."""
    from harness.backends import BACKENDS

    names = dict.fromkeys(c["backend"] for c in sorted(cells, key=_order))
    return [f"{FRAMEWORKS.get(n, n)}: {BACKENDS[n].NOTE}" for n in names if n in BACKENDS and BACKENDS[n].NOTE]


def fp32_of(cells: list[dict], cell: dict) -> dict | None:
    return next((c for c in cells if c["backend"] == cell["backend"] and c["precision"] == "fp32"
                 and not c.get("variant") and c["status"] == "ok"), None)


def _plain(*texts) -> list[dict]:
    return [{"text": t, "bold": False} for t in texts]


def significant(a: dict, b: dict) -> bool:
    """Latency intervals of two cells do not overlap (see measure.latency_interval for which interval)."""
    return disjoint(latency_interval(a), latency_interval(b))


def comparison(cells: list[dict]) -> dict:
    rows = []
    ok = [c for c in cells if c["status"] == "ok"]
    checked = any(c.get("crosscheck") for c in ok)  # `harness crosscheck` ran on this run
    for c in sorted(ok, key=lambda c: (top1(c) is None, -(top1(c) or 0), column(c))):
        ref = fp32_of(cells, c)
        if ref is None:
            delta = reduction = lat = thr = "n/a"
        else:
            delta = "" if c is ref else delta_text(c, ref)
            reduction = f"{(1 - c['size_bytes'] / ref['size_bytes']) * 100:.1f}"
            lat = f"{p50(ref) / p50(c):.2f}x" + ("" if c is ref or significant(c, ref) else " (n.s.)")
            thr = f"{best_throughput(c) / best_throughput(ref):.2f}x"
        rows.append(_plain(column(c), PRECISION_LABELS[c["precision"]], top1_text(c), ci_text(c), delta,
                           f"{size_mb(c):.3f}", reduction, lat, thr) + (_plain(ratio_text(c.get("crosscheck")))
                                                                         if checked else []))
    header = ["Framework", "Precision", "Top-1 %", "Top-1 95% CI", "Δ vs fp32", "Size MB", "Size reduction %",
              "Speedup (latency)", "Speedup (throughput)"] + (["Harness / vendor p50"] if checked else [])
    kinds = sorted({latency_interval(c)[3] for c in cells if c["status"] == "ok"} - {"none"})
    note = [f"n.s.: the two latency intervals overlap, so the speedup is not significant (intervals: "
            f"{', '.join(kinds)}; run-to-run needs --repeat 2 or more, within-process understates the noise)"]
    note = note if kinds else []
    note += [f"(n.s.) after a Δ: McNemar's exact test on the images only one of the two cells gets right gives "
             f"p >= {ALPHA}: the change is within noise. Top-1 95% CI: Wilson interval"] + subset_notes(cells)
    if checked:
        note.append(f"Harness / vendor p50: batch-1 median by the harness's loop over the runtime's own benchmark "
                    f"tool's (benchmark_app, litert-benchmark, onnxruntime_test: a mean, torch's Timer) on the same "
                    f"artifact, median [range] of interleaved pairs (harness crosscheck); ⚠ outside "
                    f"[{BAND[0]}, {BAND[1]}]")
    return {"title": "Comparison (sorted by top-1)", "header": header, "rows": rows, "footnotes": note}


def is_sweep(cell: dict) -> bool:
    return cell.get("variant", "").startswith("cal")


def sweep(cells: list[dict]) -> dict | None:
    """Top-1 per calibration size (columns) for each framework, precision and method (rows)."""
    cells = [c for c in cells if is_sweep(c)]
    if not cells:
        return None
    sizes = sorted({c["calibration"]["size"] for c in cells})
    keyed: dict = {}
    for c in cells:
        key = (FRAMEWORKS.get(c["backend"], c["backend"]), PRECISION_LABELS[c["precision"]],
               c["recipe"].get("method") or "default")
        keyed.setdefault(key, {})[c["calibration"]["size"]] = c
    rows = []
    for key, per in sorted(keyed.items()):
        if not any(c["status"] == "ok" for c in per.values()):
            continue  # e.g. a precision this backend never runs: said in the main tables
        row = _plain(*key)
        for n in sizes:
            c = per.get(n)
            row += _plain("" if c is None else top1_text(c) if c["status"] == "ok" else STATUS_TEXT[c["status"]])
        rows.append(row)
    return {"title": "Calibration sweep: top-1 (%) by number of calibration images", "rows": rows,
            "header": ["Framework", "Precision", "Method", *map(str, sizes)], "footnotes": []}


def per_class(cells: list[dict]) -> dict:
    rows, flagged = [], 0
    for c in cells:
        ref = fp32_of(cells, c)
        if c["status"] != "ok" or ref is None or c is ref or c["accuracy"].get("n") != ref["accuracy"].get("n") \
                or not c["accuracy"].get("per_class"):
            continue
        row = _plain(column(c), PRECISION_LABELS[c["precision"]])
        ps = (c["accuracy"].get("delta_vs_fp32") or {}).get("per_class") or [None] * len(CLASSES)
        for q, f, p in zip(c["accuracy"]["per_class"], ref["accuracy"]["per_class"], ps, strict=True):
            if q is None or f is None:  # a class absent from a test subset
                row += _plain("")
                continue
            delta = q - f
            flag = delta < FLAG_DROP
            flagged += flag
            row.append({"text": f"{delta:+.1f}" + ns_mark({"p_value": p}) + (" ⚠" if flag else ""), "bold": flag})
        rows.append(row)
    note = [f"⚠ marks a class that loses more than {-FLAG_DROP:.0f} points vs the same framework's fp32 "
            f"({flagged} flagged); (n.s.): McNemar's exact p >= {ALPHA} on that class's images"]
    return {"title": "Per-class top-1 change vs fp32 (points)", "header": ["Framework", "Precision", *CLASSES],
            "rows": rows, "footnotes": note}


def cross_target(cells: list[dict], targets: list[str]) -> dict:
    keyed: dict = {}
    for c in cells:
        keyed.setdefault((c["model"], column(c), c["precision"]), {})[c["target"]] = c
    rows = []
    for (model, col, precision), per in sorted(keyed.items()):
        row = _plain(model, col, PRECISION_LABELS[precision])
        for t in targets:
            c = per.get(t)
            if c is None:
                row += _plain("")
            elif c["status"] != "ok":
                row += _plain(STATUS_TEXT[c["status"]])
            else:
                row += _plain(f"{p50(c):.2f} ms / {best_throughput(c):.0f} img/s")
        rows.append(row)
    return {"title": "Across targets: p50 latency at batch 1 / throughput", "rows": rows, "footnotes": [],
            "header": ["Model", "Framework", "Precision", *targets]}


def environment(run: dict) -> dict:
    env = run.get("environment", {})
    cpu = env.get("cpu", {})
    container = env.get("container") or {}
    git = env.get("git") or {}
    pairs = [("Run", run.get("run_id", "")), ("CPU", cpu.get("model", "")),
             ("ISA flags", ", ".join(k for k, v in cpu.get("isa", {}).items() if v) or "none"),
             ("Cores (usable / logical)", f"{cpu.get('usable_cores')} / {cpu.get('logical_cores')}"),
             ("Memory (GB)", f"{(env.get('memory_bytes') or 0) / 1e9:.1f}"),
             ("GPU / driver", env.get("gpu") or "none"),
             ("OS", f"{env.get('os', {}).get('system', '')} {env.get('os', {}).get('release', '')}"),
             ("Python", env.get("python", ""))]
    pairs += [(name, version) for name, version in sorted(env.get("packages", {}).items())]
    pairs += [("Image", container.get("image_id") or container.get("image") or "none (no container)"),
              ("Git commit", f"{git.get('commit') or 'unknown'}{' (dirty)' if git.get('dirty') else ''}"),
              ("Harness", env.get("harness_version", ""))]
    return {"title": f"Environment: {run.get('target', {}).get('name', '')} / {run.get('run_id', '')}",
            "header": ["", "Value"], "rows": [_plain(k, str(v)) for k, v in pairs], "footnotes": []}
