"""Environment capture for run.json: CPU, ISA flags, memory, OS, packages, git, container."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import harness

ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
             "avx_ne_convert")
PACKAGES = ("numpy", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorflow", "tensorflow-cpu", "keras",
            "ai-edge-litert", "torchao", "litert-torch", "ai-edge-quantizer",
            "intel-extension-for-pytorch", "tensorrt", "onnxruntime-gpu")


def cpu_info() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "arch": platform.machine(), "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "isa": {f: f in flags for f in ISA_FLAGS}}


VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")  # any of them: u8s8 int8 dot products without int16 saturation


def has_vnni() -> bool:
    return any(cpu_info()["isa"][flag] for flag in VNNI)


def reduce_range_for(chosen: bool | None, default_of: str, saturation: str) -> tuple[bool, str]:
    """(reduce_range, why) for a u8s8 int8 path: the recipe's choice if it made one, else the 7-bit range exactly
    when this CPU has no VNNI, where the u8s8 multiply (VPMADDUBSW) saturates its int16 sums. default_of names
    whose full-range default applies with VNNI; saturation says what saturates without it."""
    if chosen is not None:
        return bool(chosen), "recipe option"
    if has_vnni():
        return False, f"this CPU has VNNI: full 8-bit range, {default_of}'s default"
    return True, f"this CPU has no VNNI ({'/'.join(VNNI)}): {saturation}"


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def packages() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def git_info() -> dict:
    root = Path(harness.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD") or os.environ.get("PTQ_HARNESS_GIT_COMMIT")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def container_info() -> dict | None:
    """Set by the image (labels are baked into env vars at build time); None outside a container."""
    if not (Path("/.dockerenv").exists() or os.environ.get("PTQ_HARNESS_IMAGE")):
        return None
    return {k.removeprefix("PTQ_HARNESS_").lower(): v for k, v in os.environ.items()
            if k in ("PTQ_HARNESS_IMAGE", "PTQ_HARNESS_IMAGE_ID", "PTQ_HARNESS_BASE_IMAGE",
                     "PTQ_HARNESS_BASE_DIGEST", "PTQ_HARNESS_LOCK_SHA256")}


def capture() -> dict:
    return {"cpu": cpu_info(), "memory_bytes": memory_bytes(),
            "os": {"system": platform.system(), "release": platform.release(),
                   "libc": " ".join(platform.libc_ver())},
            "python": sys.version.split()[0], "packages": packages(),
            "harness_version": harness.__version__, "git": git_info(), "container": container_info()}
