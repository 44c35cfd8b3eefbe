"""Every registered backend x every precision: built for real on resnet20, or skipped with its reason."""

from __future__ import annotations

import pytest

from harness.backends import BACKENDS, Unsupported, get_backend
from harness.config import PRECISIONS
from harness.models import ZOO
from tests.conftest import source_for, top1

N = 500
MODEL = "resnet20"


@pytest.fixture(scope="module")
def setup(data_dir, test_split, shared_cache):
    src = source_for(MODEL, data_dir, 100)
    x = ZOO[MODEL].preprocess.apply(test_split.images[:N])
    return src, x, test_split.labels[:N]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_cell_builds_and_keeps_accuracy(backend, precision, setup, tmp_path):
    impl = get_backend(backend)
    probe = impl.probe()
    if not probe.installed:
        pytest.skip(probe.reason)
    reason = impl.supports(precision, "cpu")
    if reason:
        assert len(reason) > 20  # a real explanation, not a bare "no"
        pytest.skip(f"{backend} {precision}: {reason}")
    src, x, y = setup
    try:
        art = impl.build(src, precision, tmp_path)
        predict = impl.load(art, 2)
    except Unsupported as exc:
        pytest.skip(f"{backend} {precision}: {exc}")
    assert art.size_bytes() > 10_000 and art.path.is_file()
    acc = top1(predict, x, y)
    (tmp_path / "fp32").mkdir()
    ref = top1(impl.load(impl.build(src, "fp32", tmp_path / "fp32"), 2), x, y)
    assert abs(acc - ref) <= 2.0, f"{backend} {precision}: top-1 {acc} vs fp32 {ref}"
    if precision in ("int8", "uint8", "dynamic"):
        assert art.details.get("api"), "quantized cells record how they were quantized"


def test_gpu_devices_are_reported_unsupported():
    for name in BACKENDS:
        assert "not implemented" in get_backend(name).supports("fp32", "cuda")
