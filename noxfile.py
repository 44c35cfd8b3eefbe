"""Thin sessions; the logic lives in the harness package (`python -m harness <verb>`)."""

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
# uv ignores pip's settings; hand it the local wheelhouse so it takes the CPU torch wheel from there.
if os.environ.get("PIP_FIND_LINKS") and not os.environ.get("UV_FIND_LINKS"):
    os.environ["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]


# onnx2torch (ONNX model cards into the PyTorch backends), installed without its dependencies: why in the file
NO_DEPS = ("--no-deps", "-r", "targets/locks/no-deps.txt")


@nox.session
def tests(session):
    """Run the test suite (real data, real runtimes; GPU cells skipped with a reason)."""
    session.install("-e", ".[cpu,dev]")
    session.install(*NO_DEPS)
    # Two passes. The bulk on two pytest-xdist workers (the tests that read the shared runs on one of them;
    # see tests/conftest.py), then the tests that judge timed figures (marker `timing`) alone on the machine,
    # re-using the runs the first pass made (kept in PTQ_TEST_RUNS). No test is left out of both.
    runs = Path(session.virtualenv.location) / "test-runs"  # not create_tmp(): that moves TMPDIR for every test
    shutil.rmtree(runs, ignore_errors=True)
    # one cache for both passes and both workers (each would otherwise install the IPEX env into a temp cache)
    cache = os.environ.get("PTQ_HARNESS_CACHE") or str(Path(".nox/ptq-cache").resolve())
    env = {"PTQ_TEST_RUNS": str(runs), "PTQ_HARNESS_CACHE": cache}
    session.run("pytest", "-ra", "-n", "2", "--dist", "loadgroup", "-m", "not timing", *session.posargs, env=env)
    # exit 5: the posargs selected no timing test
    session.run("pytest", "-ra", "-m", "timing", *session.posargs, env=env, success_codes=[0, 5])


@nox.session
def lint(session):
    """Check style with ruff."""
    session.install("ruff")
    session.run("ruff", "check", "harness", "tests", "noxfile.py")


@nox.session
def bench(session):
    """Run the local matrix (resnet20, resnet56 x every CPU backend x every precision)."""
    session.install("-e", ".[cpu]")
    session.install(*NO_DEPS)
    # --profile: per-op profiles and diagnoses, after every timed figure (--no-profile in posargs turns it off)
    session.run("python", "-m", "harness", "run", "--target", "local", "--profile", *session.posargs)


@nox.session
def report(session):
    """Render results/ into results/README.md, results/report.html and results/plots/."""
    session.install("-e", ".")
    session.run("python", "-m", "harness", "report", *session.posargs)


@nox.session
def compare(session):
    """Compare two run folders cell by cell: nox -s compare -- RUN_A RUN_B (exit 1 on a regression)."""
    session.install("-e", ".")
    session.run("python", "-m", "harness", "compare", *session.posargs)


@nox.session
def crosscheck(session):
    """Re-time a run's cells with each runtime's own benchmark tool: nox -s crosscheck -- RUN_DIR."""
    session.install("-e", ".[cpu]")
    session.install(*NO_DEPS)
    session.run("python", "-m", "harness", "crosscheck", *session.posargs)


@nox.session
def sweep(session):
    """Calibration sweep: nox -s sweep -- --models resnet20 --calibration-size 10,100,1000,5000."""
    session.install("-e", ".[cpu]")
    session.install(*NO_DEPS)
    session.run("python", "-m", "harness", "sweep", "--target", "local", *session.posargs)


@nox.session
def reproduce(session):
    """Re-run a results folder in its recorded environment and compare: nox -s reproduce -- RUN_DIR."""
    session.install("-e", ".[cpu]")  # a run recorded without an image re-runs on this machine
    session.install(*NO_DEPS)
    session.run("python", "-m", "harness", "reproduce", *session.posargs)


@nox.session
def images(session):
    """Build (or reuse) the image of every container target."""
    session.install("-e", ".")
    session.run("python", "-m", "harness", "container", "build")


@nox.session(name="bench-fleet")
def bench_fleet(session):
    """Run container targets at once, one Docker engine each: nox -s bench-fleet -- --targets A,B -- ARGS."""
    session.install("-e", ".[fleet]")
    session.run("python", "-m", "harness", "fleet", "run", *session.posargs)


def _bench_target(name):
    def bench_target(session):
        session.install("-e", ".")
        session.run("python", "-m", "harness", "container", "run", "--target", name, "--", "--profile",
                    *session.posargs)

    bench_target.__doc__ = f"Build the {name} image (cached) and run the {name} matrix inside it."
    return bench_target


# One bench-<target> session per targets/*.toml that has a [container] table.
for _toml in sorted(Path(__file__).parent.glob("targets/*.toml")):
    if "\n[container]" in _toml.read_text():
        nox.session(name=f"bench-{_toml.stem}")(_bench_target(_toml.stem))
