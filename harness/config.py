"""Typed, validated target and run configuration: TOML in, frozen dataclasses out."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from harness import k8s
from harness.errors import UserError
from harness.errors import expect as _expect
from harness.recipe import Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "uint8", "dynamic")
TARGET_SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent
TARGETS_DIR = Path(os.environ.get("PTQ_HARNESS_TARGETS", REPO_ROOT / "targets"))


@dataclass(frozen=True)
class RunSettings:
    """How every cell is measured; identical for every backend of a run."""

    threads: int = 0  # 0 = all cores the process may use
    batch_sizes: tuple[int, ...] = (64,)
    warmup: int = 10
    # warm-up runs for BOTH `warmup` calls and this many seconds, then until calls are steady (measure.warm_up):
    # a fresh process ran its first ~0.3 s 10-20% slow (resnet20 TFLite int8: 0.221 ms vs 0.177 ms after 200
    # calls) and torch eager at batch 64 ramped from 1500 to 1900 img/s over its first 40 calls
    warmup_s: float = 1.0
    min_duration_s: float = 1.0  # latency loop runs until BOTH this and min_count are met
    min_count: int = 50
    timeout_s: float = 900.0
    test_limit: int = 0  # 0 = the whole test set
    repeat: int = 1  # timing runs per cell, each in a fresh process (the interval needs >= 2)
    # seconds the accuracy pass may take, estimated from the measured throughput; over it, a seeded
    # class-stratified subset is evaluated instead and the cell says so (0 = always the whole test set)
    accuracy_budget_s: float = 120.0
    # per-op profiles (harness/profiles) and the diagnosis of slow quantized cells, in a process after timing
    profile: bool = False

    def resolved_threads(self) -> int:
        return self.threads or len(os.sched_getaffinity(0))


_SETTING_TYPES = {
    "threads": int, "batch_sizes": list, "warmup": int, "warmup_s": float, "min_duration_s": float, "min_count": int,
    "timeout_s": float, "test_limit": int, "repeat": int, "accuracy_budget_s": float, "profile": bool,
}
ZERO_ALLOWED = {"accuracy_budget_s"}  # floats where 0 means "off"


@dataclass(frozen=True)
class Target:
    name: str
    device: str
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    models: tuple[str, ...]
    run: RunSettings
    path: str = ""
    sha256: str = ""
    environments: tuple = ()  # envs.Environment: backends that run under their own interpreter
    container: dict = field(default_factory=dict)  # [container]: image and run options (empty: no image)
    kubernetes: dict = field(default_factory=dict)  # [kubernetes]: how a Job runs it on a cluster (harness/k8s.py)
    recipe: Recipe = Recipe()  # quantization settings; `recipe = "targets/recipes/<name>.toml"` in the target

    def environment_of(self, backend: str):
        return next((e for e in self.environments if backend in e.backends), None)


def parse_settings(raw: dict, where: str, base: RunSettings | None = None) -> RunSettings:
    """Validate a [run] table (or CLI overrides) into RunSettings."""
    base = base or RunSettings()
    known = {f.name for f in fields(RunSettings)}
    values = {}
    for key, value in raw.items():
        if key in ("calibration_size", "calibration_seed"):
            raise UserError(f"{where}: key 'run.{key}' = {value!r}: calibration settings live in a recipe now "
                            "(recipe = \"targets/recipes/<name>.toml\", or --recipe / --calibration-size)")
        _expect(key in known, where, f"run.{key}", value, f"one of {sorted(known)}")
        kind = _SETTING_TYPES[key]
        if kind is list:
            ok = isinstance(value, list | tuple) and value and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            _expect(bool(ok), where, f"run.{key}", value, "a non-empty list of positive integers")
            value = tuple(value)
        elif kind is bool:
            _expect(isinstance(value, bool), where, f"run.{key}", value, "true or false")
        elif kind is float:
            zero = key in ZERO_ALLOWED
            _expect(isinstance(value, int | float) and not isinstance(value, bool)
                    and (value > 0 or (zero and value == 0)), where, f"run.{key}", value,
                    "a number >= 0 (0: off)" if zero else "a positive number")
            value = float(value)
        else:
            _expect(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                    where, f"run.{key}", value, "a non-negative integer")
        values[key] = value
    settings = replace(base, **values)
    _expect(settings.repeat >= 1, where, "run.repeat", settings.repeat, ">= 1")
    return settings


def _names(raw: dict, key: str, allowed, where: str) -> tuple[str, ...]:
    value = raw.get(key)
    _expect(isinstance(value, list) and value and all(isinstance(v, str) for v in value),
            where, key, value, "a non-empty list of strings")
    for v in value:
        _expect(v in allowed, where, key, v, f"one of {', '.join(sorted(allowed))}")
    return tuple(value)


def target_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml":
        return p
    return TARGETS_DIR / f"{name_or_path}.toml"


def load_target(name_or_path: str) -> Target:
    """Read targets/<name>.toml (or a path) and validate every key."""
    from harness.backends import BACKENDS
    from harness.models import ZOO

    path = target_path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))
        raise UserError(f"target '{name_or_path}': no file {path}; expected one of {', '.join(known)}")
    data = path.read_bytes()
    try:
        raw = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    where = str(path)
    allowed = {"schema_version", "name", "device", "backends", "precisions", "models", "run",
               "container", "environments", "recipe", "kubernetes"}
    for key in raw:
        _expect(key in allowed, where, key, raw[key], f"one of {sorted(allowed)}")
    _expect(raw.get("schema_version") == TARGET_SCHEMA_VERSION, where, "schema_version",
            raw.get("schema_version"), str(TARGET_SCHEMA_VERSION))
    _expect(raw.get("name") == path.stem, where, "name", raw.get("name"), f"'{path.stem}' (the file name)")
    _expect(raw.get("device") in ("cpu", "cuda"), where, "device", raw.get("device"), "'cpu' or 'cuda'")
    run = raw.get("run", {})
    _expect(isinstance(run, dict), where, "run", run, "a table")
    envs = _environments(raw.get("environments", {}), where, BACKENDS)
    container = _container(raw.get("container", {}), where)
    kubernetes = k8s.parse(raw.get("kubernetes", {}), where, str(raw.get("name")))
    _expect(not kubernetes or bool(container.get("registry")), where, "container.registry",
            container.get("registry"), "a registry for the image (a [kubernetes] Job pulls it from there)")
    return Target(
        name=raw["name"], device=raw["device"],
        backends=_names(raw, "backends", BACKENDS, where),
        precisions=_names(raw, "precisions", PRECISIONS, where),
        models=_names(raw, "models", ZOO, where),
        run=parse_settings(run, where), path=str(path), sha256=hashlib.sha256(data).hexdigest(),
        environments=envs, container=container, recipe=_recipe(raw.get("recipe"), where), kubernetes=kubernetes,
    )


def _recipe(value, where: str) -> Recipe:
    from harness import recipe

    if value is None:
        return Recipe()
    _expect(isinstance(value, str) and (REPO_ROOT / value).is_file(), where, "recipe", value,
            "a recipe file relative to the repository root (e.g. targets/recipes/default.toml)")
    return recipe.load(str(REPO_ROOT / value))


_CONTAINER_KEYS = {"dockerfile": str, "base_image": str, "lock": str, "extras": str, "gpus": bool, "cpuset": str,
                   "docker_host": str, "build_network_host": bool, "registry": str,
                   "docker_context": str}


def _container(raw: dict, where: str) -> dict:
    _expect(isinstance(raw, dict), where, "container", raw, "a table")
    if not raw:
        return {}
    for key, value in raw.items():
        _expect(key in _CONTAINER_KEYS, where, f"container.{key}", value, f"one of {sorted(_CONTAINER_KEYS)}")
        _expect(isinstance(value, _CONTAINER_KEYS[key]), where, f"container.{key}", value,
                f"a {_CONTAINER_KEYS[key].__name__}")
    for key in ("dockerfile", "base_image", "lock"):
        _expect(key in raw, where, f"container.{key}", None, "to be set")
    for key in ("dockerfile", "lock"):
        _expect((REPO_ROOT / raw[key]).is_file(), where, f"container.{key}", raw[key],
                "a file relative to the repository root")
    _expect(not raw.get("registry") or k8s.registry_ok(raw["registry"]), where, "container.registry",
            raw.get("registry"), "host[:port]/path in lowercase, without a tag (e.g. 'registry.example.com/ptq')")
    return dict(raw)


def _environments(raw: dict, where: str, backends) -> tuple:
    from harness.envs import Environment

    _expect(isinstance(raw, dict), where, "environments", raw, "a table of [environments.<name>] tables")
    out = []
    for name, table in raw.items():
        key = f"environments.{name}"
        _expect(isinstance(table, dict) and set(table) <= {"backends", "requirements", "disk_gb"}, where, key,
                table, "a table with 'backends', 'requirements' and optionally 'disk_gb'")
        disk = table.get("disk_gb", 0)
        _expect(isinstance(disk, (int, float)) and not isinstance(disk, bool) and disk >= 0, where,
                f"{key}.disk_gb", disk, "a number of GB >= 0")
        reqs = table.get("requirements")
        _expect(isinstance(reqs, list) and reqs and all(isinstance(r, str) for r in reqs), where,
                f"{key}.requirements", reqs, "a non-empty list of pip requirement strings")
        out.append(Environment(name, _names(table, "backends", backends, f"{where} [{key}]"), tuple(reqs), float(disk)))
    return tuple(out)


def pick(requested: str | None, allowed: tuple[str, ...], universe, what: str) -> tuple[str, ...]:
    """Apply a --models/--backends/--precisions comma list to the target's own list."""
    if requested is None:
        return allowed
    chosen = tuple(x.strip() for x in requested.split(",") if x.strip())
    if not chosen:  # --models "" must not silently mean "the target's models"
        raise UserError(f"--{what} {requested!r}: empty; expected a comma list of {', '.join(sorted(universe))}")
    for x in chosen:
        if x not in universe:
            raise UserError(f"--{what} {x!r}: unknown; expected one of {', '.join(sorted(universe))}")
    return chosen
