"""`harness run` and `harness sweep`: validate everything first (target, flags, recipe, data, weights),
then prepare the tensors once and hand the cells to the runner."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from harness.config import PRECISIONS, load_target, parse_settings, pick
from harness.errors import UserError
from harness.recipe import METHODS

RESULTS = Path("results")
SETTING_FLAGS = {  # CLI flag -> RunSettings field
    "threads": "threads", "batch_sizes": "batch_sizes", "warmup": "warmup", "warmup_duration": "warmup_s",
    "min_duration": "min_duration_s",
    "min_count": "min_count", "timeout": "timeout_s", "test_limit": "test_limit", "repeat": "repeat",
    "accuracy_budget": "accuracy_budget_s", "profile": "profile",
}


def _overrides(args) -> dict:
    raw = {}
    for flag, key in SETTING_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if flag == "batch_sizes":
            try:
                value = [int(v) for v in value.split(",")]
            except ValueError:
                raise UserError(f"--batch-sizes {value!r}: expected a comma list of integers") from None
        raw[key] = value
    return raw


def _out_dir(args, target: str) -> Path:
    if args.out:
        out = Path(args.out)
    elif args.resume:
        runs = sorted(p.parent for p in (RESULTS / target).glob("*/run.json"))
        if not runs:
            raise UserError(f"--resume: no run under {RESULTS / target}/ to resume; pass --out")
        out = runs[-1]
    else:
        out = RESULTS / target / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if (out / "run.json").exists() and not (args.resume or args.force):
        raise UserError(f"--out {out}: a run already exists there; pass --resume to finish it, "
                        "--force to redo its cells, or choose another folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK) or not probe.is_dir():
        raise UserError(f"--out {out}: {probe} is not a writable directory")
    try:  # access() says yes for root even where nothing can be made (e.g. /proc): try, leaving nothing behind
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".ptq-probe-"))
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create anything under {probe} ({exc.strerror})") from None
    return out


def recipe_of(args, target):
    from harness import recipe

    base = recipe.load(args.recipe) if args.recipe else target.recipe
    return recipe.with_overrides(base, args.calibration_size, args.calibration_seed, args.calibration_method,
                                 args.calibration_selection)


def run_config(args):
    """Validate everything a run needs before anything is written: target, flags, recipe, data, weights."""
    from harness.backends import BACKENDS
    from harness.data.cifar10 import cache_dir, data_root
    from harness.runner import RunConfig

    target = load_target(args.target)
    settings = parse_settings(_overrides(args), "command line", base=target.run)
    recipe = recipe_of(args, target)
    data_dir, may_download = data_root(args.data_dir)
    data_dir = data_dir.resolve()
    if args.data_dir and not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir}: not a directory")
    cache = Path(args.cache_dir) if args.cache_dir else cache_dir()
    models, cards = pick_models(args.models, target.models)
    cfg = RunConfig(target, models,
                    pick(args.backends, target.backends, BACKENDS, "backends"),
                    pick(args.precisions, target.precisions, PRECISIONS, "precisions"), settings, recipe, data_dir,
                    may_download, _out_dir(args, target.name), cache, args.resume, args.force, cards)
    for m in cfg.models:  # verify every weight file before anything is written
        cfg.spec(m).weights_path(data_dir, may_download)
    return cfg


def pick_models(requested: str | None, target_models: tuple[str, ...]) -> tuple[tuple, tuple]:
    """--models: zoo names and model-card paths -> (names, ((name, card path), ...))."""
    from harness.models import ZOO
    from harness.models.card import load_card

    if requested is None:
        return target_models, ()
    names, cards = [], []
    for ref in (x.strip() for x in requested.split(",")):
        if not ref:
            continue
        if ref in ZOO:
            names.append(ref)
            continue
        if not ref.endswith(".toml"):
            raise UserError(f"--models {ref!r}: unknown; expected a zoo model ({', '.join(ZOO)}) or a model card "
                            "path ending in .toml")
        spec = load_card(Path(ref))
        if spec.name in names:
            raise UserError(f"--models {ref!r}: its name {spec.name!r} is already taken by another model")
        names.append(spec.name)
        cards.append((spec.name, spec.card))
    if not names:
        raise UserError(f"--models {requested!r}: empty; expected a comma list of zoo names and card paths")
    return tuple(names), tuple(cards)


def cmd_run(args) -> int:
    from harness.prepare import prepare
    from harness.progress import console, summary, wall_line
    from harness.runner import Arm, execute

    start = time.monotonic()
    cfg = run_config(args)
    prep = prepare(cfg.data_dir, cfg.may_download, cfg.specs(), cfg.settings, cfg.recipe, cfg.cache)
    console.print(f"run {cfg.out_dir}: {len(cfg.models)} models x {len(cfg.backends)} backends x "
                  f"{len(cfg.precisions)} precisions, {test_images(prep)}, "
                  f"{prep.calibration['size']} calibration images (recipe {cfg.recipe.name}), "
                  f"{cfg.settings.resolved_threads()} threads, timing x{cfg.settings.repeat}")
    cells = execute(cfg, [Arm("", cfg.recipe, prep)])
    wall = time.monotonic() - start
    console.print(summary(cells, f"{cfg.out_dir}", wall))
    console.print(wall_line(cells, wall), highlight=False)
    return 0


def test_images(prep) -> str:
    """CIFAR-10's test count, and what each model with a test set of its own (ImageNet-shaped, a card's) is
    measured on."""
    cifar = any("test" not in t for t in prep.tensors.values())
    out = [f"{prep.test['size']} test images"] if cifar else []
    out += [f"{m}: {t['test']['size']} " + ("test images" if t["test"]["accuracy"] == "measured" else
                                             f"timing images, accuracy {t['test']['accuracy']}")
            for m, t in prep.tensors.items() if "test" in t]
    return "; ".join(out)


def _sweep_values(text: str, what: str, parse, allowed=None) -> list:
    try:
        values = [parse(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{what} {text!r}: expected a comma list") from None
    bad = [v for v in values if (allowed is not None and v not in allowed) or (allowed is None and v <= 0)]
    if not values or bad:
        raise UserError(f"--{what} {text!r}: {bad or 'empty'} not allowed; expected "
                        f"{'one of ' + ', '.join(allowed) if allowed else 'positive integers'}")
    return values


def cmd_sweep(args) -> int:
    """Same matrix, one arm per (calibration size, method): cells differ only in calibration."""
    from dataclasses import replace

    from harness import recipe
    from harness.prepare import prepare
    from harness.progress import console, summary
    from harness.runner import Arm, execute

    sizes = _sweep_values(args.calibration_size, "calibration-size", int)
    methods = _sweep_values(args.calibration_method, "calibration-method", str, METHODS) \
        if args.calibration_method else [None]
    cfg = run_config(replace_args(args, calibration_size=None, calibration_method=None))
    arms = []
    for size in sizes:
        for method in methods:
            r = recipe.with_overrides(cfg.recipe, size, None, method, None)
            r = replace(r, name=f"{cfg.recipe.name} / sweep")
            prep = prepare(cfg.data_dir, cfg.may_download, cfg.specs(), cfg.settings, r, cfg.cache)
            arms.append(Arm(f"cal{size}-{method or 'default'}", r, prep))
    console.print(f"sweep {cfg.out_dir}: calibration sizes {sizes} x methods "
                  f"{[m or 'backend default' for m in methods]} x {len(cfg.models)} models x "
                  f"{len(cfg.backends)} backends x {len(cfg.precisions)} precisions")
    console.print(summary(execute(cfg, arms), f"{cfg.out_dir}"))
    return 0


def replace_args(args, **changes):
    return argparse.Namespace(**{**vars(args), **changes})


