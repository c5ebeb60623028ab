"""Moving to grid points: the model's own weights (loop mode), or a (P, N) batch of P points' weights
(vmap mode); folded BatchNorm weights and low-precision copies follow every move."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .bnfold import BNFolder
from .flat import FlatWeights
from .lowp import LowPrecisionNet


class Mover:
    """Moves the model's flat weights; counts the moves, so that copies are recast once per move."""

    def __init__(self, weights: FlatWeights, folder: BNFolder | None, lowp: LowPrecisionNet | None,
                 recalibrate: Callable[[], None] | None = None):
        self.weights, self.folder, self.lowp, self.recalibrate = weights, folder, lowp, recalibrate
        self.moves = 0

    def to_point(self, c: torch.Tensor) -> None:
        """Weights (and, for a line, buffers) at device coordinates `c` (D,), in place; recalibrated BatchNorm
        statistics (where asked) and folded weights follow.
        CUDA bf16/fp16: one compiled kernel moves and casts the flat vector (`lowp.move_and_cast`)."""
        w = self.weights
        self.moves += 1
        if self.lowp is None or not self.lowp.move(w.theta0, w.d, c, self.moves):
            w.row(w.flat, w.bflat, c)
        if self.recalibrate:  # eval.bn=recalibrate: BatchNorm statistics of this point, before any refold
            self.recalibrate()
        if self.folder:
            self.folder.fold(w.flat[None], w.bflat[None], self.folder.weights, self.folder.biases)

    def cast(self) -> None:
        """The low-precision copies of the current point's weights (loop mode), once per move."""
        if self.lowp is not None:
            self.lowp.refresh(self.moves)

    def batch(self, net: nn.Module, points: int) -> PointBatch:
        return PointBatch(self, net, points)


class PointBatch:
    """fp32 (P, N) weights of P points (and their folded weights, and moving buffers), and the name ->
    view dict that `functional_call` takes under vmap."""

    def __init__(self, mover: Mover, net: nn.Module, points: int):
        self.mover, self.net, self.points = mover, net, points
        w, folder, device = mover.weights, mover.folder, mover.weights.flat.device
        zeros = lambda n: torch.zeros(points, n, device=device)  # noqa: E731
        self.t: dict[str, torch.Tensor | None] = {
            "W": zeros(w.flat.numel()), "B": zeros(w.bflat.numel()) if w.bstep is not None else None,
            "FW": zeros(folder.nw) if folder else None, "FB": zeros(folder.nc) if folder else None}
        self.batched = self._views(self.t)
        self.casts: dict[torch.dtype, list[Any]] = {}

    def fill(self, coords: torch.Tensor) -> None:
        """The weights of up to P points `coords` (n, D); a short last chunk repeats its last point."""
        self.mover.moves += 1
        if len(coords) < self.points:
            coords = torch.cat([coords, coords[-1:].expand(self.points - len(coords), -1)])
        t, w = self.t, self.mover.weights
        w.row(t["W"], t["B"], coords)  # all P points in one op per direction
        if self.mover.folder:
            buffers = t["B"] if t["B"] is not None else w.bflat[None]
            self.mover.folder.fold(t["W"], buffers, t["FW"], t["FB"])

    def _views(self, t: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        w, folder = self.mover.weights, self.mover.folder
        own = dict(self.net.named_parameters()) | dict(self.net.named_buffers())
        batched = {n: w.layout.view(t["W"], i) for i, n in enumerate(w.names) if n in own}
        if t["B"] is not None:
            batched |= {n: w.blayout.view(t["B"], i) for i, n in enumerate(w.buffer_names) if n in own}
        if folder:
            for k, name in enumerate(folder.names):
                fw, fb = folder.views(t["FW"], t["FB"], k)
                batched |= {f"{name}.weight": fw, f"{name}.bias": fb}
        return batched

    def args(self, dtype: torch.dtype | None) -> tuple[dict, dict]:
        """(batched, shared) tensors for functional_call under vmap.

        Autocast does not reach inside vmap (torch 2.x), so bf16/fp16 vmap runs on explicit casts:
        weights, buffers and inputs in the low precision (logits still go to fp32 before the loss),
        cast once per move, not per batch.
        """
        if dtype is None:
            return self.batched, {}
        w = self.mover.weights
        if dtype not in self.casts:
            cast = {k: None if v is None else torch.empty_like(v, dtype=dtype) for k, v in self.t.items()}
            shared_vec = torch.empty_like(w.bflat, dtype=dtype)
            own = dict(self.net.named_buffers())
            shared = {n: w.blayout.view(shared_vec, i) for i, n in enumerate(w.buffer_names)
                      if n in own and self.t["B"] is None}
            self.casts[dtype] = [cast, self._views(cast), shared_vec, shared, -1]
        cast, batched, shared_vec, shared, at = self.casts[dtype]
        if at != self.mover.moves:
            for k, v in cast.items():
                if v is not None:
                    v.copy_(self.t[k])
            shared_vec.copy_(w.bflat)
            self.casts[dtype][-1] = self.mover.moves
        return batched, shared
