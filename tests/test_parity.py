"""fp32 logits of every installed backend agree with torch on 1000 real test images (max abs diff < 1e-3)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.backends import BACKENDS, get_backend
from harness.models import ZOO
from tests.conftest import source_for

N = 1000


@pytest.fixture(scope="module")
def reference(data_dir, test_split, shared_cache, tmp_path_factory):
    """torch fp32 scores per model, computed once."""
    cache = {}

    def get(model):
        if model not in cache:
            src = source_for(model, data_dir, 10)
            backend = get_backend("torch")
            art = backend.build(src, "fp32", tmp_path_factory.mktemp(f"{model}-torch"))
            x = ZOO[model].preprocess.apply(test_split.images[:N])
            cache[model] = (src, x, backend.load(art, 2)(x))
        return cache[model]

    return get


@pytest.mark.parametrize("model", list(ZOO))
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_fp32_logits_match_torch(backend, model, reference, tmp_path):
    impl = get_backend(backend)
    probe = impl.probe()
    if not probe.installed:
        pytest.skip(probe.reason)
    src, x, ref = reference(model)
    predict = impl.load(impl.build(src, "fp32", tmp_path), 2)
    got = np.concatenate([predict(x[i:i + 250]) for i in range(0, N, 250)])
    assert got.shape == ref.shape == (N, 10)
    assert float(np.abs(got - ref).max()) < 1e-3
    assert (got.argmax(1) == ref.argmax(1)).all()
