"""Thin sessions; the logic lives in the harness package (`python -m harness <verb>`)."""

import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
# uv ignores pip's settings; hand it the local wheelhouse so it takes the CPU torch wheel from there.
if os.environ.get("PIP_FIND_LINKS") and not os.environ.get("UV_FIND_LINKS"):
    os.environ["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]


@nox.session
def tests(session):
    """Run the test suite (real data, real runtimes; GPU cells skipped with a reason)."""
    session.install("-e", ".[cpu,dev]")
    session.run("pytest", "-ra", *session.posargs)


@nox.session
def lint(session):
    """Check style with ruff."""
    session.install("ruff")
    session.run("ruff", "check", "harness", "tests", "noxfile.py")


@nox.session
def bench(session):
    """Run the local matrix (resnet20, resnet56 x torch/onnxruntime/openvino x every precision)."""
    session.install("-e", ".[cpu]")
    session.run("python", "-m", "harness", "run", "--target", "local", *session.posargs)


@nox.session
def report(session):
    """Render results/ into results/README.md, results/report.html and results/plots/."""
    session.install("-e", ".")
    session.run("python", "-m", "harness", "report", *session.posargs)
