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

from harness import envinfo, envs
from harness.backends import get_backend
from harness.config import RunSettings, Target
from harness.errors import UserError
from harness.models import ModelSpec, lookup
from harness.prepare import Prepared
from harness.progress import Progress
from harness.recipe import Recipe
from harness.results import JOB_FIELDS, RUN_SCHEMA_VERSION, CellResult, cell_stem, read_json, write_json

PKG_ROOT = Path(__file__).resolve().parent.parent
# Fixed glibc malloc thresholds for every worker (a user's own GLIBC_TUNABLES wins). glibc's defaults adapt
# to what a process freed before: torch eager at batch 64 mmapped and unmapped its 4 MB activations on every
# call (~900 page faults a call), so resnet20 fp32 throughput ranged 1100-1900 img/s with the process's
# history; with these it holds 1650-2050 and faults none. onnxruntime, OpenVINO and LiteRT keep their own
# arenas and are unaffected. Deployments do the same (jemalloc/tcmalloc, or these tunables).
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824"
# What every worker process runs with unless the user's environment sets it; the run manifest records the
# values in effect (environment.worker_env).
# TORCHINDUCTOR_COMPILE_THREADS=1: importing IPEX 2.8 imports Inductor, which forks a pool of compile workers that
# import torch for ~3 s of CPU *while the timing loop runs*. On 2 vCPUs that stole one core from the 2 timed
# threads: IPEX int8 resnet20 got a 4.4 ms stall every ~13 calls and per-process p50s of 0.276/0.309/0.281 ms.
# Nothing here compiles in the background of a measurement; compiling in-process is what a deployment does.
WORKER_ENV_DEFAULTS = {"GLIBC_TUNABLES": MALLOC_TUNABLES, "TORCHINDUCTOR_COMPILE_THREADS": "1"}


def worker_env_in_effect() -> dict:
    """WORKER_ENV_DEFAULTS with the user's own values where set: what workers get and run.json records."""
    return {k: os.environ.get(k, v) for k, v in WORKER_ENV_DEFAULTS.items()}


@dataclass(frozen=True)
class RunConfig:
    target: Target
    models: tuple[str, ...]
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    settings: RunSettings
    recipe: Recipe
    data_dir: Path
    may_download: bool
    out_dir: Path
    cache: Path
    resume: bool = False
    force: bool = False
    cards: tuple[tuple[str, str], ...] = ()  # (model name, card path) of the models that come from cards

    def spec(self, model: str) -> ModelSpec:
        return lookup(model, dict(self.cards).get(model))

    def specs(self) -> dict[str, ModelSpec]:
        return {m: self.spec(m) for m in self.models}


@dataclass(frozen=True)
class Arm:
    """One recipe's cells: a plain run has one arm (variant ""); a sweep has one per setting."""

    variant: str
    recipe: Recipe
    prep: Prepared


def plan(cfg: RunConfig, variant: str = "") -> list[tuple[str, str, str, str]]:
    """Every (model, backend, precision, variant); fp32 first so quantized cells can report agreement with
    it; then, in a plain run, the backend's other runtimes on this device (e.g. onnxruntime's TensorRT
    execution provider, variant "trt-ep") and the model's published artifacts (variant "published")."""
    from harness.backends import BACKENDS

    precisions = sorted(cfg.precisions, key=lambda p: p != "fp32")
    cells = []
    for m in cfg.models:
        for b in cfg.backends:
            cells += [(m, b, p, variant) for p in precisions]
            extra = () if variant else BACKENDS[b].VARIANTS.get(cfg.target.device, {})
            cells += [(m, b, p, v) for v in extra for p in precisions]
            cells += [(m, b, a.precision, "published") for a in cfg.spec(m).published
                      if a.backend == b and a.precision in precisions and not variant]
    return cells


def run_identity(cfg: RunConfig, arms: list[Arm]) -> dict:
    """What must match for a resumed run's cells to be comparable (and what `reproduce` re-runs)."""
    identity = {"settings": asdict(cfg.settings), "test": arms[0].prep.test, "target": cfg.target.name}
    imagenet = {m: {"test": t["test"], "weights_sha256": t["model_info"]["weights_sha256"]}
                for m, t in arms[0].prep.tensors.items() if "weights_sha256" in t.get("model_info", {})}
    if imagenet:  # only when such models run, so the identity of earlier runs is unchanged
        identity["imagenet"] = imagenet
    cards = {m: {"card_sha256": cfg.spec(m).card_sha256, **{k: arms[0].prep.tensors[m].get(k) for k in
                                                             ("test", "calibration")}} for m, _ in cfg.cards}
    if cards:
        identity["cards"] = cards
    if len(arms) == 1 and not arms[0].variant:
        return {**identity, "recipe": arms[0].recipe.to_dict(), "calibration": arms[0].prep.calibration}
    return {**identity, "sweep": [{"variant": a.variant, "recipe": a.recipe.to_dict(),
                                   "calibration": a.prep.calibration} for a in arms]}


def open_run(cfg: RunConfig, arms: list[Arm]) -> dict:
    """Write run.json first (or check it matches when resuming)."""
    manifest_path = cfg.out_dir / "run.json"
    prep = arms[0].prep
    identity = run_identity(cfg, arms)
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
        "selection": {"models": cfg.models, "backends": cfg.backends, "precisions": cfg.precisions,
                      **({"cards": dict(cfg.cards)} if cfg.cards else {})},
        "preprocessed_sha256": {m: t["sha256"] for m, t in prep.tensors.items()},
        "environment": {**envinfo.capture(),
                        "worker_env": worker_env_in_effect()},
    }
    write_json(manifest_path, manifest)
    return manifest


def artifacts_dir(cfg: RunConfig) -> Path:
    """The run's artifacts in the cache, named by the run folder's name AND its path: two runs whose folders
    share a name (two `--out run` in different places) once shared one folder and rebuilt over each other."""
    import hashlib

    where = hashlib.sha256(str(cfg.out_dir.resolve()).encode()).hexdigest()[:8]
    return cfg.cache / "artifacts" / f"{cfg.out_dir.name}-{where}"


def make_job(cfg: RunConfig, arm: Arm, model: str, backend: str, precision: str, variant: str) -> dict:
    prep = arm.prep
    cells = cfg.out_dir / "cells"
    t = prep.tensors[model]
    stem = cell_stem(model, backend, precision, variant)
    # agreement is against the backend's own fp32 cell of this arm (variant "" in a plain run: a published
    # artifact or another runtime of the backend is compared with the harness's fp32 too)
    ref = None if (precision, variant) == ("fp32", arm.variant) else cell_stem(model, backend, "fp32", arm.variant)
    return {
        "target": cfg.target.name, "run_id": cfg.out_dir.name, "model": model, "backend": backend,
        "precision": precision, "variant": variant, "calibration": t.get("calibration", prep.calibration),
        "test": t.get("test", prep.test), "accuracy_not_measured": t.get("accuracy_not_measured"),
        "threads": cfg.settings.resolved_threads(), "card": dict(cfg.cards).get(model),
        "model_info": {**cfg.spec(model).describe(), **t.get("model_info", {})},
        "settings": asdict(cfg.settings), "recipe": arm.recipe.to_dict(), "data_dir": str(cfg.data_dir),
        "may_download": cfg.may_download,
        "overwrite": cfg.force, "parent_pid": os.getpid(), "device": cfg.target.device, "agree_ref": ref,
        "paths": {"test_x": t["test_x"], "test_y": t["test_y"], "calib_x": t["calib_x"], "weights": t.get("weights"),
                  "workdir": str(artifacts_dir(cfg) / stem),
                  "cell": str(cells / f"{stem}.json"), "pred": str(cells / f"{stem}.pred.npz")},
    }


def worker_env(threads: int, python: Path | None) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)  # set before any framework is imported in the worker
    env.update(worker_env_in_effect())
    if python is None:
        env["PYTHONPATH"] = os.pathsep.join([str(PKG_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    else:  # another environment: only its own copy of the harness, never this env's site-packages
        env["PYTHONPATH"] = envs.pythonpath(python)
        env["PYTHONNOUSERSITE"] = "1"
    return env


def spawn(job: dict, log: Path, timeout: float, python: Path | None = None) -> tuple[str, str | None]:
    """Run one worker; returns (status, reason) when the worker did not write its own cell."""
    job_path = log.with_suffix(".job.json")
    job_path.write_text(json.dumps(job, indent=1))
    cell = Path(job["paths"]["cell"])
    started = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(python or sys.executable), "-m", "harness.worker", str(job_path)], stdout=out,
                                stderr=subprocess.STDOUT, env=worker_env(job["threads"], python))
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return "timeout", f"worker exceeded the {timeout:.0f} s cell timeout (killed)"
    # (with --force an older cell may exist: only one written by this worker counts)
    if code != 0 and (not cell.exists() or cell.stat().st_mtime < started):
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        return "failed", f"worker exited with code {code}: {tail[0] if tail else 'no output'} (log {log})"
    return "ok", None


def record(job: dict, status: str, reason: str, versions: dict) -> None:
    cell = CellResult(**{k: job[k] for k in JOB_FIELDS}, status=status, reason=reason, versions=versions)
    write_json(Path(job["paths"]["cell"]), cell.to_dict(), overwrite=job["overwrite"])


def env_python(cfg: RunConfig, backend: str, pythons: dict, say) -> Path | str | None:
    """None for the harness's own interpreter; a Path for a backend's environment; a str if that failed."""
    env = cfg.target.environment_of(backend)
    if env is None:
        return None
    if env.name not in pythons:
        try:
            pythons[env.name] = envs.ensure(env, cfg.cache, say)
        except envs.EnvError as exc:
            pythons[env.name] = str(exc)
    return pythons[env.name]


def run_cell(cfg: RunConfig, job: dict, impl, pythons: dict, progress) -> None:
    python = env_python(cfg, job["backend"], pythons, progress.say)
    if isinstance(python, str):
        record(job, "failed", python, {})
        return
    if python is None:  # cheap checks here save a process start; an env's worker checks for itself
        reason = impl.why_not(job["precision"], cfg.target.device, cfg.spec(job["model"]))
        if reason:
            record(job, "unsupported", reason, impl.versions())
            return
    log = cfg.out_dir / "logs" / f"{Path(job['paths']['cell']).stem}.log"
    status, why = spawn(job, log, cfg.settings.timeout_s * cfg.settings.repeat, python)
    if why:
        record(job, status, why, {} if python else impl.versions())


def execute(cfg: RunConfig, arms: list[Arm]) -> list[dict]:
    """Run every planned cell not already finished; returns all cell dicts of the run."""
    open_run(cfg, arms)
    for sub in ("logs", "cells"):
        (cfg.out_dir / sub).mkdir(parents=True, exist_ok=True)
    cells = [(arm, cell) for arm in arms for cell in plan(cfg, arm.variant)]
    backends = {b: get_backend(b, cfg.target.device) for b in cfg.backends}
    pythons: dict[str, Path | str] = {}  # environment name -> interpreter, or why it could not be made
    with Progress(len(cells)) as progress:
        for arm, (model, backend, precision, variant) in cells:
            job = make_job(cfg, arm, model, backend, precision, variant)
            cell_path = Path(job["paths"]["cell"])
            label = f"{model} / {backend} / {precision}" + (f" ({variant})" if variant else "")
            if cell_path.exists() and not cfg.force:
                progress.done(label, json.loads(cell_path.read_text()), skipped=True)
                continue
            progress.start(label)
            t0 = time.perf_counter()
            run_cell(cfg, job, backends[backend], pythons, progress)
            progress.done(label, json.loads(cell_path.read_text()), seconds=time.perf_counter() - t0)
    return [json.loads((cfg.out_dir / "cells" / f"{cell_stem(*c)}.json").read_text()) for _, c in cells]
