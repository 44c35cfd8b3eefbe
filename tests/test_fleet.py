"""`harness fleet`: Kubernetes manifests validated against the Kubernetes schemas (kubernetes-validate, not string
comparison), bad fleet input as one line and exit 2, and the engine plan (targets on one engine take turns)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.config import REPO_ROOT, load_target
from tests import engines
from tests.conftest import run_cli
from tests.test_cli import _assert_user_error

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (the dev extra)")
yaml = pytest.importorskip("yaml")
DIGEST = "sha256:" + "ab" * 32


def _render(out: Path, targets: str = "x86-cpu,t4,a100", env: dict | None = None, *extra: str):
    digests = [a for t in targets.split(",") for a in ("--digest", f"{t}={DIGEST}")]
    return run_cli("fleet", "render", "--kubernetes", "--targets", targets, "-o", str(out), *digests, *extra, env=env)


def test_rendered_jobs_pass_the_kubernetes_schemas_and_carry_the_targets_placement(tmp_path):
    proc = _render(tmp_path / "k8s", "x86-cpu,t4,a100", None, "--", "--models", "resnet20", "--repeat", "3")
    assert proc.returncode == 0, proc.stderr
    version = kv.latest_version()
    for name, gpus in (("x86-cpu", 0), ("t4", 1), ("a100", 1)):
        job, policy = yaml.safe_load_all((tmp_path / "k8s" / f"{name}.yaml").read_text())
        for doc in (job, policy):  # strict: a misspelled field fails, not only a wrong type
            assert kv.validate(doc, version, strict=True) == ".".join(version.split(".")[:2])
        target = load_target(name)
        pod = job["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        assert main["image"] == f"{target.container['registry']}@{DIGEST}"
        assert main["command"][:4] == ["harness", "run", "--target", name]
        assert main["command"][-4:] == ["--models", "resnet20", "--repeat", "3"]
        res = main["resources"]
        assert res["requests"] == res["limits"]  # Guaranteed QoS: whole cores
        assert res["requests"]["cpu"] == target.kubernetes["cpu"]
        assert res["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)
        volumes = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"]}
        assert volumes["data"] == {"claimName": "ptq-data", "readOnly": True}
        assert "readOnly" not in volumes["results"]
        if gpus:
            (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"]
            assert term["matchExpressions"][0]["key"] == "nvidia.com/gpu.product"
            assert term["matchExpressions"][0]["values"] == target.kubernetes["gpu_products"]
        else:
            assert pod["nodeSelector"] == target.kubernetes["node_selector"] and "affinity" not in pod
        # the policy selects exactly the Job's pods and lets nothing in or out
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= job["spec"]["template"]["metadata"][
            "labels"].items()
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert policy["spec"]["ingress"] == [] and policy["spec"]["egress"] == []


def test_a_job_that_fetches_its_data_has_an_init_container_and_keeps_egress(tmp_path):
    """data_fetch: `harness fetch-data` in an init container fills an emptyDir the benchmark reads read-only;
    the pod's policy then closes ingress only (a NetworkPolicy covers the whole pod, downloads included)."""
    text = (REPO_ROOT / "targets" / "x86-cpu.toml").read_text().replace('name = "x86-cpu"', 'name = "x86-fetch"')
    text = text.replace('data_pvc = "ptq-data"', 'data_fetch = true\ndata_mirror = "https://mirror.example.com/ptq/"')
    env = _target_dir(tmp_path, "x86-fetch", text)
    assert _render(tmp_path / "k8s", "x86-fetch", env).returncode == 0
    job, policy = yaml.safe_load_all((tmp_path / "k8s" / "x86-fetch.yaml").read_text())
    for doc in (job, policy):
        kv.validate(doc, kv.latest_version(), strict=True)
    pod = job["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["command"] == ["harness", "fetch-data", "--data-dir", "/data", "--target", "x86-fetch"]
    assert fetch["env"] == [{"name": "PTQ_HARNESS_MIRROR", "value": "https://mirror.example.com/ptq/"}]
    assert fetch["image"] == pod["containers"][0]["image"]
    assert {v["name"]: v for v in pod["volumes"]}["data"] == {"name": "data", "emptyDir": {}}
    assert {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}["data"]["readOnly"] is True
    assert policy["spec"]["policyTypes"] == ["Ingress"] and "egress" not in policy["spec"]
    both = text.replace("data_fetch = true", 'data_fetch = true\ndata_pvc = "ptq-data"')
    env = _target_dir(tmp_path, "x86-fetch", both)
    _assert_user_error(_render(tmp_path / "k8s2", "x86-fetch", env), "exactly one source of data")


def test_the_validator_would_fail_a_broken_manifest(tmp_path):
    """The check above can fail: the same Job with a misspelled key or a wrong type does not validate."""
    assert _render(tmp_path / "k8s", "t4").returncode == 0
    job, _ = yaml.safe_load_all((tmp_path / "k8s" / "t4.yaml").read_text())
    job["spec"]["template"]["spec"]["nodeSelecter"] = {"a": "b"}
    with pytest.raises(kv.ValidationError):
        kv.validate(job, kv.latest_version(), strict=True)
    del job["spec"]["template"]["spec"]["nodeSelecter"]
    job["spec"]["backoffLimit"] = "0"
    with pytest.raises(kv.ValidationError):
        kv.validate(job, kv.latest_version(), strict=True)


def _target_dir(tmp_path: Path, name: str, text: str) -> dict:
    folder = tmp_path / "targets"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.toml").write_text(text)
    return {"PTQ_HARNESS_TARGETS": str(folder)}


def _t4_with(old: str, new: str) -> str:
    text = (REPO_ROOT / "targets" / "t4.toml").read_text().replace('name = "t4"', 'name = "t4b"')
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize("change, fragments", [
    (('registry = "registry.example.com/ptq-harness"', 'registry = "Registry.example.com/x:latest"'),
     ["t4b.toml: key 'container.registry' = 'Registry.example.com/x:latest'", "without a tag"]),
    (('gpu_products = ["Tesla-T4"]', 'gpu_products = ["Tesla T4"]'),
     ["key 'kubernetes.gpu_products' = 'Tesla T4'", "GPU Feature Discovery"]),
    (('gpu_products = ["Tesla-T4"]', 'node_selector = { "bad key/x/y" = "v" }'),
     ["key 'kubernetes.node_selector.bad key/x/y' = 'v'", "a label key"]),
    (('memory = "32Gi"', 'memory = "32 GB"'), ["key 'kubernetes.memory' = '32 GB'", "quantity"]),
    (('results_pvc = "ptq-results"', ''), ["key 'kubernetes.results_pvc' = None", "exactly one place for the results"]),
])
def test_a_bad_kubernetes_target_is_one_line_and_exit_2(tmp_path, change, fragments):
    env = _target_dir(tmp_path, "t4b", _t4_with(*change))
    proc = _render(tmp_path / "k8s", "t4b", env)
    _assert_user_error(proc, *fragments)
    assert not (tmp_path / "k8s").exists()  # nothing written


def test_a_kubernetes_target_needs_a_name_a_cluster_accepts(tmp_path):
    text = (REPO_ROOT / "targets" / "t4.toml").read_text().replace('name = "t4"', 'name = "T4_box"')
    env = _target_dir(tmp_path, "T4_box", text)
    _assert_user_error(_render(tmp_path / "k8s", "T4_box", env), "key 'name' = 'T4_box'", "at most 42 characters")


def test_a_target_that_fails_or_raises_costs_only_itself(tmp_path, monkeypatch):
    """The reason is the child's error line even after later output; an exception inside a lane fails that
    target only, and the lane goes on to the next target."""
    import subprocess
    import sys

    from harness import container, fleet

    folder = tmp_path / "targets"
    smoke = (REPO_ROOT / "targets" / "smoke.toml").read_text()
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.toml").write_text(smoke.replace('name = "smoke"', f'name = "{name}"'))
    targets = [load_target(str(folder / f"{n}.toml")) for n in "abc"]
    child = {"a": "import sys; print('run folder: nowhere'); print('harness: error: the build failed', "
                  "file=sys.stderr); print('cleaning up'); sys.exit(2)",
             "c": "print('run folder: elsewhere'); print('done')"}

    def command(target, results, args, resume):
        if target.name == "b":
            raise OSError("no such interpreter")
        return [sys.executable, "-c", child[target.name]]

    monkeypatch.setattr(fleet, "_command", command)
    monkeypatch.setattr(container, "docker", lambda *a, **k: subprocess.CompletedProcess(a, 0, "27.0", ""))
    record = fleet.Record.new(tmp_path / "results", targets, [])
    fleet.run_lane(targets, record, tmp_path / "results", [])
    got = {n: (e["status"], e["reason"], e["run"]) for n, e in record.data["targets"].items()}
    assert got == {"a": ("failed", "the build failed", "nowhere"), "b": ("failed", "OSError: no such interpreter",
                                                                      None), "c": ("ok", None, "elsewhere")}
    assert json.loads(record.path.read_text())["targets"] == record.data["targets"]  # on disk as in memory
    assert fleet.finish(record) == 1


@pytest.mark.parametrize("targets, fragments", [
    ("x86-cpu,nosuch", ["target 'nosuch': no file", "expected one of"]),
    ("x86-cpu,local", ["--targets local", "no [container] table"]),
    ("x86-cpu,smoke", ["--targets smoke", "no [kubernetes] table"]),
    ("t4,t4", ["--targets 't4,t4': t4 named twice"]),
])
def test_bad_fleet_targets_are_one_line_and_exit_2(tmp_path, targets, fragments):
    _assert_user_error(_render(tmp_path / "k8s", targets), *fragments)
    assert not (tmp_path / "k8s").exists()


def test_a_digest_that_is_not_one_and_an_existing_manifest_are_refused(tmp_path):
    proc = run_cli("fleet", "render", "--kubernetes", "--targets", "t4", "-o", str(tmp_path / "k8s"), "--digest",
                   "t4=latest")
    _assert_user_error(proc, "--digest t4=latest", "sha256:")
    assert _render(tmp_path / "k8s", "t4").returncode == 0
    before = (tmp_path / "k8s" / "t4.yaml").read_bytes()
    _assert_user_error(_render(tmp_path / "k8s", "t4,a100"), "t4.yaml: exists")
    assert (tmp_path / "k8s" / "t4.yaml").read_bytes() == before and not (tmp_path / "k8s" / "a100.yaml").exists()


def test_targets_on_one_engine_take_turns_and_the_others_run_at_once(tmp_path, monkeypatch):
    from harness import fleet

    folder = tmp_path / "targets"
    folder.mkdir()
    smoke = (REPO_ROOT / "targets" / "smoke.toml").read_text()
    for name, host in (("a", ""), ("b", "unix:///engine-b.sock"), ("c", "")):
        text = smoke.replace('name = "smoke"', f'name = "{name}"').replace(
            'gpus = false', f'gpus = false\ndocker_host = "{host}"')
        (folder / f"{name}.toml").write_text(text)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    plan = fleet.lanes([load_target(str(folder / f"{n}.toml")) for n in "abc"])
    assert [[t.name for t in lane] for lane in plan] == [["a", "c"], ["b"]]
    assert fleet.engine_of(plan[1][0]) == "unix:///engine-b.sock"


# --- fleet run over Docker engines: the small smoke image, two engines (the default one and a second dockerd)

RUN = ["--models", "resnet20", "--test-limit", "200", "--calibration-size", "20"]


@pytest.fixture(scope="module")
def engine_b(tmp_path_factory):
    with engines.second_engine(tmp_path_factory.mktemp("engineb")) as sock:
        yield sock


def _smoke_targets(folder: Path, hosts: dict[str, str]) -> dict:
    """Copies of the smoke target, each on its own engine; PTQ_HARNESS_TARGETS makes them known (and
    `harness container build` puts a target kept outside targets/ into its image)."""
    folder.mkdir(exist_ok=True)
    smoke = (REPO_ROOT / "targets" / "smoke.toml").read_text()
    for name, host in hosts.items():
        (folder / f"{name}.toml").write_text(smoke.replace('name = "smoke"', f'name = "{name}"').replace(
            "gpus = false", f'gpus = false\ndocker_host = "{host}"'))
    return {"PTQ_HARNESS_TARGETS": str(folder)}


def _fleet(targets: str, results: Path, data_dir: Path, env: dict, *extra: str):
    t0 = time.perf_counter()
    proc = run_cli("fleet", "run", "--targets", targets, "--results", str(results), *extra, "--", "--data-dir",
                   str(data_dir), *RUN, env=env)
    return proc, time.perf_counter() - t0


def _record(results: Path) -> dict:
    (path,) = (results / "fleets").glob("*/fleet.json")
    return json.loads(path.read_text())


@pytest.mark.timing  # wall times of whole runs compared: alone on the machine (see the noxfile)
def test_a_fleet_runs_two_engines_at_once_and_merges_them(engine_b, data_dir, tmp_path):
    env = _smoke_targets(tmp_path / "targets", {"smoke-a": "", "smoke-b": engine_b})
    for name in ("smoke-a", "smoke-b"):  # the images first: the wall times compare runs, not builds
        proc = run_cli("container", "build", "--target", name, env=env)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    alone = {}
    for name in ("smoke-a", "smoke-b"):
        proc, alone[name] = _fleet(name, tmp_path / f"alone-{name}", data_dir, env)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    proc, both = _fleet("smoke-a,smoke-b", tmp_path / "fleet", data_dir, env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert both < sum(alone.values()), (both, alone)
    record = _record(tmp_path / "fleet")
    assert record["schema_version"] == 1 and record["targets"]["smoke-b"]["engine"] == engine_b
    for name, entry in record["targets"].items():
        assert entry["status"] == "ok" and entry["reason"] is None and entry["wall_s"] > 0
        run = Path(entry["run"])
        assert run.parent == tmp_path / "fleet" / name and (run / "run.json").is_file()
        cells = [json.loads(p.read_text()) for p in (run / "cells").glob("*.json")]
        assert len(cells) == 2 and {c["status"] for c in cells} == {"ok"}, [c["reason"] for c in cells]
        assert f"[{name}] resnet20 / onnxruntime / fp32: top-1" in proc.stdout  # its progress, named
    md = (tmp_path / "fleet" / "fleets" / record["fleet_id"] / "report" / "README.md").read_text()
    assert "## resnet20 on smoke-a" in md and "## resnet20 on smoke-b" in md
    print(f"fleet wall: {both:.1f} s at once, {alone} one after the other")


def test_an_engine_down_costs_only_its_target_and_resume_finishes_the_fleet(engine_b, data_dir, tmp_path):
    """smoke-down's engine is a socket no dockerd listens on (an engine stopped): smoke-a finishes, fleet.json
    names smoke-down and why, exit 1. With its engine back (here: the second engine), --resume runs smoke-down
    only; smoke-a's run is not redone."""
    down = f"unix://{tmp_path}/stopped.sock"
    env = _smoke_targets(tmp_path / "targets", {"smoke-a": "", "smoke-down": down})
    proc, _ = _fleet("smoke-a,smoke-down", tmp_path / "r", data_dir, env)
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    record = _record(tmp_path / "r")
    assert record["targets"]["smoke-a"]["status"] == "ok"
    failed = record["targets"]["smoke-down"]
    assert failed["status"] == "failed" and failed["reason"].startswith(f"Docker engine {down} does not answer")
    assert f"fleet: smoke-down failed: Docker engine {down} does not answer" in proc.stderr
    finished = {p: p.stat().st_mtime_ns for p in Path(record["targets"]["smoke-a"]["run"]).rglob("*.json")}
    _smoke_targets(tmp_path / "targets", {"smoke-down": engine_b})  # the engine is back
    proc, _ = _fleet("smoke-a,smoke-down", tmp_path / "r", data_dir, env, "--resume")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "[smoke-a] finished in an earlier try" in proc.stdout
    assert {n: e["status"] for n, e in _record(tmp_path / "r")["targets"].items()} == {"smoke-a": "ok",
                                                                                        "smoke-down": "ok"}
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # smoke-a's run untouched


def test_a_container_run_left_unfinished_goes_on_without_redoing_its_cells(data_dir, tmp_path):
    """--resume-run: the run folder goes back into the container (owned by its user) and `harness run --resume`
    skips the cells it holds; the cell removed here is the only one made again."""
    if not engines.engine_ready():
        pytest.skip("no Docker engine answers here")
    results = tmp_path / "r"
    args = ["--", "--data-dir", str(data_dir), *RUN]
    proc = run_cli("container", "run", "--target", "smoke", "--results", str(results), *args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (run,) = (results / "smoke").iterdir()
    cells = sorted((run / "cells").glob("*.json"))
    kept, removed = cells[0], cells[1]
    before = json.loads(kept.read_text())
    removed.unlink()
    proc = run_cli("container", "run", "--target", "smoke", "--results", str(results), "--resume-run", str(run),
                   *args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (proc.stdout + proc.stderr).count("skip resnet20 / onnxruntime") == 1
    assert json.loads(kept.read_text()) == before and json.loads(removed.read_text())["status"] == "ok"
    assert [p.name for p in (results / "smoke").iterdir()] == [run.name]  # the same run folder, no second one
