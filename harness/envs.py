"""Backends that need their own Python environment (IPEX needs torch 2.8; the harness pins 2.13).

A target declares `[environments.<name>]` with the backends it hosts and pinned requirements. The first
run creates a venv under the cache (`<cache>/envs/<name>-<hash of requirements>/`, `ready.json` = its
pip freeze), copies the running harness package into it, and runs those backends' workers with its
interpreter. Workers already are subprocesses fed by .npy files, so nothing else changes. A container
image builds the same venvs at image build time (PTQ_HARNESS_ENVS points at them).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# What the harness itself imports in a worker (keep in step with pyproject's dependencies).
HARNESS_DEPS = ("numpy", "h5py", "platformdirs", "psutil", "rich", "scipy")
PKG = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Environment:
    name: str
    backends: tuple[str, ...]
    requirements: tuple[str, ...]
    disk_gb: float = 0.0  # free space the install needs; checked first, so a full disk is named, not hit

    def key(self) -> str:
        blob = json.dumps([self.requirements, HARNESS_DEPS, sys.version_info[:2]]).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:12]}"


class EnvError(Exception):
    """The environment could not be created (recorded as the reason of its cells)."""


def root(cache: Path) -> Path:
    return Path(os.environ["PTQ_HARNESS_ENVS"]) if os.environ.get("PTQ_HARNESS_ENVS") else cache / "envs"


def python_of(env: Environment, cache: Path) -> Path | None:
    """The env's interpreter if it is ready, else None (nothing is created)."""
    folder = root(cache) / env.key()
    return folder / "bin" / "python" if (folder / "ready.json").is_file() else None


def ensure(env: Environment, cache: Path, say=print) -> Path:
    """Create the environment once (pip honours the host's PIP_* settings) and refresh the harness copy."""
    folder = root(cache) / env.key()
    if not (folder / "ready.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.with_name(folder.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two runs sharing a cache build the env once
            _create(env, folder, say)
    _copy_harness(folder)
    return folder / "bin" / "python"


def code_key() -> str:
    """A digest of this harness's source files: an env holds one copy of the harness per code version."""
    digest = hashlib.sha256()
    for path in sorted(p for p in PKG.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(PKG)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _copy_harness(folder: Path) -> None:
    """Copy the harness into src/<code_key>/, whole or not at all (a rename). It used to be refreshed in place:
    a second run sharing the cache (another checkout, or a parallel test worker) deleted the copy under a
    running cell's imports. A prebuilt, read-only env (in an image) keeps the copy made at build time."""
    dest = folder / "src" / code_key()
    if dest.is_dir() or not os.access(folder, os.W_OK):
        return
    dest.parent.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=dest.parent))
    shutil.copytree(PKG, tmp / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    try:
        tmp.rename(dest)
    except OSError:  # another process copied the same version first
        shutil.rmtree(tmp, ignore_errors=True)


def _create(env: Environment, folder: Path, say) -> None:
    if not (folder / "ready.json").is_file():
        say(f"creating environment '{env.name}' in {folder} (first use; pip install {' '.join(env.requirements)})")
        # ready.json is written last: a half-built env (interrupted install) is wiped and rebuilt next time.
        shutil.rmtree(folder, ignore_errors=True)
        _check_disk(env, folder.parent)
        py = folder / "bin" / "python"
        try:
            _run([sys.executable, "-m", "venv", str(folder)], env.name)
            # --no-cache-dir: the env is the cache; pip's own copy of the wheels would double its size
            _run([str(py), "-m", "pip", "install", "--quiet", "--no-cache-dir", *env.requirements,
                  *HARNESS_DEPS], env.name)
        except EnvError:
            shutil.rmtree(folder, ignore_errors=True)  # a half-built env only holds disk space
            raise
        freeze = _run([str(py), "-m", "pip", "freeze"], env.name).splitlines()
        (folder / "ready.json").write_text(json.dumps({"requirements": env.requirements, "freeze": freeze},
                                                      indent=1))


def _check_disk(env: Environment, where: Path) -> None:
    free = shutil.disk_usage(where).free / 1e9
    if free < env.disk_gb:
        raise EnvError(f"environment '{env.name}': needs about {env.disk_gb:g} GB free under {where} "
                       f"(disk_gb in the target), {free:.1f} GB free")


def _run(cmd: list[str], name: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise EnvError(f"environment '{name}': {' '.join(cmd[:4])} ... exited {proc.returncode}: "
                       f"{lines[-1] if lines else 'no output'}")
    return proc.stdout


def pythonpath(python: Path) -> str:
    """Only the env's harness copy: never the parent environment's site-packages."""
    src = python.parent.parent / "src"
    mine = src / code_key()
    if mine.is_dir():
        return str(mine)
    # a read-only env prebuilt by another version of the harness: the copy it was built with
    copies = sorted(d for d in src.glob("[!.]*") if (d / "harness").is_dir())
    return str(copies[-1] if copies else src)
