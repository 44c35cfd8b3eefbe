"""A real browser opens report.html: tables and plots are in the DOM and the page paints (not blank)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.report import render

FIXTURES = Path(__file__).parent / "fixtures"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")


def _chromium(tmp_path: Path, *args: str) -> str:
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_report_renders_in_headless_chromium(tmp_path):
    render([FIXTURES / "two_targets"], tmp_path / "out")
    url = (tmp_path / "out" / "report.html").as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.count("<table") >= 10 and dom.count("<svg") == 6 and "Pareto front" in dom
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", url)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[0] >= 2000
    dark = (pixels.mean(axis=2) < 0.5).mean()
    assert dark > 0.005, "the page painted (nearly) nothing"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, lines and coloured markers
