"""`harness reproduce RESULTS_DIR`: re-run a recorded run's cells in its recorded environment, then compare.

What is re-used from run.json: the target, the selection (models, backends, precisions), every run setting
and the recipe. Where the run came from an image, the same image is used when the engine still has it (by
image id); otherwise it is rebuilt from this checkout, but only when the recorded lock file and base image
digest can be had again: otherwise we refuse and say which one differs. Runs recorded before recipes existed
are re-run with the calibration flags their harness version understood.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from harness.config import REPO_ROOT, load_target
from harness.errors import UserError
from harness.results import RUN_SCHEMA_VERSION, read_json

FLAGS = {"threads": "--threads", "warmup": "--warmup", "warmup_s": "--warmup-duration",
         "min_duration_s": "--min-duration", "min_count": "--min-count", "timeout_s": "--timeout",
         "test_limit": "--test-limit", "repeat": "--repeat", "accuracy_budget_s": "--accuracy-budget"}


def run_args(run: dict) -> list[str]:
    """The `harness run` arguments that repeat this run (selection, settings, recipe)."""
    ident, sel = run["identity"], run["selection"]
    if "sweep" in ident:
        raise UserError(f"{run['_dir']}: a calibration sweep; re-run it with `harness sweep` and the sizes in "
                        "its run.json (reproduce handles plain runs)")
    cards = sel.get("cards") or {}  # a card's model re-runs from its card (checked against the recorded sha256)
    args = ["--models", ",".join(cards.get(m, m) for m in sel["models"]), "--backends", ",".join(sel["backends"]),
            "--precisions", ",".join(sel["precisions"])]
    settings = ident["settings"]
    for key, value in settings.items():  # keys of older harness versions (calibration_size) have no flag here
        if key == "batch_sizes":
            args += ["--batch-sizes", ",".join(map(str, value))]
        elif key in FLAGS and not (key == "repeat" and value == 1):
            args += [FLAGS[key], str(value)]
    if "accuracy_budget_s" not in settings:  # recorded before the budget: every cell saw the whole test set
        args += ["--accuracy-budget", "0"]
    if "recipe" in ident:
        args += ["--recipe", json.dumps(ident["recipe"], separators=(",", ":"))]
    else:  # recorded before recipes: the flags that harness version had
        cal = ident["calibration"]
        args += ["--calibration-size", str(settings.get("calibration_size", cal["size"])),
                 "--calibration-seed", str(settings.get("calibration_seed", cal["seed"]))]
        if cal.get("method") in ("minmax", "entropy", "percentile"):
            args += ["--calibration-method", cal["method"]]
    return args


def check_image_inputs(target, recorded: dict) -> None:
    """Refuse to rebuild when the recorded lock or base image cannot be had again."""
    from harness import container

    lock = hashlib.sha256((REPO_ROOT / target.container["lock"]).read_bytes()).hexdigest()
    if recorded.get("lock_sha256") and recorded["lock_sha256"] != lock:
        raise UserError(f"recorded lock sha256 {recorded['lock_sha256'][:12]} differs from "
                        f"{target.container['lock']} here ({lock[:12]}): check out the recorded commit first")
    _, base_id, digest = container.base_image(target)
    if recorded.get("base_digest") and recorded["base_digest"] not in (digest, base_id):
        raise UserError(f"recorded base image digest {recorded['base_digest'][:19]} is not the engine's "
                        f"{recorded.get('base_image')} ({digest[:19]}): pull or load that exact base first")


def image_for(target, recorded: dict, say) -> str:
    """The recorded image when the engine still has it, else a rebuild from the same lock and base."""
    from harness import container

    image_id = recorded.get("image_id", "")
    if image_id and container.docker(target, "image", "inspect", image_id, check=False).returncode == 0:
        say(f"re-using the recorded image {recorded.get('image')} ({image_id[:19]})")
        return image_id
    say(f"recorded image {image_id[:19] or '(none)'} is not on the engine: rebuilding from the same lock and base")
    check_image_inputs(target, recorded)
    return container.build(target, say)


def reproduce(run_dir: Path, data_dir: Path, results: Path, say=print) -> Path:
    """Re-run; returns the new run folder (beside the old one, under results/<target>/)."""
    from harness import container

    manifest = run_dir / "run.json"
    if not manifest.is_file():
        raise UserError(f"{run_dir}: no run.json; expected a run folder such as results/<target>/<run id>")
    run = {**read_json(manifest, "run", RUN_SCHEMA_VERSION), "_dir": str(run_dir)}
    target = load_target(run["target"]["name"])
    if target.sha256 != run["target"].get("sha256"):
        say(f"note: {target.path} changed since the run; its recorded settings are used, not the file's")
    args = run_args(run)
    recorded = (run.get("environment") or {}).get("container")
    if recorded:
        if not target.container:
            raise UserError(f"{run_dir} ran in image {recorded.get('image')}, but target {target.name} has no "
                            "[container] table here")
        image = image_for(target, recorded, say)
        return container.run(target, data_dir, results, args, say, image=image)
    out = results / target.name / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    say(f"no image recorded: re-running on this machine into {out}")
    # `harness run` in a process of its own, as the user would type it (and no import of the command line here:
    # the CLI imports this module)
    code = subprocess.run([sys.executable, "-m", "harness", "run", "--target", target.name, "--data-dir",
                           str(data_dir), "--out", str(out), *args]).returncode
    if code != 0:
        raise UserError(f"the re-run exited {code}; partial results in {out}")
    return out
