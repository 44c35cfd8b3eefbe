"""Kubernetes Jobs for container targets (`harness fleet render --kubernetes`): one batch/v1 Job per target and a
deny-all NetworkPolicy for its pods, built with the official `kubernetes` client's models and written as YAML.

What Kubernetes cannot give, said here and in the README: there is no per-pod `--network none`; a NetworkPolicy
that denies all traffic is the closest, and only a network plugin that enforces NetworkPolicy (Calico, Cilium)
applies it. The data comes from a PersistentVolumeClaim mounted read-only (or an init container fetches it); the
results go to another claim or, with `results_s3`, are pushed to an S3-compatible bucket when the run ends; from
either `harness fleet collect --kubernetes` copies them back.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from harness.errors import expect

if TYPE_CHECKING:  # config imports this module to parse [kubernetes]
    pass

API = "batch/v1"
LABEL = "app.kubernetes.io/name"
DATA, RESULTS = "/data", "/results"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # DNS-1123 label
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_QUANTITY = re.compile(r"\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_REGISTRY = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}$")
_KEYS = {"namespace": str, "node_selector": dict, "gpu_products": list, "cpu": str, "memory": str,
         "data_pvc": str, "data_fetch": bool, "data_mirror": str, "results_pvc": str, "deadline_s": int,
         "results_s3": str, "s3_endpoint": str, "s3_secret": str}
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
    expect(("data_pvc" in out) != bool(out.get("data_fetch")), where, "kubernetes.data_pvc", out.get("data_pvc"),
           "exactly one source of data: data_pvc (a PersistentVolumeClaim) or data_fetch = true")
    expect(not out.get("data_mirror") or out["data_mirror"].startswith(("http://", "https://")), where,
           "kubernetes.data_mirror", out.get("data_mirror"), "an http(s):// URL")
    for key in ("data_pvc", "results_pvc"):
        expect(key not in out or bool(_NAME.match(out[key])), where, f"kubernetes.{key}", out.get(key),
               "the name of a PersistentVolumeClaim in that namespace")
    _parse_results(out, where)
    return out


def _parse_results(out: dict, where: str) -> None:
    from harness import s3

    expect(("results_pvc" in out) != ("results_s3" in out), where, "kubernetes.results_pvc", out.get("results_pvc"),
           "exactly one place for the results: results_pvc (a PersistentVolumeClaim) or results_s3 (s3://bucket/prefix)")
    if "results_s3" not in out:
        for key in ("s3_endpoint", "s3_secret"):
            expect(key not in out, where, f"kubernetes.{key}", out.get(key), "only with results_s3")
        return
    expect(s3.url_ok(out["results_s3"]), where, "kubernetes.results_s3", out["results_s3"],
           "s3://bucket[/prefix] (a lowercase bucket name, 3-63 characters)")
    expect(bool(_NAME.match(out.get("s3_secret", ""))), where, "kubernetes.s3_secret", out.get("s3_secret"),
           "the name of a Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (required with results_s3)")
    expect("s3_endpoint" not in out or s3.endpoint_ok(out["s3_endpoint"]), where, "kubernetes.s3_endpoint",
           out.get("s3_endpoint"), "http(s)://host[:port] of the S3 API (default AWS)")


def job_name(target: str, run_id: str) -> str:
    return f"ptq-{target}-{run_id}".lower()[:63].rstrip("-")


def _locked():
    """Every container's security context: the image's user (uid 1000), no capabilities, no escalation."""
    from kubernetes import client

    return client.V1SecurityContext(run_as_non_root=True, run_as_user=1000, allow_privilege_escalation=False,
                                    capabilities=client.V1Capabilities(drop=["ALL"]),
                                    seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))


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
    lock = _locked()
    command, env, env_from = _command(target, run_id, run_args, image)
    main = client.V1Container(
        name="harness", image=image, security_context=lock, resources=_resources(k8s, gpus),
        command=command, env=env, env_from=env_from,
        volume_mounts=[client.V1VolumeMount(name="data", mount_path=DATA, read_only=True),
                       client.V1VolumeMount(name="results", mount_path=RESULTS)])
    pod = client.V1PodSpec(
        restart_policy="Never", containers=[main], node_selector=k8s["node_selector"] or None,
        affinity=_affinity(k8s), automount_service_account_token=False, enable_service_links=False,
        # the results volume must be writable by uid 1000; OnRootMismatch: no recursive chown at every start
        security_context=client.V1PodSecurityContext(run_as_non_root=True, fs_group=1000,
                                                     fs_group_change_policy="OnRootMismatch"),
        tolerations=[client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
        if gpus else None,
        init_containers=[_fetcher(target, image, lock)] if k8s.get("data_fetch") else None,
        volumes=[_data_volume(k8s), _results_volume(k8s)])
    spec = client.V1JobSpec(backoff_limit=0, active_deadline_seconds=k8s["deadline_s"],
                            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod))
    body = client.V1Job(api_version=API, kind="Job", spec=spec,
                        metadata=client.V1ObjectMeta(name=name, namespace=k8s["namespace"], labels=labels))
    return client.ApiClient().sanitize_for_serialization(body)


def _command(target, run_id: str, run_args: list[str], image: str):
    """`harness run` into the results volume; with results_s3, then `harness push-results` of the run folder
    (whatever the run's exit code: a run with failed cells still has results), the Job failing if either did
    (the run's exit code kept; 3 when only the push failed)."""
    import shlex

    from kubernetes import client

    k8s, out = target.kubernetes, f"{RESULTS}/{target.name}/{run_id}"
    run = ["harness", "run", "--target", target.name, "--data-dir", DATA, "--out", out, *run_args]
    env = [client.V1EnvVar(name="PTQ_HARNESS_IMAGE", value=image)]
    if "results_s3" not in k8s:
        return run, env, None
    url = f"{k8s['results_s3'].rstrip('/')}/{target.name}/{run_id}"
    push = shlex.join(["harness", "push-results", out, url])
    # no run.json: the run stopped before its folder existed (bad input, exit 2), nothing to push; keep its code
    done = shlex.quote(f"{out}/run.json")
    script = f"{shlex.join(run)}; rc=$?; if [ -f {done} ]; then {push} || exit 3; fi; exit $rc"
    if "s3_endpoint" in k8s:
        env.append(client.V1EnvVar(name="PTQ_HARNESS_S3_ENDPOINT", value=k8s["s3_endpoint"]))
    # the Secret's keys become the environment the S3 client reads (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    secret = [client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name=k8s["s3_secret"]))]
    return ["sh", "-c", script], env, secret


def _results_volume(k8s: dict):
    from kubernetes import client

    if "results_s3" in k8s:  # the run folder lives in the pod until push-results has uploaded it
        return client.V1Volume(name="results", empty_dir=client.V1EmptyDirVolumeSource())
    return client.V1Volume(name="results", persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
        claim_name=k8s["results_pvc"]))


def _data_volume(k8s: dict):
    from kubernetes import client

    if k8s.get("data_fetch"):  # filled by the init container, read-only to the benchmark
        return client.V1Volume(name="data", empty_dir=client.V1EmptyDirVolumeSource())
    return client.V1Volume(name="data", persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
        claim_name=k8s["data_pvc"], read_only=True))


def _fetcher(target, image: str, lock):
    """The init container: `harness fetch-data` (checksummed downloads, or a mirror) into the data volume."""
    from kubernetes import client

    env = [client.V1EnvVar(name="PTQ_HARNESS_MIRROR", value=target.kubernetes["data_mirror"])] \
        if target.kubernetes.get("data_mirror") else None
    return client.V1Container(name="fetch-data", image=image, security_context=lock, env=env,
                              command=["harness", "fetch-data", "--data-dir", DATA, "--target", target.name],
                              volume_mounts=[client.V1VolumeMount(name="data", mount_path=DATA)])


def network_policy(target, run_id: str) -> dict:
    """No traffic in or out of the Job's pods: the nearest Kubernetes has to `docker run --network none`. With
    data_fetch (an init container downloads) or results_s3 (the pod uploads) egress stays open, since a policy
    covers the whole pod and the endpoints' addresses are not known here: then only ingress is closed."""
    from kubernetes import client

    pods = client.V1LabelSelector(match_labels={"ptq-harness/run": run_id.lower(),
                                                "ptq-harness/target": target.name})
    body = client.V1NetworkPolicy(
        api_version="networking.k8s.io/v1", kind="NetworkPolicy",
        metadata=client.V1ObjectMeta(name=job_name(target.name, run_id), namespace=target.kubernetes["namespace"]),
        spec=client.V1NetworkPolicySpec(pod_selector=pods, ingress=[], **(
            {"policy_types": ["Ingress"]} if target.kubernetes.get("data_fetch") or "results_s3" in target.kubernetes
            else {"policy_types": ["Ingress", "Egress"], "egress": []})))
    return client.ApiClient().sanitize_for_serialization(body)


def helper_pod(target, name: str) -> dict:
    """A pod that only holds the results volume (read-only) for `fleet collect` to read with tar."""
    from kubernetes import client

    k8s = target.kubernetes
    lock = _locked()
    box = client.V1Container(name="collect", image="busybox:1.36", command=["sleep", "3600"], security_context=lock,
                             volume_mounts=[client.V1VolumeMount(name="results", mount_path=RESULTS, read_only=True)])
    pod = client.V1Pod(api_version="v1", kind="Pod", metadata=client.V1ObjectMeta(
        generate_name=name, namespace=k8s["namespace"], labels={LABEL: "ptq-harness-collect"}), spec=client.V1PodSpec(
        restart_policy="Never", containers=[box], automount_service_account_token=False, volumes=[client.V1Volume(
            name="results", persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                claim_name=k8s["results_pvc"], read_only=True))]))
    return client.ApiClient().sanitize_for_serialization(pod)
