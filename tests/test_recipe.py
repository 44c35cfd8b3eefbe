"""Recipes: validation (exit 2 naming file, key and value), calibration selection, every backend honouring
a recipe or refusing it with a reason, and the run-to-run interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness import recipe
from harness.backends import BACKENDS, Unsupported, get_backend
from harness.config import load_target
from harness.measure import latency_interval, repeat_interval
from harness.prepare import select
from harness.recipe import Recipe
from harness.results import CELL_SCHEMA_VERSION
from tests.conftest import REPO, backend_scores, run_cli, source_for
from tests.test_cli import _assert_user_error

HEAD = 'schema_version = 1\nname = "t"\n'
RECIPES = REPO / "targets" / "recipes"


@pytest.mark.parametrize("body, fragments", [
    ('colour = "red"\n', ["key 'colour' = 'red'", "expected one of"]),
    ("[calibration]\nsize = 0\n", ["key 'calibration.size' = 0", "a positive integer"]),
    ('[calibration]\nmethod = "kl"\n', ["'calibration.method' = 'kl'", "minmax, entropy"]),
    ('[calibration]\nselection = "random"\n', ["'calibration.selection' = 'random'", "stratified, first"]),
    ('[calibration]\nsource = "index_file"\n', ["'calibration.index_file'", "a file"]),
    ('[calibration]\nsource = "index_file"\nindex_file = "nope.txt"\n', ["'nope.txt'", "an existing file"]),
    ('[quantization]\nweight_granularity = "per_row"\n', ["'quantization.weight_granularity' = 'per_row'"]),
    ('[quantization]\nactivation_symmetric = "yes"\n', ["'quantization.activation_symmetric' = 'yes'", "true"]),
    ("[quantization]\nbits = 4\n", ["'quantization.bits' = 4", "weight_granularity"]),
    ("[backends.nosuch]\nx = 1\n", ["'backends.nosuch'", "a backend"]),
    ("[backends.torch]\nreduce_range = 1\n", ["'backends.torch.reduce_range' = 1", "a bool"]),
    ("[backends.openvino]\nfast = true\n", ["'backends.openvino.fast' = True", "fast_bias_correction"]),
    ('[backends.openvino]\npreset = "fast"\n', ["'backends.openvino.preset' = 'fast'", "performance, mixed"]),
])
def test_bad_recipe_is_one_line_exit_2_naming_it(body, fragments, tmp_path, data_dir):
    path = tmp_path / "bad.toml"
    path.write_text(HEAD + body)
    proc = run_cli("run", "--recipe", str(path), "--data-dir", str(data_dir), "--out", str(tmp_path / "run"))
    _assert_user_error(proc, str(path), *fragments)
    assert not (tmp_path / "run").exists()


def test_recipe_schema_version_and_missing_file(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('schema_version = 2\nname = "t"\n')
    _assert_user_error(run_cli("run", "--recipe", str(path)), "schema_version", "2")
    _assert_user_error(run_cli("run", "--recipe", str(tmp_path / "none.toml")), "none.toml", "no such file")
    _assert_user_error(run_cli("run", "--recipe", '{"method": "kl"}'), "inline JSON", "'kl'")


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_recipes_are_valid_and_round_trip(path):
    r = recipe.load(str(path))
    assert r.name == path.stem
    assert recipe.load(json.dumps(r.to_dict())) == r  # what reproduce passes back in


def test_calibration_selection(tmp_path):
    labels = np.repeat(np.arange(10), 500)
    strat = select(Recipe(calibration_size=100, calibration_seed=3), labels)
    assert np.bincount(labels[strat]).tolist() == [10] * 10
    assert np.array_equal(strat, select(Recipe(calibration_size=100, calibration_seed=3), labels))
    assert not np.array_equal(strat, select(Recipe(calibration_size=100, calibration_seed=4), labels))
    assert select(Recipe(calibration_size=7, calibration_selection="first"), labels).tolist() == list(range(7))
    (tmp_path / "idx.txt").write_text("5, 17\n4999\n")
    (tmp_path / "r.toml").write_text(HEAD + '[calibration]\nsource = "index_file"\nindex_file = "idx.txt"\n')
    r = recipe.load(str(tmp_path / "r.toml"))
    assert r.calibration_size == 3 and select(r, labels).tolist() == [5, 17, 4999]
    with pytest.raises(Exception, match="outside the 10-image calibration pool"):
        select(r, labels[:10])


MINMAX = recipe.load(str(RECIPES / "minmax-per-tensor-1000.toml"))


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_backend_honours_the_per_tensor_minmax_recipe_or_says_why(backend, data_dir, shared_cache, tmp_path):
    """In-process, or inside the backend's own environment (ipex) as `harness run` would run it."""
    src = source_for("resnet20", data_dir, 100)
    src.recipe = MINMAX
    if load_target("local").environment_of(backend):
        _, _, details = backend_scores(backend, "int8", src, src.calib[:10], tmp_path)
    else:
        impl = get_backend(backend)
        if impl.why_not("int8", "cpu"):
            pytest.skip(impl.why_not("int8", "cpu"))
        try:
            details = impl.build(src, "int8", tmp_path).details
        except Unsupported as exc:
            assert "recipe 'minmax-per-tensor-1000'" in str(exc)
            return
    text = json.dumps(details).lower()
    assert "per-tensor" in text or "per_tensor" in text, details
    assert "minmax" in text


@pytest.mark.parametrize("backend", ["tflite", "openvino", "torch"])
def test_a_setting_a_backend_cannot_do_is_unsupported_not_ignored(backend, data_dir, shared_cache, tmp_path):
    impl = get_backend(backend)
    if impl.why_not("int8", "cpu"):
        pytest.skip(impl.why_not("int8", "cpu"))
    src = source_for("resnet20", data_dir, 10)
    src.recipe = Recipe(name="kl", method="entropy")
    with pytest.raises(Unsupported, match="recipe 'kl' sets method = 'entropy'"):
        impl.build(src, "int8", tmp_path)


def test_onnxruntime_refuses_the_calibration_flush_option_that_drops_ranges(data_dir, shared_cache, tmp_path):
    """onnxruntime 1.32's MinMax calibrator clears flushed batches without merging their ranges."""
    src = source_for("resnet20", data_dir, 10)
    src.recipe = Recipe(name="flush", backend_options={"onnxruntime": {
        "extra_options": {"CalibMaxIntermediateOutputs": 2}}})
    with pytest.raises(Unsupported, match="discards each flushed batch"):
        get_backend("onnxruntime").build(src, "int8", tmp_path)


def test_onnxruntime_per_tensor_weights_have_one_scale(data_dir, shared_cache, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    src = source_for("resnet20", data_dir, 20)
    for name, r in (("pc", Recipe()), ("pt", MINMAX)):
        src.recipe = r
        (tmp_path / name).mkdir()
        art = get_backend("onnxruntime").build(src, "uint8", tmp_path / name)
        inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(art.path)).graph.initializer}
        scales = [v for k, v in inits.items() if k.endswith("_scale") and "weight" in k.lower()]
        assert scales
        sizes = {int(np.asarray(s).size) for s in scales}
        assert (sizes == {1}) == (name == "pt"), (name, sizes)


def test_onnxruntime_uint8_weights_take_7_bits_exactly_where_u8s8_saturates(data_dir, shared_cache, tmp_path):
    """U8S8's default is 7-bit weights ([-64, 64]) on a CPU without VNNI, the full int8 range with it; the recipe
    option overrides either way. The quantized weight initializers show which range was used."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from harness.envinfo import has_vnni

    src = source_for("resnet20", data_dir, 20)
    for name, opt in (("default", None), ("on", True), ("off", False)):
        src.recipe = Recipe(name=name, backend_options={"onnxruntime": {} if opt is None else {"reduce_range": opt}})
        (tmp_path / name).mkdir()
        art = get_backend("onnxruntime").build(src, "uint8", tmp_path / name)
        weights = [numpy_helper.to_array(i) for i in onnx.load(str(art.path)).graph.initializer
                   if i.data_type == onnx.TensorProto.INT8 and i.dims and len(i.dims) == 4]  # the conv weights
        assert len(weights) == 19, len(weights)
        top = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
        reduced = (not has_vnni()) if opt is None else opt
        # symmetric per-channel: each channel's largest weight lands on the range's end
        assert top == (64 if reduced else 127), (name, top)
        assert art.details["weights"].endswith(f"reduce_range={reduced}")
        assert ("no VNNI" in art.details["reduce_range_why"]) == (opt is None and reduced)


def test_repeat_interval_is_student_t():
    iv = repeat_interval([1.0, 2.0, 3.0])
    assert iv["value_ms"] == 2.0 and iv["n"] == 3
    assert iv["half_width_ms"] == pytest.approx(4.303 * 1.0 / np.sqrt(3))
    assert iv["low_ms"] < 2.0 < iv["high_ms"]
    assert repeat_interval([5.0, 5.0])["half_width_ms"] == 0.0
    assert repeat_interval([1.0])["half_width_ms"] == 0.0


def test_latency_interval_prefers_the_run_to_run_one():
    cell = {"latency_ms": {"p50": 1.0}, "latency_samples_ms": [1.0, 1.1, 0.9, 1.0],
            "latency_interval": repeat_interval([1.0, 1.2, 1.1])}
    assert latency_interval(cell)[3] == "run-to-run"
    assert latency_interval({**cell, "latency_interval": None})[3] == "within-process"
    assert latency_interval({"latency_ms": {"p50": 2.0}}) == (2.0, 2.0, 2.0, "none")


def test_old_cells_migrate_to_the_default_recipe():
    from harness.results import load_cells

    cells = load_cells(Path(__file__).parent / "fixtures" / "old_schema" / "local" / "run-d")
    assert cells and all(c["schema_version"] == CELL_SCHEMA_VERSION and c["recipe"]["name"] == "default" for c in cells)
    assert all(c["recipe"]["calibration_size"] == c["calibration"]["size"] for c in cells)
