"""Checkpoints: safe loading (weights_only) and a clear message when one does not fit a model."""
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError

StateDict = dict[str, torch.Tensor]


def load_state(path: str | Path, mmap: bool = False) -> StateDict:
    """A plain state_dict, or one stored under `state_dict` / `model` in a dict (`mmap`: read lazily)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many types for corrupt or unsafe files
        raise UserError(f"checkpoint {path} cannot be read: {str(err).splitlines()[0]}") from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"checkpoint {path} holds no state_dict (plain, or under 'state_dict'/'model')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def check_fits(model: nn.Module, state: StateDict, path: str | Path, model_name: str = "model") -> None:
    """Raise a UserError naming missing/unexpected keys and differing shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shapes differ (checkpoint vs model)", shapes)):
        if items:
            more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
            parts.append(f"{label}: {', '.join(items[:4])}{more}")
    raise UserError(f"checkpoint {path} does not fit {model_name}: " + "; ".join(parts)
                    + ". Is it a checkpoint of another architecture or data set?")


def load_into(model: nn.Module, path: str | Path, model_name: str = "model") -> StateDict:
    """Load a checkpoint into `model` after checking it fits; returns the state."""
    state = load_state(path)
    check_fits(model, state, path, model_name)
    model.load_state_dict(state)
    return state
