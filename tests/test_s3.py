"""Results through an S3-compatible bucket (a target's kubernetes.results_s3): the Job's manifest, and a run
folder pushed by `harness push-results` and pulled back by `harness fleet collect --kubernetes`, byte for byte,
against a real S3 API on loopback (moto's server; no network)."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest

from harness.config import REPO_ROOT
from tests.conftest import run_cli
from tests.test_cli import _assert_user_error
from tests.test_fleet import _render, _target_dir, kv, yaml

FIXTURE_RUN = REPO_ROOT / "tests" / "fixtures" / "two_targets" / "x86-cpu" / "run-c"
CREDS = {"AWS_ACCESS_KEY_ID": "ptq-test", "AWS_SECRET_ACCESS_KEY": "ptq-test-secret", "AWS_REGION": "us-east-1"}


def _s3_target(tmp_path: Path, endpoint: str = "https://s3.example.com:9000", swap: dict | None = None) -> dict:
    text = (REPO_ROOT / "targets" / "x86-cpu.toml").read_text().replace('name = "x86-cpu"', 'name = "x86-s3"')
    lines = f'results_s3 = "s3://ptq-results/bench"\ns3_secret = "ptq-s3"\ns3_endpoint = "{endpoint}"'
    text = text.replace('results_pvc = "ptq-results"', lines)
    for old, new in (swap or {}).items():
        assert old in text
        text = text.replace(old, new, 1)  # the first: the comment of x86-cpu.toml names these keys too
    return _target_dir(tmp_path, "x86-s3", text)


def test_a_job_with_results_s3_pushes_its_run_folder_and_validates(tmp_path):
    assert _render(tmp_path / "k8s", "x86-s3", _s3_target(tmp_path)).returncode == 0
    job, policy = yaml.safe_load_all((tmp_path / "k8s" / "x86-s3.yaml").read_text())
    for doc in (job, policy):
        kv.validate(doc, kv.latest_version(), strict=True)
    pod = job["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    run_id = job["metadata"]["labels"]["ptq-harness/run"].upper()
    out = f"/results/x86-s3/{run_id}"
    assert main["command"][:2] == ["sh", "-c"]
    # the run, then the push of its folder under <prefix>/<target>/<run id> even when cells failed (rc kept)
    assert main["command"][2] == (f"harness run --target x86-s3 --data-dir /data --out {out}; rc=$?; "
                                  f"if [ -f {out}/run.json ]; then "
                                  f"harness push-results {out} s3://ptq-results/bench/x86-s3/{run_id} || exit 3; "
                                  "fi; exit $rc")
    assert {"name": "PTQ_HARNESS_S3_ENDPOINT", "value": "https://s3.example.com:9000"} in main["env"]
    assert main["envFrom"] == [{"secretRef": {"name": "ptq-s3"}}]
    assert {v["name"]: v for v in pod["volumes"]}["results"] == {"name": "results", "emptyDir": {}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # the upload needs egress


@pytest.mark.parametrize("swap, fragments", [
    ({'s3_secret = "ptq-s3"': ""}, ["key 'kubernetes.s3_secret' = None", "required with results_s3"]),
    ({"s3://ptq-results/bench": "s3://PTQ/bench"}, ["key 'kubernetes.results_s3' = 's3://PTQ/bench'"]),
    ({"https://s3.example.com:9000": "s3.example.com"}, ["key 'kubernetes.s3_endpoint' = 's3.example.com'"]),
    ({'s3_secret = "ptq-s3"': 's3_secret = "ptq-s3"\nresults_pvc = "ptq-results"'},
     ["key 'kubernetes.results_pvc' = 'ptq-results'", "exactly one place for the results"]),
])
def test_bad_s3_settings_are_one_line_and_exit_2(tmp_path, swap, fragments):
    env = _s3_target(tmp_path, swap=swap)
    _assert_user_error(_render(tmp_path / "k8s", "x86-s3", env), *fragments)
    assert not (tmp_path / "k8s").exists()


@pytest.fixture
def s3_endpoint():
    server_mod = pytest.importorskip("moto.server", reason="moto[server] not installed (the dev extra)")
    minio = pytest.importorskip("minio", reason="minio not installed (the s3 extra)")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        minio.Minio(f"{host}:{port}", access_key=CREDS["AWS_ACCESS_KEY_ID"], secret_key=CREDS["AWS_SECRET_ACCESS_KEY"],
                    secure=False, region="us-east-1").make_bucket("ptq-results")
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_a_pushed_run_comes_back_whole_and_is_never_overwritten(tmp_path, s3_endpoint):
    env = {**_s3_target(tmp_path, s3_endpoint), **CREDS}
    run = tmp_path / "job" / "run-c"
    shutil.copytree(FIXTURE_RUN, run)
    url = "s3://ptq-results/bench/x86-s3/run-c"
    proc = run_cli("push-results", str(run), url, "--endpoint", s3_endpoint, env=env)
    files = sorted(p.relative_to(run) for p in run.rglob("*") if p.is_file())
    assert proc.returncode == 0 and f"{len(files)} files of" in proc.stdout, proc.stderr
    results = tmp_path / "results"
    proc = run_cli("fleet", "collect", "--kubernetes", "--targets", "x86-s3", "--results", str(results), env=env)
    assert proc.returncode == 0, proc.stderr
    back = results / "x86-s3" / "run-c"
    assert sorted(p.relative_to(back) for p in back.rglob("*") if p.is_file()) == files
    assert all(filecmp.cmp(run / f, back / f, shallow=False) for f in files)
    assert {(back / f).stat().st_mode & 0o777 for f in files} == {_result_mode(tmp_path)}  # as write_json's
    # the report of what came back (the fixture's cells say target x86-cpu, the folder's name is the fleet's)
    assert "x86-cpu" in (results / "README.md").read_text()
    # a second collect keeps identical files; a local file with other bytes stops it, untouched
    assert run_cli("fleet", "collect", "--kubernetes", "--targets", "x86-s3", "--results", str(results),
                   env=env).returncode == 0
    mine = back / "run.json"
    mine.write_text(mine.read_text() + "\n")
    before = mine.read_bytes()
    proc = run_cli("fleet", "collect", "--kubernetes", "--targets", "x86-s3", "--results", str(results), env=env)
    _assert_user_error(proc, f"{mine}: exists with other bytes", "never overwritten")
    assert mine.read_bytes() == before


def test_push_results_refuses_what_it_cannot_push(tmp_path, s3_endpoint):
    run = tmp_path / "run-c"
    shutil.copytree(FIXTURE_RUN, run)
    _assert_user_error(run_cli("push-results", str(tmp_path), "s3://ptq-results/x", "--endpoint", s3_endpoint,
                               env=CREDS), "not a run folder")
    _assert_user_error(run_cli("push-results", str(run), "http://ptq-results/x", env=CREDS), "expected s3://bucket")
    # an empty prefix pulls nothing: said, not an empty report
    env = {**_s3_target(tmp_path, s3_endpoint), **CREDS}
    env_text = (Path(env["PTQ_HARNESS_TARGETS"]) / "x86-s3.toml").read_text()
    (Path(env["PTQ_HARNESS_TARGETS"]) / "x86-s3.toml").write_text(env_text.replace("s3://ptq-results/bench",
                                                                                   "s3://ptq-results/empty"))
    _assert_user_error(run_cli("fleet", "collect", "--kubernetes", "--targets", "x86-s3", "--results",
                               str(tmp_path / "r"), env=env), "s3://ptq-results/empty/x86-s3/: no objects there")
    # a bucket that does not exist: the store's answer in one line
    _assert_user_error(run_cli("push-results", str(run), "s3://no-such-bucket/x", "--endpoint", s3_endpoint,
                               env=CREDS), "s3://no-such-bucket/x/", "NoSuchBucket")
    no_creds = {k: "" for k in CREDS}
    _assert_user_error(run_cli("push-results", str(run), "s3://ptq-results/x", "--endpoint", s3_endpoint,
                               env=no_creds), "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def _result_mode(folder: Path) -> int:
    """The permission bits write_json gives a result file here (readable by others, under this umask)."""
    from harness.results import write_json

    write_json(folder / "mode-probe" / "probe.json", {})
    return (folder / "mode-probe" / "probe.json").stat().st_mode & 0o777


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def test_the_volume_route_never_unpacks_over_a_result(tmp_path):
    # the results-volume route of fleet collect (tar through exec): the same rule as the S3 route
    from harness.errors import UserError
    from harness.k8s_io import untar_new

    files = {str(Path("x86-cpu/run-c") / p.relative_to(FIXTURE_RUN)): p.read_bytes()
             for p in sorted(FIXTURE_RUN.rglob("*")) if p.is_file()}
    results = tmp_path / "results"
    assert untar_new(_tar(files), results, "ns/pvc") == len(files)
    assert all((results / name).read_bytes() == data for name, data in files.items())
    # exactly the tar's files, no temp file left behind, readable as write_json's results are (not mkstemp's 0600)
    assert sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()) == sorted(files)
    assert {(results / name).stat().st_mode & 0o777 for name in files} == {_result_mode(tmp_path)}
    assert untar_new(_tar(files), results, "ns/pvc") == 0  # identical files are kept, nothing rewritten
    mine = results / "x86-cpu" / "run-c" / "run.json"
    mine.write_bytes(mine.read_bytes() + b"\n")
    before = mine.read_bytes()
    with pytest.raises(UserError, match=r"run-c/run.json: exists with other bytes than ns/pvc:x86-cpu/run-c/run"):
        untar_new(_tar(files), results, "ns/pvc")
    assert mine.read_bytes() == before
    # names that climb out of results/ and links out of it are refused; nothing lands outside
    for bad in (_tar({"../evil.json": b"{}"}), _tar({}, {"x86-cpu/out": "/etc/passwd"})):
        with pytest.raises(UserError, match="ns/pvc: .*nothing more collected"):
            untar_new(bad, results, "ns/pvc")
    assert not (tmp_path / "evil.json").exists() and not (results / "x86-cpu" / "out").exists()
