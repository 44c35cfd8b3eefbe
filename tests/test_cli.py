"""Bad input: one line naming the thing and what was expected, exit code 2, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.config import load_target, parse_settings
from harness.errors import UserError
from tests.conftest import run_cli

FAST = ["--test-limit", "50", "--calibration-size", "10", "--min-duration", "0.01", "--min-count", "2"]


def _assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("flag, value, expect", [
    ("--models", "resnet99", "resnet20"),
    ("--backends", "tensorflow", "onnxruntime"),
    ("--precisions", "int4", "fp32"),
    ("--target", "nowhere", "expected one of"),
    ("--batch-sizes", "a,b", "comma list of integers"),
])
def test_unknown_names_are_refused(flag, value, expect, tmp_path, data_dir):
    proc = run_cli("run", flag, value, "--data-dir", str(data_dir), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, value, expect)
    assert not (tmp_path / "run").exists()


def test_missing_data_dir_file(tmp_path):
    (tmp_path / "data").mkdir()
    proc = run_cli("run", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, "weight file", "resnet20-12fca82f.th")
    assert not (tmp_path / "run").exists()


def test_corrupt_data_file(tmp_path, data_dir):
    data = tmp_path / "data"
    shutil.copytree(data_dir / "akamaster_resnet_cifar10", data / "akamaster_resnet_cifar10")
    (data / "cifar10_test.npz").write_bytes(b"PK\x03\x04 truncated")
    proc = run_cli("run", "--models", "resnet20", "--data-dir", str(data), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, "cifar10_test.npz", "expected a CIFAR-10 npz")
    assert not (tmp_path / "run").exists()


def test_weight_checksum_mismatch(tmp_path, data_dir):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data, ignore=shutil.ignore_patterns("openvino_*", "mlperf_*"))
    weights = data / "akamaster_resnet_cifar10" / "resnet20-12fca82f.th"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    proc = run_cli("run", "--models", "resnet20", "--data-dir", str(data), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, "resnet20-12fca82f.th", "sha256", "expected 12fca82f")
    assert not (tmp_path / "run").exists()


def test_unwritable_output(tmp_path, data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("run", "--data-dir", str(data_dir), "--out", str(blocker / "run"))
    _assert_user_error(proc, "not a writable directory")


def test_existing_run_is_not_clobbered(tmp_path, data_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"schema_version": 1}')
    proc = run_cli("run", "--data-dir", str(data_dir), "--out", str(out))
    _assert_user_error(proc, "a run already exists", "--resume")
    assert (out / "run.json").read_text() == '{"schema_version": 1}'


def test_target_validation_names_file_key_and_expectation(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('schema_version = 1\nname = "bad"\ndevice = "tpu"\n')
    with pytest.raises(UserError, match=r"bad.toml: key 'device' = 'tpu': expected 'cpu' or 'cuda'"):
        load_target(str(bad))
    bad.write_text('schema_version = 1\nname = "bad"\ndevice = "cpu"\nbackends = ["torch"]\n'
                   'precisions = ["fp32"]\nmodels = ["resnet20"]\n[run]\nthreads = -1\n')
    with pytest.raises(UserError, match=r"key 'run.threads' = -1: expected a non-negative integer"):
        load_target(str(bad))
    with pytest.raises(UserError, match=r"run.batch_size"):
        parse_settings({"batch_size": [1]}, "x")


def test_every_shipped_target_is_valid():
    assert load_target("local").precisions[0] == "fp32"


def test_list_and_env_work(data_dir):
    proc = run_cli("list")
    assert proc.returncode == 0 and "onnxruntime" in proc.stdout and "unsupported:" in proc.stdout
    # the columns a reader must not mistake: IPEX's last release, the legacy torch.ao path, the two LiteRT paths
    assert "note: IPEX 2.8 is the last release" in proc.stdout and "note: legacy: eager mode" in proc.stdout
    assert "torch-inductor" in proc.stdout and "litert" in proc.stdout
    proc = run_cli("env")
    assert proc.returncode == 0 and '"avx2"' in proc.stdout and '"git"' in proc.stdout


def test_an_environment_too_big_for_the_disk_is_refused_before_installing(tmp_path):
    from harness import envs

    bad = tmp_path / "t.toml"
    bad.write_text('schema_version = 1\nname = "t"\ndevice = "cpu"\nbackends = ["ipex"]\nprecisions = ["fp32"]\n'
                   'models = ["resnet20"]\n[environments.big]\nbackends = ["ipex"]\nrequirements = ["x==1"]\n'
                   'disk_gb = -1\n')
    with pytest.raises(UserError, match=r"environments.big.disk_gb' = -1: expected a number of GB >= 0"):
        load_target(str(bad))
    bad.write_text(bad.read_text().replace("disk_gb = -1", "disk_gb = 1e9"))
    env = load_target(str(bad)).environments[0]
    with pytest.raises(envs.EnvError, match=r"environment 'big': needs about 1e\+09 GB free under .*GB free"):
        envs.ensure(env, tmp_path / "cache")
    assert not (tmp_path / "cache" / "envs" / env.key()).exists()


def test_an_output_that_cannot_be_created_is_exit_2(data_dir):
    proc = run_cli("run", "--models", "resnet8", "--data-dir", str(data_dir), "--out", "/proc/ptq-harness-run")
    _assert_user_error(proc, "--out /proc/ptq-harness-run", "cannot create")


@pytest.mark.parametrize("flag", ["--models", "--backends", "--precisions"])
def test_an_empty_selection_is_refused_not_read_as_the_default(flag, data_dir, tmp_path):
    proc = run_cli("run", flag, "", "--data-dir", str(data_dir), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, f"{flag} ''", "empty")
    assert not (tmp_path / "run").exists()


def test_the_end_of_a_run_names_its_wall_time_and_slowest_cells():
    from harness.progress import summary, wall_line

    cells = [{"model": "m", "backend": b, "precision": "fp32", "status": "unsupported", "duration_s": s}
             for b, s in (("a", 30.0), ("b", 90.0), ("c", 0.5))]
    line = wall_line(cells, 240.0, slowest=2)
    assert line == ("wall time 4.0 min for 3 cells (2.0 min in cells); slowest: m/b/fp32 90 s (38%), "
                    "m/a/fp32 30 s (12%)")
    table = summary(cells, "t", 240.0)
    assert [c._cells for c in table.columns[-2:]] == [["30", "90", "0"], ["12%", "38%", "0%"]]


def test_an_environment_keeps_one_harness_copy_per_code_version(tmp_path):
    """Two runs of different checkouts share a cache: each gets the copy of its own code, and neither deletes the
    other's under a running cell (the copy used to be refreshed in place)."""
    from harness import envs

    env = envs.Environment("e", ("ipex",), ("x==1",), 0.0)
    folder = envs.root(tmp_path) / env.key()
    folder.mkdir(parents=True)
    (folder / "ready.json").write_text("{}")  # as if installed: ensure() only copies the harness
    other = folder / "src" / "0123456789abcdef" / "harness"
    other.mkdir(parents=True)
    python = envs.ensure(env, tmp_path)
    mine = folder / "src" / envs.code_key()
    assert envs.pythonpath(python) == str(mine) and (mine / "harness" / "envs.py").read_bytes() == \
        Path(envs.__file__).read_bytes()
    assert other.is_dir() and sorted(p.name for p in (folder / "src").iterdir()) == sorted([other.parent.name,
                                                                                             mine.name])
    envs.ensure(env, tmp_path)  # the same version again: nothing copied twice, nothing left half-made
    assert len(list((folder / "src").iterdir())) == 2
    shutil.rmtree(mine)  # a read-only env built by another version (an image): the copy it was built with
    assert envs.pythonpath(python) == str(other.parent)
