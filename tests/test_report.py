"""`harness report`: golden renderings of committed result sets, schema handling, escaping, duplicates."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.report import load_runs, md_escape, merge, render
from harness.results import CELL_SCHEMA_VERSION
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"


def md_tables(text: str) -> dict[str, list[list[str]]]:
    """Markdown tables by their bold title: rows of cell texts (header and separator dropped)."""
    out, title = {}, None
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if len(lines) == 1 and lines[0].startswith("**"):
            title = lines[0].strip("*")
        elif lines and lines[0].startswith("|") and title:
            out.setdefault(title, [])
            out[title] += [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines[2:]]
            title = None
    return out


@pytest.mark.parametrize("name", ["normal", "mixed", "two_targets", "old_schema"])
def test_golden_markdown(name, tmp_path):
    render([FIXTURES / name], tmp_path)
    got = (tmp_path / "README.md").read_text()
    golden = GOLDEN / f"{name}.md"
    if os.environ.get("PTQ_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", got):
        assert not link.startswith(("/", "http")) and (tmp_path / link).is_file()


def test_markdown_tables_are_valid_pipe_tables(tmp_path):
    render([FIXTURES / "two_targets"], tmp_path)
    lines = (tmp_path / "README.md").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ---") or line.startswith("|---"):
            header = lines[i - 1]
            width = header.count(" | ") + 1
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count(" | ") + 1 == width, lines[j]
                j += 1


def test_reasons_cannot_inject_markup(tmp_path):
    render([FIXTURES / "mixed"], tmp_path)
    md, html = (tmp_path / "README.md").read_text(), (tmp_path / "report.html").read_text()
    assert "<script>" not in md and "<script>" not in html
    assert "&lt;script&gt;" in html and "\\*boom\\*" in md and "\\[link\\]" in md
    assert md_escape("a|b") == "a\\|b"


def test_failed_and_unsupported_cells_show_with_reasons(tmp_path):
    render([FIXTURES / "mixed"], tmp_path)
    tables = md_tables((tmp_path / "README.md").read_text())
    top1 = tables["Top-1 accuracy (%)"]
    rows = {r[0]: r for r in top1}
    assert rows["Float32"][3].startswith("Timeout \\[")
    assert rows["Int8 (static)"][3].startswith("Failed \\[")
    assert rows["BFloat16"][2].startswith("Not supported \\[")


def test_old_schema_is_migrated():
    runs = load_runs([FIXTURES / "old_schema"])
    assert all(c["schema_version"] == CELL_SCHEMA_VERSION and c["variant"] == "" and c["recipe"]["name"] == "default"
               for c in runs[0]["cells"])
    ok = [c for c in runs[0]["cells"] if c["status"] == "ok"]
    # schema 3's peak_rss_bytes was ru_maxrss (the runner's peak leaks in): kept, but no build/run split invented
    assert ok and all(c["memory"]["run_peak_bytes"] is None and "ru_maxrss" in c["memory"]["note"] for c in ok)


def test_unknown_schema_is_refused_with_exit_2(tmp_path):
    proc = run_cli("report", str(FIXTURES / "unknown_schema"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "resnet8__torch__fp32.json: cell schema_version 99" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_duplicate_cells_show_the_newest_and_list_the_superseded(tmp_path):
    both = tmp_path / "both"
    shutil.copytree(FIXTURES / "normal", both / "a")
    shutil.copytree(FIXTURES / "mixed", both / "b")
    cells, superseded = merge(load_runs([both]))
    assert {c["run_id"] for c in cells} == {"run-b"}  # the newer run wins every shared cell
    assert ["local/resnet8/onnxruntime/fp32", "run-a", "run-b"] in [[r["text"] for r in row]
                                                                   for row in superseded["rows"]]
    with pytest.raises(UserError, match="two results for local/resnet8/onnxruntime/fp32: .* --strict"):
        merge(load_runs([both]), strict=True)
    proc = run_cli("report", str(both), "-o", str(tmp_path / "out"))  # what a newcomer runs: renders
    assert proc.returncode == 0, proc.stderr
    assert "## Superseded" in (tmp_path / "out" / "README.md").read_text()
    proc = run_cli("report", str(both), "-o", str(tmp_path / "strict"), "--strict")
    assert proc.returncode == 2 and "--strict" in proc.stderr and not (tmp_path / "strict").exists()


def test_html_is_self_contained(tmp_path):
    render([FIXTURES / "two_targets"], tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "Content-Security-Policy" in html and html.count("<svg") == 6
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<table>" in html and "x86-cpu" in html


def test_top1_is_marked_when_predictions_follow_the_first_shape():
    from harness.progress import cell_line
    from harness.tables import top1_text

    cell = {"status": "ok", "accuracy": {"top1": 90.4567, "first_shape_check": {"agree": 91.7}}, "size_bytes": 1e6,
            "latency_ms": {"p50": 1.0}, "throughput": [{"batch": 64, "images_per_s": 10.0}]}
    assert top1_text(cell) == "90.46†"
    assert cell_line(cell).startswith("top-1 90.46%†  ")
    cell["accuracy"]["first_shape_check"]["agree"] = 100.0
    assert top1_text(cell) == "90.46"
    del cell["accuracy"]["first_shape_check"]  # cells from before the check
    assert top1_text(cell) == "90.46"


def test_columns_are_labelled_and_explained_where_a_reader_could_mistake_them(tmp_path):
    """The legacy eager/FX column and IPEX's last release are named in the header and explained under the top-1
    table, and the two LiteRT paths are told apart, from the backends' own notes."""
    from harness.backends import BACKENDS
    from harness.tables import legend, matrix

    cells, _ = merge(load_runs([FIXTURES / "normal"]))
    for name in ("torch-inductor", "litert", "tflite", "ipex"):
        cells.append({**cells[0], "backend": name})
    table = matrix(cells, "top1")
    assert {"PyTorch (eager/FX, legacy)", "PyTorch (compiled)", "IPEX 2.8 (last release)",
            "TFLite (Keras converter)", "LiteRT (litert-torch)"} <= set(table["header"])
    assert table["legend"] == legend(cells)
    assert f"IPEX 2.8 (last release): {BACKENDS['ipex'].NOTE}" in table["legend"]
    assert any(line.startswith("PyTorch (eager/FX, legacy): legacy:") for line in table["legend"])
    render([FIXTURES / "normal"], tmp_path)
    assert "Columns:" in (tmp_path / "README.md").read_text()
