"""The cluster side of `harness fleet render|collect --kubernetes`: the image by digest, the manifests written
as YAML (never over existing ones), and the run folders copied back from the results volume."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import UserError
from harness.k8s import DIGEST, RESULTS, helper_pod, job, network_policy
from harness.results import copy_new

if TYPE_CHECKING:
    from harness.config import Target


def image_ref(target: Target, digests: dict[str, str]) -> str:
    """registry@sha256:... from --digest, else from the local engine's record of the pushed image."""
    from harness import container

    registry = target.container["registry"]
    digest = digests.get(target.name)
    if digest is None:
        tag = container.image_tag(target, container.base_image(target)[1])
        repo = container.docker(target, "image", "inspect", "--format", "{{json .RepoDigests}}", tag, check=False)
        found = [d for d in json.loads(repo.stdout.strip() or "[]") or [] if d.startswith(registry + "@")]
        if not found:
            raise UserError(f"target {target.name}: no pushed image of {tag} in {registry}; push it (docker tag "
                            f"+ docker push) or pass --digest {target.name}=sha256:...")
        digest = found[0].split("@", 1)[1]
    if not DIGEST.match(digest):
        raise UserError(f"--digest {target.name}={digest}: expected sha256: and 64 hex digits")
    return f"{registry}@{digest}"


def render(targets: list[Target], out: Path, digest_args: list[str], run_args: list[str]) -> int:
    """One YAML file per target: its Job and the NetworkPolicy that closes its pods' network."""
    import yaml

    digests = {}
    for item in digest_args:
        name, sep, digest = item.partition("=")
        if not sep or name not in {t.name for t in targets}:
            raise UserError(f"--digest {item!r}: expected TARGET=sha256:... for one of the --targets")
        digests[name] = digest
    refs = {t.name: image_ref(t, digests) for t in targets}  # every input checked before anything is written
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    taken = [out / f"{t.name}.yaml" for t in targets if (out / f"{t.name}.yaml").exists()]
    if taken:
        raise UserError(f"{taken[0]}: exists; render into another folder (manifests are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    for t in targets:
        path = out / f"{t.name}.yaml"
        docs = [job(t, refs[t.name], run_id, run_args), network_policy(t, run_id)]
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        print(f"wrote {path} (Job {docs[0]['metadata']['name']}, image {refs[t.name]})")
    return 0


def collect(targets, results: Path) -> int:
    """Copy each target's run folders into results/<target>/: from its S3 prefix (results_s3), or from its
    results volume (tar through exec, as kubectl cp does; needs a kubeconfig, never run against a cluster by the
    tests). Then render the report."""
    from harness import s3
    from harness.report import render as render_report

    for t in (t for t in targets if "results_s3" in t.kubernetes):
        s3.pull(f"{t.kubernetes['results_s3'].rstrip('/')}/{t.name}", results / t.name, t.kubernetes.get("s3_endpoint"))
    on_volumes = [t for t in targets if "results_s3" not in t.kubernetes]
    if on_volumes:
        _collect_volumes(on_volumes, results)
    md, _ = render_report([results / t.name for t in targets], results)
    print(f"wrote {md}")
    return 0


def _collect_volumes(targets, results: Path) -> None:
    from kubernetes import client, config

    try:
        config.load_kube_config()
    except Exception as exc:  # noqa: BLE001 - the client raises several types for a missing/broken kubeconfig
        raise UserError(f"fleet collect --kubernetes: no usable kubeconfig ({' '.join(str(exc).split())})") from None
    api = client.CoreV1Api()
    for t in targets:
        try:
            _collect_one(api, t, results)
        except client.ApiException as exc:
            raise UserError(f"fleet collect {t.name}: the cluster refused ({exc.status} {exc.reason})") from None
        print(f"collected {results / t.name} from {t.kubernetes['namespace']}/{t.kubernetes['results_pvc']}")


def _collect_one(api, target, results: Path) -> None:
    from kubernetes.stream import stream

    ns = target.kubernetes["namespace"]
    name = api.create_namespaced_pod(ns, helper_pod(target, f"ptq-collect-{target.name}-")).metadata.name
    try:
        _wait_running(api, name, ns)
        resp = stream(api.connect_get_namespaced_pod_exec, name, ns, command=["tar", "cf", "-", "-C", RESULTS,
                      target.name], stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False,
                      binary=True)
        data = _drain(resp)
        if resp.returncode:
            raise UserError(f"fleet collect {target.name}: tar in the helper pod exited {resp.returncode} (no "
                            f"{RESULTS}/{target.name} on {target.kubernetes['results_pvc']}: did its Job run?)")
    finally:
        api.delete_namespaced_pod(name, ns)
    untar_new(data, results, f"{ns}/{target.kubernetes['results_pvc']}")


def untar_new(data: bytes, results: Path, source: str) -> int:
    """Unpack a tar of run folders into results/ file by file, never over an existing file (an identical one is
    kept, another stops the copy, naming it: results.copy_new); the files written. The tarfile "data" filter
    refuses absolute paths, links and names that climb out of results/."""
    written = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            try:
                member = tarfile.data_filter(member, str(results))
            except tarfile.FilterError as exc:
                raise UserError(f"{source}: {exc}; nothing more collected") from None
            if not member.isfile():
                continue  # folders are made as their files need them; the filter let no link through
            content = tar.extractfile(member)
            written += copy_new(results / member.name, lambda f, src=content: shutil.copyfileobj(src, f),
                                f"{source}:{member.name}")
    return written


def _wait_running(api, name: str, ns: str, timeout_s: float = 300.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        phase = api.read_namespaced_pod(name, ns).status.phase
        if phase == "Running":
            return
        if phase in ("Failed", "Succeeded"):
            break
        time.sleep(2)
    raise UserError(f"fleet collect: pod {ns}/{name} did not start (phase {phase}); is the results volume bound?")


def _drain(resp) -> bytes:
    """Everything the exec'd tar writes to stdout, until it exits."""
    chunks = []
    while resp.is_open():
        resp.update(timeout=5)
        if resp.peek_stdout():
            chunks.append(resp.read_stdout())
    resp.close()
    return b"".join(chunks)
