"""Per-target images and runs: `harness container build|run`.

Everything goes through the Docker CLI, so DOCKER_HOST (or a target's `docker_host`, e.g. ssh://gpu-box)
works unchanged: the build context is sent to the engine, data goes into the container with `docker cp`
and results come back with `docker cp` (no bind mounts), and runs use `--network none`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from harness.config import REPO_ROOT, Target
from harness.container_cards import card_copies
from harness.errors import UserError

HOME = "/home/harness"  # the image's harness user (images/*.Dockerfile: useradd -u 1000 harness)
HARNESS_UID = 1000
CONTEXT_ITEMS = ("pyproject.toml", "harness", "targets", "templates", "images")
SECRET_VARS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "TENSORRT_INDEX_URL")


def docker_env(target: Target) -> dict:
    """The environment that points the Docker CLI at the target's engine."""
    env = dict(os.environ)
    if target.container.get("docker_host"):
        env["DOCKER_HOST"] = target.container["docker_host"]
    elif target.container.get("docker_context"):  # DOCKER_HOST would override the context: it goes
        env.pop("DOCKER_HOST", None)
        env["DOCKER_CONTEXT"] = target.container["docker_context"]
    return env


def docker(target: Target, *args: str, capture: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    env = docker_env(target)
    try:
        proc = subprocess.run(["docker", *args], capture_output=capture, text=True, env=env)
    except FileNotFoundError:
        raise UserError("docker: command not found; a container target needs the Docker CLI") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or "").strip().splitlines()
        raise UserError(f"docker {args[0]} failed (exit {proc.returncode}): {err[-1] if err else ''}")
    return proc


def _files(root: Path):
    for item in CONTEXT_ITEMS:
        path = root / item
        yield from ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                           and "__pycache__" not in p.parts))


def _own_target(target: Target) -> Path | None:
    """A target file kept outside the repository's targets/ (PTQ_HARNESS_TARGETS): it goes into the image too."""
    path = Path(target.path).resolve()
    return None if path.parent == (REPO_ROOT / "targets").resolve() else path


def image_tag(target: Target, base_id: str) -> str:
    """Content-addressed: a change to the Dockerfile, lock, targets, templates or harness source rebuilds."""
    h = hashlib.sha256(base_id.encode())
    for path in _files(REPO_ROOT):
        h.update(str(path.relative_to(REPO_ROOT)).encode())
        h.update(path.read_bytes())
    own = _own_target(target)
    if own:
        h.update(own.read_bytes())
    return f"ptq-harness:{target.name}-{h.hexdigest()[:12]}"


def base_image(target: Target) -> tuple[str, str, str]:
    """(name, image id, digest) of the base image; the name can be overridden with PTQ_HARNESS_BASE_IMAGE."""
    name = os.environ.get("PTQ_HARNESS_BASE_IMAGE") or target.container["base_image"]
    proc = docker(target, "image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}", name, check=False)
    if proc.returncode != 0:
        raise UserError(f"base image {name!r} is not on the Docker engine; pull or build it first "
                        "(or set PTQ_HARNESS_BASE_IMAGE to a mirror)")
    image_id, _, digests = proc.stdout.strip().partition(" ")
    digests = json.loads(digests or "[]") or []
    return name, image_id, ",".join(digests) or image_id  # a locally built base has no registry digest


def _context(tmp: Path, target: Target) -> list[str]:
    """Copy the build inputs into a fresh context; the host's pip settings become build secrets."""
    for item in CONTEXT_ITEMS:
        src = REPO_ROOT / item
        (shutil.copytree(src, tmp / item, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy2(src, tmp / item))
    own = _own_target(target)
    if own:
        shutil.copy2(own, tmp / "targets" / own.name)
    # a stub README (pyproject names one): editing the docs must not force a rebuild of the image
    (tmp / "README.md").write_text("ptq-harness: see the project's README.md.\n")
    wheels = tmp / "wheelhouse"
    wheels.mkdir()
    for folder in filter(None, os.environ.get("PIP_FIND_LINKS", "").split()):
        for whl in Path(folder).glob("*.whl") if Path(folder).is_dir() else []:
            try:
                os.link(whl, wheels / whl.name)
            except OSError:
                shutil.copy2(whl, wheels / whl.name)
    lines = [f"{v}={os.environ[v]}" for v in SECRET_VARS if os.environ.get(v)]
    (tmp / "pip.env").write_text("\n".join(lines) + "\n")
    args = ["--secret", f"id=pipenv,src={tmp / 'pip.env'}"]
    if os.environ.get("PIP_CERT") and Path(os.environ["PIP_CERT"]).is_file():
        args += ["--secret", f"id=pipcert,src={os.environ['PIP_CERT']}"]
    return args


def build(target: Target, say=print) -> str:
    """Build the target's image unless an image with the same content tag exists; returns the tag."""
    from harness.envinfo import git_info

    base, base_id, digest = base_image(target)
    tag = image_tag(target, base_id)
    if docker(target, "image", "inspect", tag, check=False).returncode == 0:
        say(f"image {tag} is up to date (Dockerfile, lock, targets and source unchanged): not rebuilding")
        return tag
    c = target.container
    lock = REPO_ROOT / c["lock"]
    build_args = {"BASE_IMAGE": base, "BASE_DIGEST": digest, "LOCK": c["lock"], "TARGET": target.name,
                  "EXTRAS": c.get("extras", ""), "GIT_COMMIT": git_info().get("commit") or "unknown",
                  "LOCK_SHA256": hashlib.sha256(lock.read_bytes()).hexdigest()}
    say(f"building {tag} from {c['dockerfile']} (base {base}, lock {c['lock']})")
    with tempfile.TemporaryDirectory(prefix="ptq-ctx-") as tmp:
        secrets = _context(Path(tmp), target)
        args = [a for k, v in build_args.items() for a in ("--build-arg", f"{k}={v}")]
        env_net = ["--network", "host"] if c.get("build_network_host", True) else []
        proc = docker(target, "build", *env_net, *secrets, *args, "-f", str(Path(tmp) / c["dockerfile"]),
                      "-t", tag, "--label", f"org.ptq-harness.target={target.name}", tmp, capture=False, check=False)
    if proc.returncode != 0:
        raise UserError(f"image build for target {target.name} failed (exit {proc.returncode}); see the log above")
    return tag


def require_gpu(target: Target) -> None:
    """A CUDA target stops here, before any work, when the engine cannot give it a GPU."""
    if not target.container.get("gpus"):
        return
    runtimes = docker(target, "info", "--format", "{{json .Runtimes}}").stdout
    if "nvidia" not in runtimes:
        raise UserError(f"target {target.name} needs an NVIDIA GPU, but the Docker engine has no NVIDIA runtime "
                        "(nvidia-container-toolkit); nothing was run")


def run(target: Target, data_dir: Path, results: Path, harness_args: list[str], say=print,
        image: str | None = None, resume: Path | None = None) -> Path:
    """Build (or reuse) the image (or use `image` as given), run `harness run` in it with --network none,
    copy the run back. `resume`: a run folder this target left unfinished; it goes back in and goes on."""
    harness_args, cards = card_copies(harness_args)
    tag = image or build(target, say)
    require_gpu(target)
    image_id = docker(target, "image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    run_id = resume.name if resume else datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"ptq-{target.name}-{run_id.lower()}-{os.getpid()}"
    inner, dest = f"{HOME}/results/{target.name}/{run_id}", results / target.name
    say(f"run folder: {dest / run_id}")
    opts = ["--network", "none", "--name", name, "-e", f"PTQ_HARNESS_IMAGE={tag}", "-e",
            f"PTQ_HARNESS_IMAGE_ID={image_id}"]
    if target.container.get("gpus"):
        opts += ["--gpus", "all"]
    if target.container.get("cpuset"):
        opts += ["--cpuset-cpus", target.container["cpuset"]]
    docker(target, "create", *opts, tag, "harness", "run", "--target", target.name, "--data-dir", "/data",
           "--out", inner, *harness_args, *(["--resume"] if resume else []))
    try:
        docker(target, "cp", f"{data_dir}/.", f"{name}:/data")  # root-owned: read-only for the harness user
        for folder, inner_folder in cards:
            docker(target, "cp", f"{folder}/.", f"{name}:{inner_folder}")
        if resume:
            _put_run(target, name, resume)
        try:
            code = docker(target, "start", "-a", name, capture=False, check=False).returncode
        except KeyboardInterrupt:  # stop it and bring back what it finished: --resume-run goes on from there
            docker(target, "stop", name, check=False)
            code = 130
        dest.mkdir(parents=True, exist_ok=True)
        if docker(target, "cp", f"{name}:{inner}", str(dest), check=False).returncode != 0:
            raise UserError(f"the container wrote no run folder {inner} (harness exited {code})")
    finally:
        docker(target, "rm", "-f", name, check=False)
    if code != 0:
        raise UserError(f"harness run in {tag} exited {code}; partial results copied to {dest / run_id}")
    # a recorded image re-used by id (harness reproduce) has its id for a tag: say it once
    say(f"results copied to {dest / run_id} (image {tag if tag == image_id else f'{tag}, {image_id}'})")
    return dest / run_id


def _put_run(target: Target, name: str, run_dir: Path) -> None:
    """An unfinished run folder back into the container, owned by the image's harness user (uid 1000, see the
    Dockerfiles) so that `harness run --resume` can add to it. The tar is streamed into `docker cp -`, whose
    entries keep the uid they carry (not `-a`: that looks the image's user name up on the host; moby#34142)."""
    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = HARNESS_UID
        info.uname = info.gname = ""
        return info

    proc = subprocess.Popen(["docker", "cp", "-", f"{name}:{HOME}"], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=docker_env(target))
    with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:  # streamed: a run folder can hold GBs
        for parent in ("results", f"results/{target.name}"):  # docker cp would make missing parents root's
            tar.addfile(_dir_entry(parent, owned))
        tar.add(run_dir, arcname=f"results/{target.name}/{run_dir.name}", filter=owned)
    proc.stdin.close()
    if proc.wait() != 0:
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        raise UserError(f"could not put {run_dir} back into the container: {err[-1] if err else 'docker cp failed'}")


def _dir_entry(path: str, owned) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return owned(info)
