"""The Recommendation block (harness/advice.py) on fixture cells with known figures: which cell each pick
takes, including the fastest cell excluded by a significant top-1 drop, and --max-drop moving the line."""

from __future__ import annotations

from harness.advice import recommendation


def cell(backend: str, precision: str, p50: float, thr: float, mb: float, top1: float, points=None, p=None) -> dict:
    delta = None if points is None else {"points": points, "p_value": p}
    return {"status": "ok", "backend": backend, "precision": precision, "variant": "", "latency_ms": {"p50": p50},
            "throughput": [{"batch": 64, "images_per_s": thr}], "size_bytes": int(mb * 1e6),
            "accuracy": {"top1": top1, "delta_vs_fp32": delta}, "diagnosis": None}


CELLS = [
    cell("onnxruntime", "fp32", 2.0, 500, 1.0, 91.0),
    cell("onnxruntime", "uint8", 1.0, 1000, 0.30, 90.8, -0.2, 0.50),  # within 0.5 points
    cell("onnxruntime", "dynamic", 0.9, 900, 0.28, 90.0, -1.0, 0.20),  # loses 1 point, but not significantly
    cell("openvino", "fp32", 1.8, 600, 1.0, 91.0),
    cell("openvino", "int8", 0.5, 2000, 0.25, 89.0, -2.0, 0.001),  # fastest and smallest: a significant drop
]


def picks(table: dict) -> dict[str, str]:
    return {row[0]["text"]: row[1]["text"] for row in table["rows"]}


def test_the_fastest_cell_with_a_significant_drop_is_not_picked():
    table = recommendation(CELLS, max_drop=0.5)
    assert picks(table) == {"Fastest at batch 1": "ONNX Runtime Dynamic range",
                            "Fastest at batch 64": "ONNX Runtime UInt8",
                            "Smallest": "ONNX Runtime Dynamic range",
                            "Fastest overall (batch 1)": "OpenVINO Int8 (static)"}
    overall = table["rows"][-1]
    assert overall[3]["text"] == ("top-1 89.00%, Δ -2.00 (p=0.001): not a pick above (loses more than 0.5 points, "
                                  "significantly)")
    assert overall[4]["text"] == "3.60x its fp32 at batch 1, 3.33x its fp32 at batch 64; next: ONNX Runtime " \
                                 "Dynamic range p50 0.900 ms"
    fastest = table["rows"][0]
    assert fastest[2]["text"] == "p50 0.900 ms" and fastest[3]["text"] == "top-1 90.00%, Δ -1.00 (p=0.2)"


def test_max_drop_moves_the_line():
    assert set(picks(recommendation(CELLS, max_drop=2.0)).values()) == {"OpenVINO Int8 (static)"}
    # 0 points: only drops McNemar calls noise (the dynamic cell's p = 0.2) and fp32 cells remain
    strict = picks(recommendation([c for c in CELLS if c["precision"] != "uint8"], max_drop=0.0))
    assert strict["Fastest at batch 1"] == "ONNX Runtime Dynamic range"
    assert strict["Fastest at batch 64"] == "ONNX Runtime Dynamic range"


def test_a_diagnosed_cell_is_named_under_the_picks():
    diagnosed = [dict(c) for c in CELLS]
    diagnosed[2]["diagnosis"] = [{"rule": "integer_ops", "evidence": "ConvInteger x19 80%", "advice": "static"}]
    notes = recommendation(diagnosed)["footnotes"]
    assert "ONNX Runtime Dynamic range ran 2.22x at batch 1, 1.80x at batch 64 against its fp32 (integer_ops; see " \
           "Why is it slower?)" in notes


def test_an_fp32_reference_on_reference_kernels_is_said_under_the_diagnoses():
    """torch eager fp32 on resnet20 (tests/fixtures/profiles/torch-bf16-swing.json, a real profile): at batch 1
    PyTorch ran its convolutions in aten::_slow_conv2d_forward, at batch 64 in oneDNN; only batch 1 is named."""
    import json
    from pathlib import Path

    from harness.advice import label, slower

    fx = json.loads((Path(__file__).parent / "fixtures" / "profiles" / "torch-bf16-swing.json").read_text())
    ref, bf16 = fx["ref"], fx["cell"]
    share = {b: p["shares"]["reference"] for b, p in ref["profile"]["batches"].items()}
    assert share["1"] >= 0.2 > share["64"]
    notes = slower([ref, bf16])["footnotes"]
    assert label(ref) == "PyTorch (eager/FX, legacy) Float32"
    assert notes[1:] == [f"The reference itself: {label(ref)} at batch 1 spent {share['1'] * 100:.0f}% of its op "
                         "time in reference kernels (aten::_slow_conv2d_forward); its framework's speedups at that "
                         "batch are against that portable path."]
    quick = json.loads(json.dumps(ref))
    quick["profile"]["batches"]["1"]["shares"]["reference"] = 0.0
    assert slower([quick, bf16])["footnotes"][1:] == []
