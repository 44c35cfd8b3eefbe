"""Kubernetes Jobs for container targets (`harness fleet render --kubernetes`): one batch/v1 Job per target and a
deny-all NetworkPolicy for its pods, built with the official `kubernetes` client's models and written as YAML.

What Kubernetes cannot give, said here and in the README: there is no per-pod `--network none`; a NetworkPolicy
that denies all traffic is the closest, and only a network plugin that enforces NetworkPolicy (Calico, Cilium)
applies it. The data comes from a PersistentVolumeClaim mounted read-only; the results go to another one, from
which `harness fleet collect --kubernetes` copies them back.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import UserError, expect

if TYPE_CHECKING:  # config imports this module to parse [kubernetes]
    from harness.config import Target

API = "batch/v1"
LABEL = "app.kubernetes.io/name"
DATA, RESULTS = "/data", "/results"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # DNS-1123 label
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_QUANTITY = re.compile(r"\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_REGISTRY = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}$")
_KEYS = {"namespace": str, "node_selector": dict, "gpu_products": list, "cpu": str, "memory": str,
         "data_pvc": str, "results_pvc": str, "deadline_s": int}
DEFAULTS = {"namespace": "ptq-harness", "node_selector": {}, "gpu_products": [], "deadline_s": 86400}


def label_key_ok(key: str) -> bool:
    """A label key: an optional DNS-subdomain prefix and '/', then a name of at most 63 characters."""
    prefix, _, name = key.rpartition("/")
    prefix_ok = not prefix or (len(prefix) <= 253 and all(_NAME.match(p) for p in prefix.split(".")))
    return prefix_ok and 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


def label_value_ok(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_NAME.match(value))


def registry_ok(value: str) -> bool:
    """`host[:port]/path`, lowercase, without a tag or digest (the Job names the image by digest)."""
    return bool(_REGISTRY.match(value))


def parse(raw, where: str, name: str) -> dict:
    """Validate a target's [kubernetes] table; {} when the target has none."""
    expect(isinstance(raw, dict), where, "kubernetes", raw, "a table")
    if not raw:
        return {}
    # the name goes into Job, pod and label names: a DNS-1123 label, short enough to leave room for the run id
    expect(bool(_NAME.match(name)) and len(name) <= 42, where, "name", name,
           "for a target with [kubernetes]: lowercase letters, digits and '-', at most 42 characters")
    for key, value in raw.items():
        expect(key in _KEYS, where, f"kubernetes.{key}", value, f"one of {sorted(_KEYS)}")
        kind = _KEYS[key]
        expect(isinstance(value, kind) and not (kind is int and isinstance(value, bool)), where,
               f"kubernetes.{key}", value, f"a {kind.__name__}")
    out = {**DEFAULTS, **raw}
    expect(bool(_NAME.match(out["namespace"])) and len(out["namespace"]) <= 63, where, "kubernetes.namespace",
           out["namespace"], "a DNS-1123 label (lowercase letters, digits, '-')")
    for key, value in out["node_selector"].items():
        expect(label_key_ok(key) and isinstance(value, str) and label_value_ok(value), where,
               f"kubernetes.node_selector.{key}", value, "a label key = a label value (at most 63 characters of "
               "letters, digits, '-', '_', '.')")
    for value in out["gpu_products"]:
        expect(isinstance(value, str) and value and label_value_ok(value), where, "kubernetes.gpu_products",
               value, "label values as GPU Feature Discovery sets nvidia.com/gpu.product (e.g. 'Tesla-T4')")
    # both, requests = limits: the Guaranteed QoS class; whole cores (an integer cpu) for the static CPU manager
    expect(bool(re.fullmatch(r"[1-9]\d*", out.get("cpu", ""))), where, "kubernetes.cpu", out.get("cpu"),
           "a whole number of cores as a string, e.g. '8'")
    expect(bool(_QUANTITY.match(out.get("memory", ""))), where, "kubernetes.memory", out.get("memory"),
           "a Kubernetes quantity such as '32Gi'")
    expect(out["deadline_s"] > 0, where, "kubernetes.deadline_s", out["deadline_s"], "a positive number of seconds")
    for key in ("data_pvc", "results_pvc"):
        expect(bool(_NAME.match(out.get(key, ""))), where, f"kubernetes.{key}", out.get(key),
               "the name of a PersistentVolumeClaim in that namespace")
    return out


def job_name(target: str, run_id: str) -> str:
    return f"ptq-{target}-{run_id}".lower()[:63].rstrip("-")


def _resources(k8s: dict, gpus: int):
    from kubernetes import client

    # requests = limits: the Guaranteed QoS class, so a CPU benchmark gets whole cores (static CPU manager)
    amounts = {"cpu": k8s["cpu"], "memory": k8s["memory"]}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    return client.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


def _affinity(k8s: dict):
    from kubernetes import client

    if not k8s["gpu_products"]:
        return None
    # the product label depends on the driver ('A100-SXM4-40GB' once, 'NVIDIA-A100-SXM4-40GB' now): a list, In
    term = client.V1NodeSelectorTerm(match_expressions=[client.V1NodeSelectorRequirement(
        key="nvidia.com/gpu.product", operator="In", values=list(k8s["gpu_products"]))])
    return client.V1Affinity(node_affinity=client.V1NodeAffinity(
        required_during_scheduling_ignored_during_execution=client.V1NodeSelector(node_selector_terms=[term])))


def job(target, image: str, run_id: str, run_args: list[str]) -> dict:
    """The target's Job: `harness run` in its image (by digest) on a node the selectors pick, whole cores."""
    from kubernetes import client

    k8s, name = target.kubernetes, job_name(target.name, run_id)
    gpus = 1 if target.container.get("gpus") else 0
    labels = {LABEL: "ptq-harness", "ptq-harness/target": target.name, "ptq-harness/run": run_id.lower()}
    lock = client.V1SecurityContext(run_as_non_root=True, run_as_user=1000, allow_privilege_escalation=False,
                                    capabilities=client.V1Capabilities(drop=["ALL"]),
                                    seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))
    main = client.V1Container(
        name="harness", image=image, security_context=lock, resources=_resources(k8s, gpus),
        command=["harness", "run", "--target", target.name, "--data-dir", DATA,
                 "--out", f"{RESULTS}/{target.name}/{run_id}", *run_args],
        env=[client.V1EnvVar(name="PTQ_HARNESS_IMAGE", value=image)],
        volume_mounts=[client.V1VolumeMount(name="data", mount_path=DATA, read_only=True),
                       client.V1VolumeMount(name="results", mount_path=RESULTS)])
    pvc = client.V1PersistentVolumeClaimVolumeSource
    pod = client.V1PodSpec(
        restart_policy="Never", containers=[main], node_selector=k8s["node_selector"] or None,
        affinity=_affinity(k8s), automount_service_account_token=False, enable_service_links=False,
        # the results volume must be writable by uid 1000; OnRootMismatch: no recursive chown at every start
        security_context=client.V1PodSecurityContext(run_as_non_root=True, fs_group=1000,
                                                     fs_group_change_policy="OnRootMismatch"),
        tolerations=[client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
        if gpus else None,
        volumes=[client.V1Volume(name="data", persistent_volume_claim=pvc(claim_name=k8s["data_pvc"],
                                                                           read_only=True)),
                 client.V1Volume(name="results", persistent_volume_claim=pvc(claim_name=k8s["results_pvc"]))])
    spec = client.V1JobSpec(backoff_limit=0, active_deadline_seconds=k8s["deadline_s"],
                            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod))
    body = client.V1Job(api_version=API, kind="Job", spec=spec,
                        metadata=client.V1ObjectMeta(name=name, namespace=k8s["namespace"], labels=labels))
    return client.ApiClient().sanitize_for_serialization(body)


def network_policy(target, run_id: str) -> dict:
    """No traffic in or out of the Job's pods: the nearest Kubernetes has to `docker run --network none`."""
    from kubernetes import client

    pods = client.V1LabelSelector(match_labels={"ptq-harness/run": run_id.lower(),
                                                "ptq-harness/target": target.name})
    body = client.V1NetworkPolicy(
        api_version="networking.k8s.io/v1", kind="NetworkPolicy",
        metadata=client.V1ObjectMeta(name=job_name(target.name, run_id), namespace=target.kubernetes["namespace"]),
        spec=client.V1NetworkPolicySpec(pod_selector=pods, policy_types=["Ingress", "Egress"], ingress=[], egress=[]))
    return client.ApiClient().sanitize_for_serialization(body)


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


def helper_pod(target, name: str) -> dict:
    """A pod that only holds the results volume (read-only) for `fleet collect` to read with tar."""
    from kubernetes import client

    k8s = target.kubernetes
    lock = client.V1SecurityContext(run_as_non_root=True, run_as_user=1000, allow_privilege_escalation=False,
                                    capabilities=client.V1Capabilities(drop=["ALL"]),
                                    seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))
    box = client.V1Container(name="collect", image="busybox:1.36", command=["sleep", "3600"], security_context=lock,
                             volume_mounts=[client.V1VolumeMount(name="results", mount_path=RESULTS, read_only=True)])
    pod = client.V1Pod(api_version="v1", kind="Pod", metadata=client.V1ObjectMeta(
        generate_name=name, namespace=k8s["namespace"], labels={LABEL: "ptq-harness-collect"}), spec=client.V1PodSpec(
        restart_policy="Never", containers=[box], automount_service_account_token=False, volumes=[client.V1Volume(
            name="results", persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                claim_name=k8s["results_pvc"], read_only=True))]))
    return client.ApiClient().sanitize_for_serialization(pod)


def collect(targets, results: Path) -> int:
    """Copy /results/<target>/ from each target's results volume into results/<target>/ (tar through exec, as
    kubectl cp does), then render the report. Needs a kubeconfig; never run against a cluster by the tests."""
    from kubernetes import client, config

    from harness.report import render as render_report

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
    md, _ = render_report([results / t.name for t in targets], results)
    print(f"wrote {md}")
    return 0


def _collect_one(api, target, results: Path) -> None:
    import io
    import tarfile

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
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(results, filter="data")  # no absolute paths or links out of results/
    finally:
        api.delete_namespaced_pod(name, ns)


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
