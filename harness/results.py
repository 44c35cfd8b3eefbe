"""Result records: schema versions, atomic no-clobber writes, cell names, loading."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from harness.errors import UserError
from harness.recipe import Recipe

# Cell schema history: 1 = the first slice (no `variant`); 2 = adds `variant` ("" or "published");
# 3 = adds `recipe` (every quantization setting) and `repeats` (per-process timing, see --repeat);
# 4 = `memory` (the worker's own build and run peaks), `import_s`/`export_s` apart from `quantize_s`, tie-aware
#     accuracy (`accuracy.ties`, `top1_range`), `agree_ref`, p90/p99 null below 10/100 samples.
# 5 = timing before accuracy; accuracy.top1_ci95 (Wilson), accuracy.delta_vs_fp32 (McNemar), accuracy.subset
#     (a time-budgeted pass); `crosscheck/<cell>.json` files beside the cells (harness crosscheck).
# 6 = accuracy.topk, model_info.params / macs_per_image (model cards).
# 7 = `profile` (per-op, harness run --profile) and `diagnosis` (why a quantized cell is not faster than fp32).
CELL_SCHEMA_VERSION = 7
RUN_SCHEMA_VERSION = 1
STATUSES = ("ok", "unsupported", "failed", "timeout")
# Fields a cell copies verbatim from its job (one list, used by the worker and the runner alike).
JOB_FIELDS = ("target", "run_id", "model", "backend", "precision", "variant", "calibration", "test", "threads",
              "model_info", "recipe", "device")


@dataclass(frozen=True)
class CellResult:
    """One (model, backend, precision) cell. Field names are a public contract: see README."""

    target: str
    run_id: str
    model: str
    backend: str
    precision: str
    variant: str  # "" for the harness's own artifact, "published" for one shipped with the model
    status: str
    reason: str | None
    calibration: dict
    test: dict
    threads: int
    model_info: dict
    recipe: dict  # harness.recipe.Recipe.to_dict(): what was asked; `details` says what each backend did
    device: str = "cpu"  # the target's device: "cpu" or "cuda"
    accuracy: dict | None = None  # top1, top5, per_class, agree_fp32, n
    size_bytes: int | None = None
    latency_ms: dict | None = None  # p50 p90 p99 mean std min n, at batch 1
    latency_samples_ms: list | None = None  # raw samples the statistics derive from
    throughput: list = field(default_factory=list)  # [{batch, images_per_s, samples_ms}]
    repeats: list = field(default_factory=list)  # one {latency_p50_ms, images_per_s, ...} per timing process
    latency_interval: dict | None = None  # mean of per-process p50s with its Student-t 95% interval (see measure)
    device_latency_ms: dict | None = None  # GPU only: {h2d, compute, d2h} batch-1 summaries (see worker)
    memory: dict | None = None  # {build_peak_bytes, run_peak_bytes, accuracy_peak_bytes}: each process's VmHWM
    peak_rss_bytes: int | None = None  # max(build, run) peak, kept for readers of schema 3
    import_s: float | None = None  # importing the framework in the build process
    export_s: float | None = None  # the shared fp32 ONNX export (as measured when it was made; see export_cached)
    export_cached: bool | None = None
    quantize_s: float | None = None  # conversion + calibration + quantization only
    versions: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    duration_s: float | None = None
    profile: dict | None = None  # {batches: {"1": {total_ms, ops, shares, ...}, ...}} or {unavailable}; --profile
    diagnosis: list | None = None  # [{rule, evidence, advice}]; [] = not slower; null = not profiled / fp32
    schema_version: int = CELL_SCHEMA_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"schema_version": d.pop("schema_version"), **d}


def cell_stem(model: str, backend: str, precision: str, variant: str = "") -> str:
    return f"{model}__{backend}__{precision}" + (f"__{variant}" if variant else "")


def _temp_beside(path: Path, suffix: str) -> tuple[int, str]:
    """(fd, name) of a new temp file in path's folder, so that linking or renaming it to path is atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600: a published results folder must be readable by others
    return fd, tmp


def write_json(path: Path, data: dict, overwrite: bool = False) -> None:
    """Write atomically (temp file + fsync + link/rename). Without overwrite an existing file is kept."""
    fd, tmp = _temp_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: a finished result is never clobbered
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def copy_new(path: Path, fill: Callable[[BinaryIO], object], source: str) -> int:
    """Write a copied result through fill(file) into a temp file beside `path`, then give it that name unless it
    exists: 1 if placed, 0 if an identical file was there. os.link never replaces a file, so one that appeared
    meanwhile is compared, not overwritten; other bytes stop the copy with one line naming the file and where
    the new bytes came from. No partial file is left behind, whatever fill raises."""
    fd, tmp = _temp_beside(path, ".part")
    part = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
        try:
            os.link(part, path)
            return 1
        except FileExistsError:
            if path.read_bytes() != part.read_bytes():
                raise UserError(f"{path}: exists with other bytes than {source}; move it away to copy it "
                                "(results are never overwritten)") from None
            return 0
    finally:
        part.unlink(missing_ok=True)


def read_json(path: Path, kind: str, supported: int) -> dict:
    """Load a versioned JSON file; unknown or newer versions are refused with a one-line error."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or not 1 <= version <= supported:
        raise UserError(f"{path}: {kind} schema_version {version!r} is not supported "
                        f"(this harness reads 1..{supported}; upgrade ptq-harness to read it)")
    return data


def _v1_to_v2(cell: dict) -> dict:
    return {"variant": "", **cell, "schema_version": 2}


def _v2_to_v3(cell: dict) -> dict:
    """Before recipes, the run's settings were the default recipe's; only onnxruntime honoured a method."""
    cal = cell.get("calibration") or {}
    method = cal.get("method") if cell.get("backend") == "onnxruntime" and cal.get("method") != "minmax" else None
    recipe = {**Recipe().to_dict(), "calibration_size": cal.get("size"), "calibration_seed": cal.get("seed"),
              "calibration_selection": cal.get("selection", "stratified"), "method": method}
    return {**cell, "recipe": recipe, "repeats": [], "latency_interval": None, "schema_version": 3}


def _v3_to_v4(cell: dict) -> dict:
    """Schema 3's peak_rss_bytes was getrusage's ru_maxrss (carried over from the runner on Linux) and its
    quantize_s included imports and the ONNX export: kept as they were, with a note; the new fields are null."""
    acc = cell.get("accuracy")
    if acc:
        acc = {**acc, "ties": None, "agree_ref": None}
    note = ("schema 3: peak_rss_bytes is ru_maxrss, which includes the runner's own peak; quantize_s includes "
            "imports and the ONNX export")
    return {**cell, "accuracy": acc, "memory": {"build_peak_bytes": None, "run_peak_bytes": None, "note": note},
            "import_s": None, "export_s": None, "export_cached": None, "schema_version": 4}


def _v4_to_v5(cell: dict) -> dict:
    """Schema 4 evaluated the whole test set: its Wilson interval follows from top1 and n; no paired test was
    recorded (its predictions file may allow one: harness compare uses it)."""
    from harness.stats import wilson

    acc = cell.get("accuracy")
    if acc:
        top1, n = acc.get("top1"), acc.get("n")
        acc = {**acc, "top1_ci95": wilson(top1 * n / 100, n) if top1 is not None and n else None,
               "delta_vs_fp32": None}
    return {**cell, "accuracy": acc, "schema_version": 5}


def _v5_to_v6(cell: dict) -> dict:
    """Schema 6 adds accuracy.topk (the run's k: 1 and 5 before model cards could ask for others) and
    model_info.params / macs_per_image (not counted then: null)."""
    acc = cell.get("accuracy")
    if acc:
        acc = {**acc, "topk": None if acc.get("top1") is None else {"1": acc["top1"], "5": acc.get("top5")}}
    info = {"params": None, "macs_per_image": None, **(cell.get("model_info") or {})}
    return {**cell, "accuracy": acc, "model_info": info, "schema_version": 6}


def _v6_to_v7(cell: dict) -> dict:
    """Schema 6 had no per-op profiles, so nothing to diagnose from."""
    return {**cell, "profile": None, "diagnosis": None, "schema_version": 7}


MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5, 5: _v5_to_v6, 6: _v6_to_v7}


def migrate_cell(cell: dict) -> dict:
    while cell["schema_version"] < CELL_SCHEMA_VERSION:
        cell = MIGRATIONS[cell["schema_version"]](cell)
    return cell


def load_cells(run_dir: Path) -> list[dict]:
    """Every cell of a run, validated and migrated to the current schema."""
    cells = []
    for path in sorted((run_dir / "cells").glob("*.json")):
        cell = migrate_cell(read_json(path, "cell", CELL_SCHEMA_VERSION))
        missing = [k for k in ("target", "model", "backend", "precision", "status") if k not in cell]
        if missing or cell["status"] not in STATUSES:
            raise UserError(f"{path}: not a valid cell (missing {missing or 'a known status'}; "
                            f"expected the fields listed in the README)")
        cell["_path"] = str(path)
        xc = run_dir / "crosscheck" / path.name  # `harness crosscheck` writes beside the cells, never into them
        if xc.is_file():
            cell["crosscheck"] = read_json(xc, "crosscheck", 1)
        cells.append(cell)
    return cells
