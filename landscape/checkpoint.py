"""Checkpoints: safe loading (weights_only), refusing non-finite weights, and a clear message when one does
not fit a model."""
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .digest import LARGE, file_digest
from .errors import UserError

StateDict = dict[str, torch.Tensor]
UNCOUNTED = "num_batches_tracked"  # absent from files saved before BatchNorm counted; never read in eval mode


@dataclass(frozen=True)
class Layout:
    """Where a file keeps its state_dict: under `key` (one of several, e.g. `ema`), its keys prefixed by
    `strip_prefix` (`model.` in Lightning checkpoints)."""

    key: str | None = None
    strip_prefix: str | None = None


def load_state(path: str | Path, mmap: bool = False, layout: Layout = Layout()) -> StateDict:
    """A plain state_dict, or one stored under `state_dict` / `model` (or `layout.key`) in a dict (`mmap`: read
    lazily), with finite floating weights: every checkpoint a run reads comes through here."""
    path = Path(path)
    _check_file(path)
    return _parse(path, path, mmap, layout)


def load_with_digest(path: str | Path, layout: Layout = Layout()) -> tuple[StateDict, str]:
    """`load_state` and the file's digest (`digest.file_digest`'s) from one read of its bytes."""
    path = Path(path)
    _check_file(path)
    if path.stat().st_size > LARGE:  # the digest is the size and mtime: nothing to hash
        return _parse(path, path, True, layout), file_digest(path)
    raw = path.read_bytes()
    return _parse(path, io.BytesIO(raw), False, layout), hashlib.sha256(raw).hexdigest()


def _is_state(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _select(path: Path, obj: Any, key: str | None) -> StateDict:
    """The state_dict in a loaded file: at `key`, else the file itself or its `state_dict` / `model` entry."""
    entries = sorted(str(k) for k, v in obj.items() if _is_state(v)) if isinstance(obj, dict) else []
    if key is not None:
        if not isinstance(obj, dict) or not _is_state(obj.get(key)):
            raise UserError(f"checkpoint {path} holds no state_dict under checkpoint.key={key}"
                            + (f"; its state_dicts: {', '.join(entries)}" if entries else ""))
        return obj[key]
    for name in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(name), dict):
            obj = obj[name]
    if not _is_state(obj):
        hint = f": its state_dicts are {', '.join(entries)}; pick one with checkpoint.key=NAME" if entries else ""
        raise UserError(f"checkpoint {path} holds no state_dict (plain, or under 'state_dict'/'model'){hint}")
    return obj


def _parse(path: Path, source: Path | io.BytesIO, mmap: bool, layout: Layout) -> StateDict:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it in one line
            warnings.simplefilter("ignore")
            obj: Any = torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many types for corrupt or unsafe files
        raise UserError(_load_failure(path, err)) from err
    obj = _select(path, obj, layout.key)
    prefix = layout.strip_prefix or ""
    state = {_torchvision_legacy(k.removeprefix(prefix).removeprefix("module.")): v for k, v in obj.items()}
    _check_finite(path, state)
    return state


# torchvision's published DenseNet files name `denselayer1.norm.1.weight` what its model calls `norm1.weight`
_LEGACY_DENSE = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _torchvision_legacy(key: str) -> str:
    """A key of torchvision's published DenseNet weights as torchvision's loader renames it (its regex)."""
    match = _LEGACY_DENSE.match(key)
    return match[1] + match[2] if match else key


def _check_file(path: Path) -> None:
    """A UserError for a path that cannot be a checkpoint file: missing, a directory, empty."""
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory; give a .pt file")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes): an interrupted save? train or copy it again")


def _check_finite(path: Path, state: StateDict) -> None:
    """A UserError naming the first floating tensor holding NaN or inf: every loss would be NaN, while the
    argmax of NaN logits still gives an accuracy that looks real."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not bad:
        return
    v = state[bad[0]]
    nan, inf = int(torch.isnan(v).sum()), int(torch.isinf(v).sum())
    held = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "inf")) if n)
    more = f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else ""
    raise UserError(f"checkpoint {path}: tensor {bad[0]} holds {held} value(s) of {v.numel()}{more}: every loss "
                    "would be NaN (a diverged training?); use an earlier checkpoint")


def _load_failure(path: Path, err: Exception) -> str:
    """What a torch.load failure means, in one line: a file of another kind, or pickled objects that
    weights_only loading refuses (torch's own advice, weights_only=False, could run arbitrary code)."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1]
    unsafe = re.search(r"GLOBAL (\S+)", text)
    if unsafe:
        return (f"checkpoint {path} holds Python objects besides tensors ({unsafe[1]}; a whole pickled model?), "
                "not loaded for safety: save model.state_dict() with torch.save instead")
    lines = text.strip().splitlines()
    reason = f"{type(err).__name__}: {lines[0].split('. ')[0]}" if lines else type(err).__name__
    return f"checkpoint {path} is not a PyTorch checkpoint, or a damaged one (torch.load failed: {reason})"


def check_fits(model: nn.Module, state: StateDict, path: str | Path, model_name: str = "model",
               strip: str | None = "checkpoint.strip_prefix") -> None:
    """Raise a UserError naming missing/unexpected keys and differing shapes; where every key shares a prefix
    the model lacks, the hint names the `strip` setting (None: the file must be saved without it)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(UNCOUNTED)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    shared = os.path.commonprefix(list(state)).rpartition(".")[0] if len(state) > 1 else ""
    fix = f"{strip}={shared}. removes it" if strip else "save model.state_dict() without it"
    hint = (f" Every key of the checkpoint starts with '{shared}.': {fix}."
            if unexpected and shared and not any(k.startswith(shared + ".") for k in own) else
            " Is it a checkpoint of another architecture or data set?")
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shapes differ (checkpoint vs model)", shapes)):
        if items:
            more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
            parts.append(f"{label}: {', '.join(items[:4])}{more}")
    raise UserError(f"checkpoint {path} does not fit {model_name}: " + "; ".join(parts) + "." + hint)


def load_into(model: nn.Module, path: str | Path, model_name: str = "model",
              strip: str | None = "checkpoint.strip_prefix") -> StateDict:
    """Load a checkpoint into `model` after checking it fits; returns the state."""
    return put_into(model, load_state(path), path, model_name, strip)


def put_into(model: nn.Module, state: StateDict, path: str | Path, model_name: str = "model",
             strip: str | None = "checkpoint.strip_prefix") -> StateDict:
    """`state` (read from `path`) into `model`, after checking it fits; returns the state."""
    check_fits(model, state, path, model_name, strip)
    state = {**{k: v for k, v in model.state_dict().items() if k.endswith(UNCOUNTED)}, **state}
    model.load_state_dict(state)
    return state
