"""Checksummed downloads into the user cache (the only code that touches the network)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from harness.errors import UserError


def file_digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str, algo: str = "sha256") -> None:
    """expected may be a prefix of the digest: torchvision publishes only the first 8 hex digits."""
    got = file_digest(path, algo)
    if not got.startswith(expected) or len(expected) < 8:
        what = "expected" if len(expected) == len(got) else "expected it to start with"
        raise UserError(f"{path}: {algo} is {got}, {what} {expected} (corrupt or wrong file)")


def fetch(url: str, dest: Path, expected: str, algo: str = "sha256", timeout: float = 60.0) -> Path:
    """Download url to dest (atomically) and verify its checksum; reuse dest if it already matches."""
    if dest.is_file():
        verify(dest, expected, algo)
        return dest
    mirror = os.environ.get("PTQ_HARNESS_MIRROR")
    if mirror:  # the same file by its name from a mirror; the published checksum still decides
        url = f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"harness: downloading {url} -> {dest}", flush=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
        verify(Path(tmp), expected, algo)
        os.replace(tmp, dest)
    except OSError as exc:
        raise UserError(f"download of {url} failed: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
