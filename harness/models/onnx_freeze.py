"""Make onnx2torch's module traceable. onnx2torch keeps the parameters of ONNX Slice (starts, ends, axes,
steps), Pad (pads) and Reshape (shape) as tensor inputs that forward() reads with .numpy() / .tolist() /
torch.any: eager PyTorch runs that, but FX (torch.ao int8) and torch.export (compiled PyTorch, LiteRT) cannot
trace it ("NotImplementedError: argument of type numpy.int64", ".numpy() is not supported for tensor
subclasses"). Where those inputs are constants of the graph, as in every export of a fixed architecture (the
zoo's resnet20 pads its option-A shortcuts with a Slice/Pad subgraph of 12 constant ops), the op becomes a
static module holding Python ints, and the constant subgraph is dropped."""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn import functional as F


class StaticSlice(nn.Module):
    def __init__(self, index: tuple):
        super().__init__()
        self.index = index  # a tuple of Python slices: what x[...] takes

    def forward(self, x):
        return x[self.index]


class StaticPad(nn.Module):
    def __init__(self, pads: list[int], mode: str, value: float):
        super().__init__()
        self.pads, self.mode, self.value = pads, mode, value

    def forward(self, x):
        return F.pad(x, self.pads, mode=self.mode, value=self.value)


class StaticReshape(nn.Module):
    def __init__(self, shape: list[int]):
        super().__init__()
        self.shape = shape  # ONNX semantics: 0 copies the input's dimension, -1 is inferred

    def forward(self, x):
        return torch.reshape(x, [x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)])


def _ints(value) -> list[int]:
    return [int(v) for v in torch.as_tensor(value).flatten().tolist()]


def _static(module: nn.Module, params: list) -> nn.Module | None:
    """The static form of an onnx2torch op given its constant parameters, or None (left as it is)."""
    kind = type(module).__name__
    if kind == "OnnxSlice":
        starts, ends = _ints(params[0]), _ints(params[1])
        axes = _ints(params[2]) if len(params) > 2 and params[2] is not None else list(range(len(starts)))
        steps = _ints(params[3]) if len(params) > 3 and params[3] is not None else [1] * len(starts)
        if min(axes) < 0 or min(steps) < 1:  # negative axes need the rank, negative steps a flip: keep dynamic
            return None
        by_axis = {a: slice(s, e, st) for s, e, a, st in zip(starts, ends, axes, steps, strict=True)}
        return StaticSlice(tuple(by_axis.get(a, slice(None)) for a in range(max(axes) + 1)))
    if kind == "OnnxPadDynamic":
        from onnx2torch.node_converters.pad import _onnx_padding_to_torch, _torch_padding_to_mode_format

        value = params[1] if len(params) > 1 and params[1] is not None else 0.0
        pads = _torch_padding_to_mode_format(_onnx_padding_to_torch(_ints(params[0])), module.mode)
        return StaticPad(pads, module.mode, float(torch.as_tensor(value)))
    if kind == "OnnxReshape":
        return StaticReshape(_ints(params[0]))
    return None


def _constants(gm: fx.GraphModule) -> tuple[set, dict]:
    """(nodes that depend on the model's input, values of the nodes that do not)."""
    interpreter = fx.Interpreter(gm)
    dynamic, values = set(), {}
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a in dynamic for a in node.all_input_nodes):
            dynamic.add(node)
        elif node.op != "output":
            values[node] = interpreter.env[node] = interpreter.run_node(node)
    return dynamic, values


def freeze(gm: fx.GraphModule) -> fx.GraphModule:
    dynamic, values = _constants(gm)
    for i, node in enumerate(list(gm.graph.nodes)):
        params = node.args[1:]
        if node.op != "call_module" or node not in dynamic or any(isinstance(a, fx.Node) and a in dynamic
                                                                  for a in params):
            continue
        static = _static(gm.get_submodule(node.target), [values[a] if isinstance(a, fx.Node) else a for a in params])
        if static is None:
            continue
        gm.add_submodule(f"frozen_{i}", static)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(f"frozen_{i}", (node.args[0],))
        dynamic.add(new)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
