"""A second Docker engine for the container and fleet tests: started as root from dockerd, reached only through
its own socket (DOCKER_HOST), with the base image copied over from the default engine (no registry here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

DOCKERD = shutil.which("dockerd")
BASE = "python:3.11-slim-bookworm"
# A second engine starts empty, so a test on it builds the smoke image from the locks: its data root peaked at
# 6.8 GB (du, during test_container_flow_through_docker_host_only). A CI run on a filled disk failed inside that
# build (ENOSPC); with less than this free, the test is skipped, saying so, rather than failing on the disk.
ENGINE_DISK_GB = 8


def docker(*args, host=None, **kw):
    env = {**os.environ, **({"DOCKER_HOST": host} if host else {})}
    return subprocess.run(["docker", *args], capture_output=True, text=True, env=env, **kw)


def engine_ready(host=None) -> bool:
    return shutil.which("docker") is not None and docker("info", host=host).returncode == 0


@contextmanager
def second_engine(root: Path):
    """Yields the socket (unix://...) of a fresh engine under `root`; skips the test where none can start."""
    if DOCKERD is None or os.geteuid() != 0:
        pytest.skip("needs root and dockerd to start a second engine")
    if not engine_ready() or docker("image", "inspect", BASE).returncode != 0:
        pytest.skip(f"needs the default engine with {BASE} (../shared/tools/dockerd-up and base-images)")
    free = shutil.disk_usage(root).free / 1e9
    if free < ENGINE_DISK_GB:
        pytest.skip(f"a second engine builds its images from scratch (~{ENGINE_DISK_GB} GB): {free:.1f} GB free "
                    f"under {root}")
    sock = f"unix://{root}/docker.sock"
    config = root / "daemon.json"
    config.write_text(json.dumps({"bridge": "none", "iptables": False, "ip-masq": False,
                                  "features": {"buildkit": True}}))
    proc = subprocess.Popen([DOCKERD, "--host", sock, "--data-root", str(root / "data"), "--exec-root",
                             f"/run/ptq-{root.name}-{os.getpid()}", "--pidfile", str(root / "docker.pid"),
                             "--config-file", str(config)], stdout=open(root / "log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(60):
            if engine_ready(sock):
                break
            time.sleep(1)
        else:
            pytest.skip(f"the second engine did not start: {(root / 'log').read_text()[-500:]}")
        save = subprocess.Popen(["docker", "save", BASE], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "load"], stdin=save.stdout, capture_output=True, text=True,
                              env={**os.environ, "DOCKER_HOST": sock})
        save.wait()
        assert load.returncode == 0, load.stderr
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
