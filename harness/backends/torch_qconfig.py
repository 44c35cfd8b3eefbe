"""Recipe -> torch.ao QConfig, shared by the torch (FX, x86) and ipex backends (both use torch.ao observers)."""

from __future__ import annotations

import copy

from harness.backends.base import refuse

STATIC_FIELDS = ("method", "weight_granularity", "weight_symmetric", "activation_symmetric")


def qconfig_mapping(base, recipe, reduce_range: bool | None, default_reduce_range: bool, who: str):
    """`base` (the framework's default mapping) when the recipe changes nothing; else a copy whose global
    qconfig follows the recipe (special entries such as softmax's fixed qparams are kept). -> (mapping, details)"""
    import torch
    from torch.ao.quantization import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver, QConfig

    refuse(recipe, {"method": (("entropy", "percentile"), f"{who} calibrates with torch.ao observers, which are "
                                                          "MinMax or Histogram (no entropy or percentile observer)")})
    if all(getattr(recipe, f) is None for f in STATIC_FIELDS) and reduce_range is None:
        return base, {}
    reduce_range = default_reduce_range if reduce_range is None else reduce_range
    act_sym = bool(recipe.activation_symmetric)
    act_observer = MinMaxObserver if recipe.method == "minmax" else HistogramObserver
    act = act_observer.with_args(dtype=torch.quint8, reduce_range=bool(reduce_range),
                                 qscheme=torch.per_tensor_symmetric if act_sym else torch.per_tensor_affine)
    w_sym = recipe.weight_symmetric is not False
    if recipe.weight_granularity == "per_tensor":
        weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric if w_sym
                                          else torch.per_tensor_affine)
    else:
        weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric if w_sym
                                                    else torch.per_channel_affine)
    mapping = copy.deepcopy(base).set_global(QConfig(activation=act, weight=weight))
    sym = {True: "symmetric", False: "affine"}
    return mapping, {
        "activations": f"uint8 per-tensor {sym[act_sym]} ({act_observer.__name__}, reduce_range={bool(reduce_range)})",
        "weights": f"int8 {recipe.weight_granularity or 'per_channel'} {sym[w_sym]}",
        "calibration_method": "minmax" if act_observer is MinMaxObserver else "histogram"}
