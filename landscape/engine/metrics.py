"""What the engine measures at each point: the metric interface, the loss and accuracy metric, and
the checks that the data and the loss fit the model.

A metric is one object with `measure(forward) -> {key: (N,) values}`: `forward` is the network at the
points of one `evaluate` call; `forward.sums(reduce)` runs it over every batch of every split (whatever
the engine's path: loop or vmap, compiled, CUDA graph, streamed) and sums `reduce(outputs, targets)`;
`forward.each_point()` moves `forward.model` to each point in turn for metrics that need more than
outputs (gradients, curvature), with `forward.batches(split)`. A new metric is a new class here (or
anywhere), passed to `Evaluator(metrics=...)`; a `last_info` dict of scalars on it (its cost, say) goes
into the tile's attributes (`curvature.Hessian`). Its `fp32` says whether it computes in fp32 whatever the
run's precision (on `forward.model`): a bf16/fp16 overflow is recomputed in fp32 for the other metrics only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Split
from ..errors import UserError, first_line
from . import stream

LOSSES = ("cross_entropy", "mse", "mae")
Reduce = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # outputs (P, B, ...), targets (B, ...) -> (P, K) fp32


@dataclass(frozen=True)
class SplitInfo:
    name: str
    samples: int  # evaluated (a precision check evaluates the first ones only)
    outputs: int  # model outputs per sample


class Forward(Protocol):
    """The network at the current points (N of them), over every split."""

    splits: tuple[SplitInfo, ...]
    model: nn.Module  # fp32, BatchNorm unfolded: where `each_point` moved it

    def sums(self, reduce: Reduce) -> torch.Tensor:
        """(N, S, K) fp64 on the device: `reduce`'s (P, K) sums over every batch of each split, per point."""

    def each_point(self) -> Iterator[int]:
        """For metrics beyond sums of outputs (gradients, curvature): each point's index, `model` moved there."""

    def batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised inputs and targets of one split, on the device."""


class Metric(Protocol):
    fp32: bool  # True: computed in fp32 whatever eval.precision (on `forward.model`), never recomputed

    def measure(self, forward: Forward) -> dict[str, torch.Tensor]:
        """Per-point values, each (N,) on the device, named `{split}_{what}`."""


class LossAccuracy:
    """The mean loss per point and split; for classification the accuracy in percent, NaN where the loss
    is not finite (argmax of NaN logits would read as a class)."""

    fp32 = False  # the run's precision (`forward.sums`)

    def __init__(self, loss: str, classify: bool):
        check_loss(loss)
        self.loss, self.classify = loss, classify

    def reduce(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return point_sums(out, y, self.loss, self.classify)

    def measure(self, forward: Forward) -> dict[str, torch.Tensor]:
        sums = forward.sums(self.reduce)
        values = {}
        for i, split in enumerate(forward.splits):
            count = split.samples if self.loss == "cross_entropy" else split.samples * split.outputs
            loss = values[f"{split.name}_loss"] = sums[:, i, 0] / count
            if self.classify:
                acc = 100.0 * sums[:, i, 1] / split.samples
                values[f"{split.name}_acc"] = torch.where(loss.isfinite(), acc, torch.full_like(acc, float("nan")))
        return values


def check_loss(loss: str, classify: bool | None = None) -> None:
    """A UserError for an unknown loss, or cross_entropy on regression data (`classify` False), before any compute."""
    if loss not in LOSSES:
        raise UserError(f"loss '{loss}' is unknown: use one of {', '.join(LOSSES)}")
    if loss == "cross_entropy" and classify is not None and not classify:
        raise UserError("loss cross_entropy needs class labels; use loss=mse or loss=mae for regression")


def loss_sum(out: torch.Tensor, y: torch.Tensor, loss: str, classify: bool) -> tuple[torch.Tensor, int]:
    """Sum of the per-element loss (fp32) over one batch and the number of elements it averages over."""
    return point_sums(out[None], y, loss, classify)[0, 0], y.shape[0] if loss == "cross_entropy" else out.numel()


def check_data_fits(model: nn.Module, split: Split, num_classes: int, loss: str | None = None,
               name: str | None = None) -> None:
    """Run two samples through the model (and `loss`, if given): a clear error naming the split if its
    shape, classes or targets do not fit, instead of a failure in a worker after the run was created."""
    label = f"the {name} split" if name else "the data"
    if len(split) == 0:
        raise UserError(f"{label} has no samples")
    head = stream.head(split, 2, next(model.parameters()).device)  # streamed: x on host
    try:
        with torch.inference_mode():
            out = model.eval()(head.inputs(0, 2))
    except RuntimeError as err:
        raise UserError(f"data of shape {tuple(split.x.shape[1:])} ({label}) does not fit the model: "
                        f"{first_line(err)}") from err
    if num_classes > 0 and (out.dim() != 2 or out.shape[1] != num_classes):
        raise UserError(f"the model outputs shape {tuple(out.shape[1:])} but the data have "
                        f"{num_classes} classes: set the model's num_classes to match")
    if loss is not None:
        _check_targets(out, head.y, loss, num_classes > 0, label)


def _rows(t: torch.Tensor) -> str:
    return "(N" + "".join(f", {d}" for d in t.shape[1:]) + ")"


def _check_targets(out: torch.Tensor, y: torch.Tensor, loss: str, classify: bool, label: str) -> None:
    """The loss on the probe's outputs: targets of the wrong kind or shape are named with their split."""
    if loss == "cross_entropy" and not classify:
        raise UserError(f"loss cross_entropy needs class labels but {label}'s targets y are floats (regression): "
                        "use loss=mse or loss=mae, or store integer labels")
    if classify and y.dim() != 1:
        raise UserError(f"class labels y must be one per sample, shape (N,), but {label}'s are "
                        f"{_rows(y)}: store y.reshape(-1)")
    if not classify and y[0].numel() != out[0].numel():
        raise UserError(f"the model outputs {out[0].numel()} values per sample but {label}'s targets y have "
                        f"{y[0].numel()} (y of shape {_rows(y)}): "
                        "set the model's outputs (data.out_features) to match")
    try:
        with torch.inference_mode():
            point_sums(out[None], y, loss, classify)
    except (RuntimeError, IndexError) as err:
        raise UserError(f"loss {loss} fails on {label}: {first_line(err)}") from err


def point_sums(out: torch.Tensor, y: torch.Tensor, loss: str, classify: bool) -> torch.Tensor:
    """(P, 2) fp32 [loss sum, correct count] of outputs `out` (P, B, ...) against targets `y` (B, ...)."""
    out = out.float()  # fp16/bf16 logits to fp32 before any reduction
    p = out.shape[0]
    if loss == "cross_entropy" and classify:
        picked = out.gather(-1, y.view(1, -1, 1).expand(p, -1, 1)).squeeze(-1)
        total = (torch.logsumexp(out, -1) - picked).sum(1)
    elif loss in ("mse", "mae"):
        if classify:  # Li et al.: softmax probabilities against one-hot targets
            target = F.one_hot(y, out.shape[-1]).to(out.dtype)
            diff = out.softmax(-1) - target
        else:
            diff = out - y.reshape(out.shape[1:])
        total = (diff.square() if loss == "mse" else diff.abs()).flatten(1).sum(1)
    else:  # never a silent fallback to another loss: an unknown one, or cross_entropy on regression targets
        check_loss(loss, classify)
        raise UserError(f"loss {loss} cannot be computed here")
    correct = (out.argmax(-1) == y).flatten(1).sum(1).float() if classify else torch.zeros_like(total)
    return torch.stack([total, correct], 1)


def measure(metrics: Sequence[Metric], forward: Forward) -> dict[str, torch.Tensor]:
    """Every metric's per-point values at `forward`'s points."""
    return {k: v for metric in metrics for k, v in metric.measure(forward).items()}
