"""`harness run | list | env`: the command line. Bad input -> one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from harness import crosscheck, fleet, s3
from harness.config import PRECISIONS, load_target
from harness.container_cards import take_option
from harness.data import fetching
from harness.errors import UserError
from harness.recipe import METHODS, SELECTIONS


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="quantize and benchmark the target's matrix")
    _matrix_args(p)
    recipe_flags(p)
    p.add_argument("--calibration-size", type=int, help="overrides the recipe's")
    p.add_argument("--calibration-method", choices=METHODS, help="overrides the recipe's")
    sw = sub.add_parser("sweep", help="one cell per calibration setting, and a top-1 vs calibration-size plot")
    _matrix_args(sw)
    recipe_flags(sw)
    sw.add_argument("--calibration-size", required=True, help="comma list, e.g. 10,100,1000,5000")
    sw.add_argument("--calibration-method", help=f"comma list of {','.join(METHODS)} (default: the recipe's)")


def _matrix_args(p) -> None:
    p.add_argument("--target", default="local", help="targets/<name>.toml or a path (default: local)")
    p.add_argument("--models", help="comma list (default: the target's)")
    p.add_argument("--backends", help="comma list (default: the target's)")
    p.add_argument("--precisions", help=f"comma list of {','.join(PRECISIONS)} (default: the target's)")
    p.add_argument("--data-dir", help="CIFAR-10 and weights (default: $PTQ_HARNESS_DATA, else download)")
    p.add_argument("--out", help="run folder (default: results/<target>/<UTC time>)")
    p.add_argument("--cache-dir", help="artifact cache (default: $PTQ_HARNESS_CACHE or the user cache)")
    p.add_argument("--resume", action="store_true", help="continue --out (or the newest run), skip done cells")
    p.add_argument("--force", action="store_true", help="re-run and overwrite finished cells")
    p.add_argument("--threads", type=int, help="threads for every backend (0 = all cores)")
    p.add_argument("--batch-sizes", help="throughput batch sizes, comma list (default 64)")
    p.add_argument("--warmup", type=int, help="warm-up calls before each timing loop (default 10)")
    p.add_argument("--warmup-duration", type=float,
                   help="seconds each warm-up lasts at least (default 1.0; then until calls are steady)")
    p.add_argument("--min-duration", type=float, help="seconds each timing loop runs at least")
    p.add_argument("--min-count", type=int, help="calls each latency loop makes at least")
    p.add_argument("--timeout", type=float, help="seconds per cell before it is killed (default 900)")
    p.add_argument("--test-limit", type=int, help="use the first N test images (default: all)")
    p.add_argument("--accuracy-budget", type=float, metavar="S",
                   help="seconds the accuracy pass may take per cell, estimated from the measured throughput; "
                   "over it a seeded class-stratified subset is evaluated and footnoted (default 120; 0 = always "
                   "the whole test set, for publishing)")
    p.add_argument("--repeat", type=int, help="time each cell N times, each in a fresh process; cells then "
                   "carry a run-to-run 95%% interval (default 1)")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                   help="per-op profile of each cell from its runtime's own profiler, in a process after the timed "
                   "figures, and a diagnosis of every quantized cell not faster than fp32 (default: off; on in "
                   "nox -s bench)")


def recipe_flags(p) -> None:
    """The recipe and the overrides run and sweep share (size and method differ: a sweep takes lists)."""
    p.add_argument("--recipe", help="quantization recipe TOML (default: the target's, see targets/recipes/)")
    p.add_argument("--calibration-seed", type=int, help="overrides the recipe's")
    p.add_argument("--calibration-selection", choices=SELECTIONS, help="overrides the recipe's")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    lp = sub.add_parser("list", help="what this machine can run, and why not")
    lp.add_argument("--target", default="local")
    lp.add_argument("--models", help="comma list of zoo names and model cards: what each backend can do with each")
    sub.add_parser("env", help="print the environment record as JSON")
    cp = sub.add_parser("container", help="build a target's image, or run the harness inside it")
    csub = cp.add_subparsers(dest="action", required=True)
    cb = csub.add_parser("build", help="build (or reuse) the image of one target or of every container target")
    cb.add_argument("--target", help="a target with a [container] table (default: all of them)")
    cr = csub.add_parser("run", help="run `harness run` in the target's image; results come back to results/")
    cr.add_argument("--target", required=True)
    cr.add_argument("--results", default="results", help="host folder the run is copied back into")
    cr.add_argument("--resume-run", metavar="RUN_DIR", help="a run folder this target left unfinished: it goes back "
                    "into the container and `harness run --resume` finishes it")
    cr.add_argument("args", nargs=argparse.REMAINDER, help="passed to `harness run` (--data-dir is the host's)")
    ce = csub.add_parser("prepare-envs", help="create the target's backend environments (image build time)")
    ce.add_argument("--target", required=True)
    cmp = sub.add_parser("compare", help="per-cell verdicts between two runs (non-zero exit on regression)")
    cmp.add_argument("run_a", help="baseline run folder (results/<target>/<run id>)")
    cmp.add_argument("run_b", help="candidate run folder")
    cmp.add_argument("--threshold", type=float, default=0.10, help="latency change that counts (default 0.10)")
    cmp.add_argument("--allow-identity-change", action="store_true",
                     help="compare cells whose weights, calibration or test set differ")
    cmp.add_argument("--md", help="also write the Markdown here")
    cmp.add_argument("--json", help="also write the JSON here")
    rr = sub.add_parser("reproduce", help="re-run a recorded run in its recorded environment and compare")
    rr.add_argument("run_dir", help="a run folder: results/<target>/<run id>")
    rr.add_argument("--data-dir", help="CIFAR-10 and weights (default: $PTQ_HARNESS_DATA)")
    rr.add_argument("--results", default="results", help="where the new run goes (default: results)")
    rr.add_argument("--threshold", type=float, default=0.10, help="latency change that counts (default 0.10)")
    crosscheck.add_parser(sub)
    fleet.add_parser(sub)
    fetching.add_parser(sub)
    s3.add_parser(sub)
    rp = sub.add_parser("report", help="render results folders into README.md, report.html and plots")
    rp.add_argument("dirs", nargs="*", default=["results"], help="results folders (default: results)")
    rp.add_argument("-o", "--out", default="results", help="output folder (default: results)")
    rp.add_argument("--strict", action="store_true", help="refuse two results for one cell (for publishing); "
                    "by default the newest run's is shown and the older ones are listed as superseded")
    rp.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                    help="top-1 points a Recommendation pick may lose against its fp32 cell when the loss is "
                    "significant (default 0.5)")
    rp.add_argument("--latest", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    return parser


def _capabilities(target, name: str, card: str = "") -> dict:
    """What a backend can do (with a card's model, if given): asked in this interpreter, or inside the
    backend's own environment."""
    from harness import envs
    from harness.data.cifar10 import cache_dir
    from harness.worker import probe_report

    env = target.environment_of(name)
    if env is None:
        return probe_report(name, target.device, card)
    python = envs.python_of(env, cache_dir())
    if python is None:
        return {"installed": False, "reason": f"runs in its own environment '{env.name}', not created yet "
                f"(`harness run` creates it: pip install {' '.join(env.requirements)})"}
    proc = subprocess.run([str(python), "-m", "harness.worker", "--probe", name, target.device, card],
                          capture_output=True, text=True, env={**os.environ, "PYTHONNOUSERSITE": "1",
                                                              "PYTHONPATH": envs.pythonpath(python)})
    if proc.returncode != 0:
        return {"installed": False, "reason": f"environment '{env.name}' probe failed: {proc.stderr[-300:]}"}
    return {**json.loads(proc.stdout), "environment": env.name}


def cmd_list(args) -> int:
    from harness.backends import BACKENDS
    from harness.models import ZOO
    from harness.runcmd import pick_models

    target = load_target(args.target)
    models, cards = pick_models(args.models, target.models) if args.models else ((), ())
    print(f"target {target.name} (device {target.device}); models: {', '.join(target.models)} "
          f"(zoo: {', '.join(ZOO)})")
    for model in models or [""]:
        card = dict(cards).get(model, "")
        if model:
            print(f"\nmodel {model}" + (f" (card {card})" if card else " (zoo)"))
        for name in BACKENDS:
            _print_backend(target, name, _capabilities(target, name, card), BACKENDS[name].NOTE)
    return 0


def _print_backend(target, name: str, info: dict, note: str) -> None:
    head = f"{name} {info['version']}" if info["installed"] else f"{name}: {info['reason']}"
    if info.get("environment"):
        head += f"  [environment {info['environment']}]"
    print(head + ("" if name in target.backends else "  [not in this target]"))
    if note:
        print(f"  note: {note}")
    for precision, reason in info.get("precisions", {}).items():
        print(f"  {precision:8s} {'ok' if reason is None else 'unsupported: ' + reason}")


def cmd_env(args) -> int:
    from harness import envinfo

    print(json.dumps(envinfo.capture(), indent=1))
    return 0


def _container_targets(name: str | None):
    from harness.config import TARGETS_DIR

    names = [name] if name else sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))
    targets = [load_target(n) for n in names]
    for t in targets:
        if name and not t.container:
            raise UserError(f"target {t.name} ({t.path}): no [container] table, so it has no image")
    return [t for t in targets if t.container]


def _split_data_dir(args: list[str]) -> tuple[str | None, list[str]]:
    """Take --data-dir out of the pass-through args: the host folder is copied in and the harness gets /data."""
    args = [a for a in args if a != "--"]
    if any(a == "--out" or a.startswith("--out=") for a in args):
        raise UserError("--out: a container run always writes results/<target>/<run id> (see --results)")
    data, rest, _ = take_option(args, "--data-dir")
    return data, rest


def _host_data(value: str | None, expected: str) -> Path:
    """--data-dir, else $PTQ_HARNESS_DATA: an existing folder (these commands never download)."""
    data = value or os.environ.get("PTQ_HARNESS_DATA")
    if not data or not Path(data).is_dir():
        raise UserError(f"--data-dir {data!r}: expected {expected}")
    return Path(data).resolve()


def cmd_container(args) -> int:
    from harness import container, envs
    from harness.data.cifar10 import cache_dir

    if args.action == "build":
        for target in _container_targets(args.target):
            container.build(target)
        return 0
    target = load_target(args.target)
    if args.action == "prepare-envs":
        for env in target.environments:
            envs.ensure(env, cache_dir())
        return 0
    data, rest = _split_data_dir(args.args)
    data = _host_data(data, "the host's data folder (containers run without network)")
    if not target.container:
        raise UserError(f"target {target.name} ({target.path}): no [container] table, so it has no image")
    resume = Path(args.resume_run) if args.resume_run else None
    if resume and not (resume / "run.json").is_file():
        raise UserError(f"--resume-run {resume}: expected a run folder (with run.json) of target {target.name}")
    container.run(target, data, Path(args.results), rest, resume=resume)
    return 0


def cmd_compare(args) -> int:
    from harness.compare import compare, write

    result = compare(Path(args.run_a), Path(args.run_b), args.threshold, args.allow_identity_change)
    print(write(result, Path(args.md) if args.md else None, Path(args.json) if args.json else None), end="")
    return 1 if result["overall"] == "regression" else 0


def cmd_reproduce(args) -> int:
    from harness.compare import compare, write
    from harness.reproduce import reproduce

    data = _host_data(args.data_dir, "the data folder (CIFAR-10 and weights)")
    old = Path(args.run_dir)
    new = reproduce(old, data, Path(args.results))
    result = compare(old, new, args.threshold)
    print(write(result, new / "reproduce.md", new / "reproduce.json"), end="")
    bad = [c["cell"] for c in result["cells"] if c["verdict"] in ("accuracy changed", "status changed", "missing")]
    print(f"reproduce: {len(result['cells']) - len(bad)}/{len(result['cells'])} cells reproduced their accuracy "
          f"and status" + (f"; NOT: {', '.join(bad)}" if bad else "") + f" (new run {new})")
    return 1 if bad else 0


def cmd_report(args) -> int:
    from harness.advice import MAX_DROP
    from harness.report import render

    if args.max_drop is not None and not args.max_drop >= 0:
        raise UserError(f"--max-drop {args.max_drop}: expected top-1 points >= 0")
    md, html = render([Path(d) for d in args.dirs], Path(args.out), strict=args.strict,
                      max_drop=MAX_DROP if args.max_drop is None else args.max_drop)
    print(f"wrote {md} and {html}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from harness.runcmd import cmd_run, cmd_sweep

        return {"run": cmd_run, "sweep": cmd_sweep, "list": cmd_list, "env": cmd_env, "report": cmd_report,
                "container": cmd_container, "compare": cmd_compare,
                "reproduce": cmd_reproduce, "crosscheck": crosscheck.cmd_crosscheck,
                "fleet": fleet.cmd_fleet, "fetch-data": fetching.cmd_fetch_data,
                "push-results": s3.cmd_push_results}[args.command](args)
    except UserError as exc:
        print("harness: error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line, whatever the cause
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; finished cells are kept (re-run with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
