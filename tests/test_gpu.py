"""GPU backends (issue 6). What needs no GPU is tested here for real: the QDQ ONNX TensorRT is built from
(onnxruntime's calibration on the CPU), the engine-inspector summary, onnxruntime's provider placement read
from a real profile, the plan's extra columns and `harness list` on a machine without CUDA. The GPU cells
themselves run only where a CUDA device is present, and are skipped with that reason otherwise."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from harness.backends import BACKENDS, Unsupported, get_backend
from harness.backends.base import cuda_device_present
from harness.backends.onnxruntime_backend import placement
from harness.backends.tensorrt_backend import layer_precisions, qdq_problems
from harness.config import load_target
from tests.conftest import run_cli, source_for, top1

GPU_BACKENDS = sorted(name for name, cls in BACKENDS.items() if "cuda" in cls.DEVICES)

# Engine-inspector JSON in TensorRT 10's documented layout (DETAILED verbosity): "Format/Datatype" strings.
# Hand-written from the documented format (no engine can be built without a GPU), not taken from an engine.
TRT10 = {"Layers": [
    {"Name": "Reformatting CopyNode for Input Tensor 0", "LayerType": "Reformat",
     "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32 format"}],
     "Outputs": [{"Name": "r", "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}]},
    {"Name": "conv1 + relu", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "r", "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}],
     "Outputs": [{"Name": "c", "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}]},
    {"Name": "conv2", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "c", "Format/Datatype": "Row major linear FP16 format"}], "Outputs": []},
    {"Name": "fc", "LayerType": "CaskGemmMatrixMultiply",
     "Inputs": [{"Name": "p", "Format/Datatype": "Row major linear FP32 format"}], "Outputs": []},
]}
# TensorRT 11 splits the field: a "DataType" of its own (e.g. "Half", "Int8").
TRT11 = {"Layers": [
    {"Name": "conv1", "LayerType": "CaskConvolution", "Inputs": [{"Name": "x", "DataType": "Half"}]},
    {"Name": "conv2", "LayerType": "CaskConvolution", "Inputs": [{"Name": "y", "DataType": "BFloat16"}]},
    {"Name": "shuffle", "LayerType": "NoOp", "Inputs": [{"Name": "z", "DataType": "Int8"}]},
]}


def test_layer_precisions_counts_layers_compute_layers_and_reformats():
    s = layer_precisions(TRT10)
    assert s["layers"] == 4 and s["reformat_layers"] == 1
    assert s["by_precision"] == {"fp16": 1, "fp32": 2, "int8": 1}
    assert s["compute_layers_by_precision"] == {"fp16": 1, "fp32": 1, "int8": 1}
    s = layer_precisions(TRT11)
    assert s["by_precision"] == {"bf16": 1, "fp16": 1, "int8": 1}
    assert s["compute_layers_by_precision"] == {"bf16": 1, "fp16": 1}


def test_layer_precisions_says_when_the_engine_has_no_detail():
    s = layer_precisions({"Layers": ["conv1 + relu", "fc"]})
    assert s == {"available": False, "why": "the engine was built without DETAILED profiling verbosity"}


@pytest.fixture(scope="module")
def resnet8(data_dir, shared_cache):
    return source_for("resnet8", data_dir, n_calib=50)


def test_tensorrt_int8_is_built_from_a_symmetric_int8_qdq_onnx(resnet8, tmp_path):
    """The calibration half of the TensorRT int8 cell, on the CPU: onnxruntime's quantize_static with the
    recipe's method, forced symmetric; every Q/DQ zero point is then int8 and 0, what TensorRT takes."""
    import onnx

    path, details = get_backend("tensorrt", "cuda").onnx_for(resnet8, "int8", tmp_path)
    model = onnx.load(str(path))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 5
    assert qdq_problems(model) == []
    assert details["activations"].startswith("int8 per-tensor symmetric") and "symmetric" in details["weights"]


def test_qdq_check_finds_what_tensorrt_would_refuse(resnet8, tmp_path):
    import onnx

    ort = get_backend("onnxruntime")
    for precision, words in (("uint8", "is uint8, TensorRT takes int8"), ("int8", "is not 0 (asymmetric)")):
        (tmp_path / precision).mkdir()
        art = ort.build(resnet8, precision, tmp_path / precision)  # onnxruntime's default: asymmetric activations
        problems = qdq_problems(onnx.load(str(art.path)))
        assert problems and any(words in p for p in problems), problems


def test_tensorrt_refuses_an_asymmetric_recipe_instead_of_ignoring_it(resnet8, tmp_path):
    src = dataclasses.replace(resnet8, recipe=dataclasses.replace(resnet8.recipe, activation_symmetric=False))
    with pytest.raises(Unsupported, match="sets activation_symmetric = False: TensorRT's explicit quantization"):
        get_backend("tensorrt", "cuda").onnx_for(src, "int8", tmp_path)


def test_onnxruntime_records_node_placement_from_its_own_profile(resnet8, tmp_path):
    ort = get_backend("onnxruntime")
    art = ort.build(resnet8, "int8", tmp_path)
    session = ort.load(art, 1)
    where = ort.inspect(session, art)["placement"]  # asked of the accuracy instance, never of a timed one
    assert where["provider"] == "CPUExecutionProvider" and where["fallback_nodes"] == []
    assert where["nodes_by_provider"]["CPUExecutionProvider"] > 10
    assert session.config["providers"] == ["CPUExecutionProvider"] and "placement" not in art.details
    assert not list(tmp_path.glob("ort-profile*")), "the profile trace is read and removed"


def test_placement_names_nodes_that_fell_back_to_the_cpu():
    def node(name, op, provider):
        return {"cat": "Node", "name": f"{name}_kernel_time", "args": {"op_name": op, "provider": provider}}

    events = [node("conv1", "Conv", "CUDAExecutionProvider"), node("q1", "QuantizeLinear", "CUDAExecutionProvider"),
              node("ci1", "ConvInteger", "CPUExecutionProvider"), node("ci2", "ConvInteger", "CPUExecutionProvider"),
              {"cat": "Session", "name": "model_run", "args": {}},
              {"cat": "Node", "name": "conv1_fence_before", "args": {"op_name": "Conv"}}]
    where = placement(events, "CUDAExecutionProvider")
    assert where["nodes_by_provider"] == {"CPUExecutionProvider": 2, "CUDAExecutionProvider": 2}
    assert where["fallback_ops"] == {"ConvInteger": 2} and where["fallback_nodes"] == ["ci1", "ci2"]


def test_a_cuda_target_adds_the_tensorrt_execution_provider_column():
    from harness.models import lookup
    from harness.runner import plan

    cfg = SimpleNamespace(models=("resnet20",), backends=("tensorrt", "onnxruntime", "torch"),
                          precisions=("fp32", "int8"), target=load_target("a100"), spec=lookup)
    cells = plan(cfg)
    assert ("resnet20", "onnxruntime", "int8", "trt-ep") in cells
    assert not [c for c in cells if c[1] != "onnxruntime" and c[3]]
    cpu = SimpleNamespace(**{**vars(cfg), "backends": ("onnxruntime",), "target": load_target("local")})
    assert all(c[3] == "" for c in plan(cpu))


@pytest.mark.skipif(cuda_device_present(), reason="this machine has a CUDA device")
def test_harness_list_reports_every_gpu_cell_unsupported_without_cuda():
    proc = run_cli("list", "--target", "a100")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("tensorrt: tensorrt not installed") for ln in lines) or \
        any(ln.startswith("tensorrt 1") for ln in lines)
    cells = [ln.strip() for ln in lines if ln.startswith("  ") and not ln.startswith("  note: ")]
    assert cells and all(ln.split(None, 1)[1] == "unsupported: no CUDA device" for ln in cells), cells


def test_gpu_cells_say_why_not_before_anything_runs():
    torch_cuda = get_backend("torch", "cuda")
    assert "CPU only" in (torch_cuda.UNSUPPORTED_ON["cuda"]["int8"])
    assert get_backend("tensorrt").why_not("fp32", "cpu") == "tensorrt runs on cuda only, not cpu"
    if not cuda_device_present():
        assert get_backend("tensorrt", "cuda").why_not("fp32", "cuda") == "no CUDA device"


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_gpu_cell_matches_torch_fp32(backend, precision, resnet8, test_split, tmp_path):
    """On a CUDA machine: build, load, predict 500 test images on the GPU; top-1 close to torch fp32 on the CPU."""
    impl = get_backend(backend, "cuda")
    reason = impl.why_not(precision, "cuda")
    if reason:
        pytest.skip(f"{backend} {precision} on cuda: {reason}")
    x, y = resnet8.spec.preprocess.apply(test_split.images[:500]), test_split.labels[:500]
    art = impl.build(resnet8, precision, tmp_path)
    predict = impl.load(art, 1)
    ref = get_backend("torch").load(get_backend("torch").build(resnet8, "fp32", tmp_path / "ref"), 1)
    assert abs(top1(predict, x, y) - top1(ref, x, y)) <= 2.0
    calls = predict.stages(np.ascontiguousarray(x[:1]))
    assert set(calls) == {"h2d", "compute", "d2h"}
    for call in calls.values():
        call()
