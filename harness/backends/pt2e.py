"""What the two PT2E backends (torch-inductor, litert) share: a torch.export graph with a dynamic batch axis,
calibrated on the harness's calibration images, and the recipe checks both quantizers need."""

from __future__ import annotations

import warnings

import numpy as np

from harness.backends.base import refuse

CALIB_BATCH = 100
MAX_BATCH = 4096


def export_graph(model, calib: np.ndarray, dtype=None):
    """torch.export with the batch axis symbolic, so calibration can run 100 images at a time. The example has
    two images: with one, export specializes the batch to 1 and refuses the dynamic axis. The model is already in
    eval mode (a converted PT2E graph refuses .eval())."""
    import torch

    example = torch.from_numpy(np.ascontiguousarray(np.resize(calib[:2], (2, *calib.shape[1:])), np.float32))
    example = example.to(dtype) if dtype is not None else example
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def quantized(model, src, quantizer, dynamic: bool, **convert_kw):
    """prepare_pt2e -> calibrate on every calibration image (static only) -> convert_pt2e."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(export_graph(model, src.calib).module(), quantizer)
    with torch.no_grad():
        for i, batch in enumerate(src.calib_batches(CALIB_BATCH)):
            # dynamic: activations take their ranges from each input at run time, but the weight observers
            # record only in a forward pass (without one every scale is garbage: resnet20 at 10% top-1)
            if dynamic and i:
                break
            prepared(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
    return drop_unused(convert_pt2e(prepared, **convert_kw))


def drop_unused(gm):
    """Parameters and buffers no graph node reads any more (the fp32 weights that BN folding and quantization
    replaced). torch.export saves every attribute of the module, so left in, an int8 artifact carried its fp32
    weights too: resnet20 int8 at 1.74 MB against fp32's 1.35 MB."""
    used = {node.target for node in gm.graph.nodes if node.op == "get_attr"}
    for name, _ in [*gm.named_parameters(), *gm.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(gm.get_submodule(owner) if owner else gm, attr)
    return gm


def refuse_unmappable(recipe, who: str, weight_granularities: tuple = ("per_tensor",)) -> None:
    """Recipe settings neither PT2E quantizer here can express: entropy/percentile calibrators (torchao has
    MinMax and Histogram observers only), affine weights, and (per backend) per-tensor weights."""
    refuse(recipe, {
        "method": (("entropy", "percentile"), f"{who} calibrates with torchao observers (MinMax, Histogram); "
                                              "there is no entropy or percentile observer"),
        "weight_symmetric": ((False,), f"{who} quantizes weights symmetrically (no affine weight config)"),
        "weight_granularity": (weight_granularities, f"{who} has no per-tensor weight config: per-channel only"),
    })


def pad_to(x: np.ndarray, batch: int) -> np.ndarray:
    """A short batch tiled with its own images up to a compiled/converted batch size. Each image's output is
    unchanged, and so are the per-batch activation ranges of dynamic quantization (the same images' min/max),
    which zero padding could change."""
    return np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
