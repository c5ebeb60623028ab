"""The evaluation engine: loss (and accuracy) at grid points `theta0 + a*d1 + b*d2`.

The model's parameters are views into one flat device vector, so moving to a point is two fused
in-place ops; data stay on the device; sums stay on the device until one sync per batch of points.
"""
from __future__ import annotations

import contextlib
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import StateDict
from .data import Split
from .directions import Directions, flat
from .errors import UserError

LOSSES = ("cross_entropy", "mse", "mae")
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def loss_sum(out: torch.Tensor, y: torch.Tensor, loss: str, classify: bool) -> tuple[torch.Tensor, int]:
    """Sum of the per-element loss in fp32 and the number of elements it averages over."""
    out = out.float()
    if loss == "cross_entropy":
        if not classify:
            raise UserError("loss cross_entropy needs class labels; use loss=mse or loss=mae for regression")
        return F.cross_entropy(out, y, reduction="sum"), y.shape[0]
    if classify:  # Li et al.: softmax probabilities against one-hot targets
        out, y = out.softmax(1), F.one_hot(y, out.shape[1]).float()
    y = y.reshape(out.shape)
    diff = out - y
    return (diff.square() if loss == "mse" else diff.abs()).sum(), out.numel()


def check_fits(model: nn.Module, split: Split, num_classes: int) -> None:
    """Run two samples through the model: a clear error if the data's shape or classes do not fit."""
    try:
        with torch.inference_mode():
            out = model.eval()(split.inputs(0, 2).to(next(model.parameters()).device))
    except RuntimeError as err:
        raise UserError(f"data of shape {tuple(split.x.shape[1:])} does not fit the model: "
                        f"{str(err).splitlines()[0]}") from err
    if num_classes > 0 and (out.dim() != 2 or out.shape[1] != num_classes):
        raise UserError(f"the model outputs shape {tuple(out.shape[1:])} but the data have "
                        f"{num_classes} classes: set the model's num_classes to match")


def _bind_flat(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Copy tensors into one flat vector and make each tensor a view into it."""
    vec = torch.cat([t.detach().reshape(-1).float() for t in tensors]).to(device)
    offset = 0
    for t in tensors:
        t.data = vec[offset:offset + t.numel()].view_as(t)
        offset += t.numel()
    return vec


class Evaluator:
    """Evaluates a model along directions on device-resident splits; one instance per worker."""

    def __init__(self, model: nn.Module, origin: StateDict, directions: Directions,
                 splits: Mapping[str, Split], num_classes: int, loss: str = "cross_entropy",
                 precision: str = "fp32", batch_size: int | None = None,
                 device: str | torch.device = "cpu"):
        if loss not in LOSSES:
            raise UserError(f"loss '{loss}' is unknown: use one of {', '.join(LOSSES)}")
        if precision not in PRECISIONS:
            raise UserError(f"precision '{precision}' is unknown: use one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.loss, self.precision, self.classify = loss, precision, num_classes > 0
        model.load_state_dict(origin)
        self.model = model.to(self.device).eval()
        params = list(self.model.parameters())
        self.flat = _bind_flat(params, self.device)
        self.theta0 = self.flat.clone()
        self.d = [flat(directions.x).to(self.device)]
        if directions.y is not None:
            self.d.append(flat(directions.y).to(self.device))
        if self.d[0].numel() != self.flat.numel():
            raise UserError("the directions do not match the model's parameters (different sizes)")
        self.buffers = None
        if directions.x_buffers:
            named = dict(self.model.named_buffers())
            vec = _bind_flat([named[n] for n in directions.x_buffers], self.device)
            self.buffers = (vec, vec.clone(), flat(list(directions.x_buffers.values())).to(self.device))
        self.splits = {name: s.to(self.device) for name, s in splits.items()}
        self.batch_size = batch_size or self._default_batch_size()
        check_fits(self.model, next(iter(self.splits.values())), num_classes)

    def _default_batch_size(self) -> int:
        largest = max(len(s) for s in self.splits.values())
        return min(largest, 1024 if self.device.type == "cpu" else 4096)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def set_point(self, coord: np.ndarray) -> None:
        """Weights (and, for a line, buffers) at one point, in place."""
        torch.add(self.theta0, self.d[0], alpha=float(coord[0]), out=self.flat)
        if len(self.d) > 1:
            self.flat.add_(self.d[1], alpha=float(coord[1]))
        if self.buffers is not None:
            vec, base, step = self.buffers
            torch.add(base, step, alpha=float(coord[0]), out=vec)

    def _split_sums(self, split: Split) -> torch.Tensor:
        """[loss sum (fp64), element count, correct count] for the current weights, on the device."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        count = 0
        for start in range(0, len(split), self.batch_size):
            stop = min(start + self.batch_size, len(split))
            xb, yb = split.inputs(start, stop), split.y[start:stop]
            with self._autocast():
                out = self.model(xb)
            s, n = loss_sum(out, yb, self.loss, self.classify)
            total += s.double()
            count += n
            if self.classify:
                correct += (out.argmax(1) == yb).sum()
        return torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=self.device),
                            correct.double()])

    def evaluate(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Per point `{split}_loss` (mean over the split) and `{split}_acc` (percent, classification)."""
        allow_tf32 = self.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
        rows = []
        with torch.inference_mode():
            for coord in np.atleast_2d(coords):
                self.set_point(coord)
                rows.append(torch.stack([self._split_sums(s) for s in self.splits.values()]))
        sums = torch.stack(rows).cpu().numpy()  # (points, splits, 3): the one host sync
        out = {}
        for i, (name, split) in enumerate(self.splits.items()):
            out[f"{name}_loss"] = sums[:, i, 0] / sums[:, i, 1]
            if self.classify:
                out[f"{name}_acc"] = 100.0 * sums[:, i, 2] / len(split)
        return out
