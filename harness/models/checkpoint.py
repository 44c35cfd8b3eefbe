"""Source kind "torch-checkpoint": a state dict plus the factory that builds its module, named in the card as
`architecture = "module.path:factory"` and imported from the card's folder."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from harness.errors import UserError


def factory(spec):
    """The card's factory function (the module is imported with the card's folder first on sys.path)."""
    module_name, _, fn = spec.builder.partition(":")[2].partition(":")
    folder = str(Path(spec.card).parent)
    sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UserError(f"{spec.card}: key 'architecture' = {module_name + ':' + fn!r}: expected a module "
                        f"importable from {folder} ({type(exc).__name__}: {exc})") from None
    finally:
        sys.path.remove(folder)
    made = getattr(module, fn, None)
    if not callable(made):
        raise UserError(f"{spec.card}: key 'architecture' = {module_name + ':' + fn!r}: expected a function "
                        f"{fn}() in {module.__file__}")
    return made


def build_torch(spec, weights: Path):
    import torch

    try:
        model = factory(spec)()
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{spec.card}: key 'architecture': the factory raised {type(exc).__name__}: {exc}") from None
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a training checkpoint
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise UserError(f"{spec.card}: key 'path' = {weights.name!r}: expected a state dict of the factory's "
                        f"module ({str(exc).splitlines()[0][:300]})") from None
    return model.eval()


def module_file(spec) -> str:
    """The factory's source file (part of the model's definition: an edit re-exports), found in the card's
    folder without importing it; a module from elsewhere (an installed package) is imported to ask."""
    module_name = spec.builder.partition(":")[2].partition(":")[0]
    base = Path(spec.card).parent.joinpath(*module_name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return str(candidate)
    import inspect

    return inspect.getfile(factory(spec))
