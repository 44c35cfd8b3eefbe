"""Plans the matrix and runs each cell in its own worker process with a timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness import envinfo
from harness.backends import get_backend
from harness.config import RunSettings, Target
from harness.errors import UserError
from harness.prepare import Prepared
from harness.progress import Progress
from harness.results import JOB_FIELDS, RUN_SCHEMA_VERSION, CellResult, cell_stem, read_json, write_json

PKG_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunConfig:
    target: Target
    models: tuple[str, ...]
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    settings: RunSettings
    data_dir: Path
    may_download: bool
    out_dir: Path
    cache: Path
    resume: bool = False
    force: bool = False
    calibration_method: str = "minmax"


def plan(cfg: RunConfig) -> list[tuple[str, str, str]]:
    """Every (model, backend, precision); fp32 first so quantized cells can report agreement with it."""
    precisions = sorted(cfg.precisions, key=lambda p: p != "fp32")
    return [(m, b, p) for m in cfg.models for b in cfg.backends for p in precisions]


def run_identity(cfg: RunConfig, prep: Prepared) -> dict:
    """What must match for a resumed run's cells to be comparable."""
    return {"settings": asdict(cfg.settings), "calibration": prep.calibration, "test": prep.test,
            "target": cfg.target.name}


def open_run(cfg: RunConfig, prep: Prepared) -> dict:
    """Write run.json first (or check it matches when resuming)."""
    manifest_path = cfg.out_dir / "run.json"
    identity = run_identity(cfg, prep)
    if manifest_path.exists():
        old = read_json(manifest_path, "run", RUN_SCHEMA_VERSION)
        for key, value in identity.items():
            if json.dumps(old["identity"].get(key), sort_keys=True) != json.dumps(value, sort_keys=True):
                raise UserError(f"{manifest_path}: '{key}' differs from this invocation's; resume with the "
                                f"same settings or start a new run (--out)")
        return old
    manifest = {
        "schema_version": RUN_SCHEMA_VERSION, "run_id": cfg.out_dir.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": {"name": cfg.target.name, "device": cfg.target.device, "path": cfg.target.path,
                   "sha256": cfg.target.sha256},
        "identity": identity, "command": sys.argv,
        "selection": {"models": cfg.models, "backends": cfg.backends, "precisions": cfg.precisions},
        "preprocessed_sha256": {m: t["sha256"] for m, t in prep.tensors.items()},
        "environment": envinfo.capture(),
    }
    write_json(manifest_path, manifest)
    return manifest


def make_job(cfg: RunConfig, prep: Prepared, model: str, backend: str, precision: str) -> dict:
    from harness.models import ZOO

    cells = cfg.out_dir / "cells"
    t = prep.tensors[model]
    return {
        "target": cfg.target.name, "run_id": cfg.out_dir.name, "model": model, "backend": backend,
        "precision": precision, "calibration": prep.calibration, "test": prep.test,
        "threads": cfg.settings.resolved_threads(), "model_info": ZOO[model].describe(),
        "settings": asdict(cfg.settings), "data_dir": str(cfg.data_dir), "may_download": cfg.may_download,
        "overwrite": cfg.force, "parent_pid": os.getpid(),
        "paths": {"test_x": t["test_x"], "test_y": t["test_y"], "calib_x": t["calib_x"],
                  "workdir": str(cfg.cache / "artifacts" / cfg.out_dir.name / cell_stem(model, backend, precision)),
                  "cell": str(cells / f"{cell_stem(model, backend, precision)}.json"),
                  "pred": str(cells / f"{cell_stem(model, backend, precision)}.pred.npz"),
                  "fp32_pred": str(cells / f"{cell_stem(model, backend, 'fp32')}.pred.npz")},
    }


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)  # set before any framework is imported in the worker
    env["PYTHONPATH"] = os.pathsep.join([str(PKG_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def spawn(job: dict, log: Path, timeout: float) -> tuple[str, str | None]:
    """Run one worker; returns (status, reason) when the worker did not write its own cell."""
    job_path = log.with_suffix(".job.json")
    job_path.write_text(json.dumps(job, indent=1))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "harness.worker", str(job_path)], stdout=out,
                                stderr=subprocess.STDOUT, env=worker_env(job["threads"]))
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return "timeout", f"worker exceeded the {timeout:.0f} s cell timeout (killed)"
    if code != 0 and not Path(job["paths"]["cell"]).exists():
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        return "failed", f"worker exited with code {code}: {tail[0] if tail else 'no output'} (log {log})"
    return "ok", None


def record(job: dict, status: str, reason: str, versions: dict) -> None:
    cell = CellResult(**{k: job[k] for k in JOB_FIELDS}, status=status, reason=reason, versions=versions)
    write_json(Path(job["paths"]["cell"]), cell.to_dict(), overwrite=job["overwrite"])


def execute(cfg: RunConfig, prep: Prepared) -> list[dict]:
    """Run every planned cell not already finished; returns all cell dicts of the run."""
    open_run(cfg, prep)
    for sub in ("logs", "cells"):
        (cfg.out_dir / sub).mkdir(parents=True, exist_ok=True)
    cells = plan(cfg)
    backends = {b: get_backend(b) for b in cfg.backends}
    with Progress(len(cells)) as progress:
        for model, backend, precision in cells:
            job = make_job(cfg, prep, model, backend, precision)
            cell_path = Path(job["paths"]["cell"])
            label = f"{model} / {backend} / {precision}"
            if cell_path.exists() and not cfg.force:
                progress.done(label, json.loads(cell_path.read_text()), skipped=True)
                continue
            impl = backends[backend]
            probe = impl.probe()
            reason = probe.reason or impl.supports(precision, cfg.target.device)
            progress.start(label)
            t0 = time.perf_counter()
            if reason:
                record(job, "unsupported", reason, impl.versions() if probe.installed else {})
            else:
                status, why = spawn(job, cfg.out_dir / "logs" / f"{cell_path.stem}.log", cfg.settings.timeout_s)
                if why:
                    record(job, status, why, impl.versions())
            progress.done(label, json.loads(cell_path.read_text()), seconds=time.perf_counter() - t0)
    return [json.loads((cfg.out_dir / "cells" / f"{cell_stem(*c)}.json").read_text()) for c in cells]
