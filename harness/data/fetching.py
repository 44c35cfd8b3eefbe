"""`harness fetch-data --data-dir DIR [--target T | --models ...]`: the published files a run reads, downloaded
and checked into the folder layout `--data-dir` takes (CIFAR-10's official archive, md5 as published; each
model's weights, sha256). A Kubernetes Job's init container runs it (harness/k8s.py, `data_fetch = true`).
PTQ_HARNESS_MIRROR=URL fetches every file by its name from a mirror instead (an air-gapped cluster); the
checksums are the published ones either way."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("fetch-data", help="download CIFAR-10 and the models' weights into a data folder")
    p.add_argument("--data-dir", required=True, help="the folder to fill (a later run's --data-dir)")
    p.add_argument("--target", default="local", help="whose models' weights (default local)")
    p.add_argument("--models", help="comma list of zoo models instead of the target's")


def fetch_data(data_dir: Path, models: tuple[str, ...], say=print) -> list[Path]:
    from harness.data.cifar10 import load_split
    from harness.data.download import fetch
    from harness.models import ZOO

    data_dir.mkdir(parents=True, exist_ok=True)
    load_split(data_dir, "test", may_download=True)  # the npz if there, else the official archive, unpacked
    got = []
    for name in models:
        spec = ZOO[name]
        if spec.card or not spec.url:
            continue
        got.append(fetch(spec.url, data_dir / spec.subdir / spec.filename, spec.sha256))
    say(f"fetch-data: {data_dir} holds CIFAR-10 and the weights of {', '.join(models)}")
    return got


def cmd_fetch_data(args) -> int:
    from harness.config import load_target, pick
    from harness.models import ZOO

    target = load_target(args.target)
    fetch_data(Path(args.data_dir), pick(args.models, target.models, ZOO, "models"))
    return 0
