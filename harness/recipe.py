"""Recipes: every quantization setting that changes a number, explicit, validated, recorded in each cell.

A recipe is a TOML file (see targets/recipes/*.toml and the README). A key left out means "this backend's own
default", and each cell's `details` says what that default was. A setting a backend cannot honour makes
its quantized cells `unsupported` with the reason; it is never silently ignored.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from harness.errors import UserError
from harness.errors import expect as _expect

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE_SCHEMA_VERSION = 1
METHODS = ("minmax", "entropy", "percentile", "histogram")
GRANULARITIES = ("per_channel", "per_tensor")
SELECTIONS = ("stratified", "first")
SOURCES = ("train", "index_file")


@dataclass(frozen=True)
class Recipe:
    name: str = "default"
    # calibration images, drawn from the calibration pool (the first 500 training images of each class)
    calibration_source: str = "train"  # or "index_file": the pool indices listed in calibration_index_file
    calibration_index_file: str = ""
    calibration_indices: tuple[int, ...] = ()  # read from the index file (recorded, so a run is self-contained)
    calibration_size: int = 1000
    calibration_seed: int = 0
    calibration_selection: str = "stratified"  # equal count per class, seeded; or "first": the first N
    method: str | None = None  # None: each backend's default calibrator
    weight_granularity: str | None = None  # None: per-channel, every backend's default
    weight_symmetric: bool | None = None
    activation_symmetric: bool | None = None
    backend_options: dict = field(default_factory=dict)  # backend -> {option: value}, see Backend.OPTIONS

    def to_dict(self) -> dict:
        d = asdict(self)
        d["calibration_indices"] = list(self.calibration_indices)
        return d

    def options(self, backend: str) -> dict:
        return dict(self.backend_options.get(backend, {}))


def from_dict(d: dict) -> Recipe:
    """A recipe recorded in a run or cell (already validated when it was written)."""
    known = {f.name for f in fields(Recipe)}
    values = {k: v for k, v in d.items() if k in known}
    values["calibration_indices"] = tuple(values.get("calibration_indices") or ())
    return Recipe(**values)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_TABLES = {  # TOML table -> {key: (Recipe field, check, expected)}
    "calibration": {
        "source": ("calibration_source", lambda v: v in SOURCES, f"one of {', '.join(SOURCES)}"),
        "index_file": ("calibration_index_file", lambda v: isinstance(v, str) and v, "a file path"),
        "size": ("calibration_size", lambda v: _is_int(v) and v > 0, "a positive integer"),
        "seed": ("calibration_seed", lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
        "selection": ("calibration_selection", lambda v: v in SELECTIONS, f"one of {', '.join(SELECTIONS)}"),
        "method": ("method", lambda v: v in METHODS, f"one of {', '.join(METHODS)}"),
    },
    "quantization": {
        "weight_granularity": ("weight_granularity", lambda v: v in GRANULARITIES,
                               f"one of {', '.join(GRANULARITIES)}"),
        "weight_symmetric": ("weight_symmetric", lambda v: isinstance(v, bool), "true or false"),
        "activation_symmetric": ("activation_symmetric", lambda v: isinstance(v, bool), "true or false"),
    },
}


def parse(raw: dict, where: str, base_dir: Path) -> Recipe:
    """Validate a recipe table; every bad key or value is one line naming it."""
    from harness.backends import BACKENDS

    allowed = {"schema_version", "name", "description", "calibration", "quantization", "backends"}
    for key in raw:
        _expect(key in allowed, where, key, raw[key], f"one of {', '.join(sorted(allowed))}")
    _expect(raw.get("schema_version") == RECIPE_SCHEMA_VERSION, where, "schema_version",
            raw.get("schema_version"), str(RECIPE_SCHEMA_VERSION))
    _expect(isinstance(raw.get("name"), str) and raw.get("name"), where, "name", raw.get("name"), "a name")
    values: dict = {"name": raw["name"]}
    for table, spec in _TABLES.items():
        sub = raw.get(table, {})
        _expect(isinstance(sub, dict), where, table, sub, "a table")
        for key, value in sub.items():
            _expect(key in spec, where, f"{table}.{key}", value, f"one of {', '.join(spec)}")
            name, check, expected = spec[key]
            _expect(check(value), where, f"{table}.{key}", value, expected)
            values[name] = value
    values["backend_options"] = _backend_options(raw.get("backends", {}), where, BACKENDS)
    recipe = Recipe(**values)
    if recipe.calibration_source == "index_file":
        recipe = _with_indices(recipe, where, base_dir)
    else:
        _expect(not recipe.calibration_index_file, where, "calibration.index_file", recipe.calibration_index_file,
                "only with calibration.source = 'index_file'")
    return recipe


def _backend_options(raw, where: str, backends) -> dict:
    _expect(isinstance(raw, dict), where, "backends", raw, "a table of [backends.<name>] tables")
    out = {}
    for name, opts in raw.items():
        _expect(name in backends, where, f"backends.{name}", opts, f"a backend: {', '.join(backends)}")
        allowed = backends[name].OPTIONS
        _expect(isinstance(opts, dict), where, f"backends.{name}", opts, "a table")
        for key, value in opts.items():
            _expect(key in allowed, where, f"backends.{name}.{key}", value,
                    f"one of {', '.join(allowed) or '(no options)'}")
            kind, help_text = allowed[key]
            if isinstance(kind, tuple):  # a fixed set of values
                ok, expected = value in kind, f"one of {', '.join(kind)} ({help_text})"
            else:
                ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
                expected = f"a {kind.__name__} ({help_text})"
            _expect(ok, where, f"backends.{name}.{key}", value, expected)
        out[name] = dict(opts)
    return out


def _with_indices(recipe: Recipe, where: str, base_dir: Path) -> Recipe:
    """Read a fixed index list: JSON list, or whitespace/comma separated integers, into the pool."""
    key = "calibration.index_file"
    _expect(bool(recipe.calibration_index_file), where, key, None, "a file when calibration.source = 'index_file'")
    path = Path(recipe.calibration_index_file)
    path = path if path.is_absolute() else base_dir / path
    _expect(path.is_file(), where, key, recipe.calibration_index_file, f"an existing file (looked at {path})")
    text = path.read_text()
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else text.replace(",", " ").split()
        idx = tuple(int(v) for v in items)
    except (ValueError, TypeError):
        raise UserError(f"{path}: expected a list of integer indices into the calibration pool") from None
    _expect(len(idx) > 0 and min(idx) >= 0 and len(set(idx)) == len(idx), str(path), "indices",
            f"{len(idx)} values", "distinct non-negative integers")
    return replace(recipe, calibration_indices=idx, calibration_size=len(idx))


def load(path_str: str) -> Recipe:
    """A recipe TOML file, or a recorded recipe as inline JSON (what `harness reproduce` passes)."""
    if path_str.lstrip().startswith("{"):
        return recorded(path_str)
    path = Path(path_str)
    if not path.is_file():
        raise UserError(f"--recipe {path_str}: no such file; expected a recipe TOML (see targets/recipes/)")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    return parse(raw, str(path), path.parent)


def recorded(text: str) -> Recipe:
    """A recipe as recorded in run.json / a cell (Recipe.to_dict()), checked key by key."""
    where = "--recipe (inline JSON)"
    try:
        d = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{where}: not valid JSON ({exc})") from None
    known = {f.name for f in fields(Recipe)}
    _expect(isinstance(d, dict), where, "(top level)", type(d).__name__, "an object")
    for key in d:
        _expect(key in known, where, key, d[key], f"one of {', '.join(sorted(known))}")
    checks = {name: (check, expected) for spec in _TABLES.values() for name, check, expected in spec.values()}
    for key, value in d.items():
        if key in checks and value is not None and key != "calibration_index_file":
            _expect(checks[key][0](value), where, key, value, checks[key][1])
    return from_dict(d)


def with_overrides(recipe: Recipe, size: int | None, seed: int | None, method: str | None,
                   selection: str | None) -> Recipe:
    """--calibration-size/-seed/-method/-selection on the command line win over the recipe file."""
    changes = {k: v for k, v in (("calibration_size", size), ("calibration_seed", seed), ("method", method),
                                 ("calibration_selection", selection)) if v is not None}
    if "calibration_size" in changes and recipe.calibration_source == "index_file":
        raise UserError("--calibration-size: the recipe lists its calibration indices in a file; "
                        "its size is that list's length")
    if "calibration_size" in changes and changes["calibration_size"] <= 0:
        raise UserError(f"--calibration-size {changes['calibration_size']}: expected a positive integer")
    return replace(recipe, **changes)


def differences(a: dict | None, b: dict | None) -> list[str]:
    """'recipe.<key>: A -> B' for each recorded recipe key that differs."""
    a, b = a or {}, b or {}
    return [f"recipe.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
