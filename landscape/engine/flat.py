"""Flat vectors: all parameters (or buffers) of a model as views into one aligned float32 vector.

Moving to a grid point is then two fused in-place ops on one vector, never a rebuild from lists.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from ..directions import Directions
from ..errors import UserError

ALIGN = 64  # elements (256 bytes): every tensor of a flat vector starts aligned, as an allocation would


class FlatLayout:
    """Tensors laid out in one float32 vector, each in its own (dense) memory format, each aligned.

    Misaligned weights would push cuBLAS/cuDNN/oneDNN onto slower kernels; the gaps stay zero.
    """

    def __init__(self, tensors: list[torch.Tensor]):
        self.specs: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
        offset = 0
        for t in tensors:
            stride = t.stride() if _dense(t) else _contiguous_strides(t.shape)
            self.specs.append((offset, tuple(t.shape), tuple(stride)))
            offset += -(-t.numel() // ALIGN) * ALIGN
        self.numel = offset

    def view(self, vec: torch.Tensor, i: int) -> torch.Tensor:
        """Tensor i as a view of `vec` (N,), or of each row of `vec` (P, N) with a leading P dim."""
        offset, shape, stride = self.specs[i]
        if vec.dim() == 1:
            return vec.as_strided(shape, stride, vec.storage_offset() + offset)
        return vec.as_strided((vec.shape[0], *shape), (vec.stride(0), *stride), vec.storage_offset() + offset)

    def pack(self, tensors: list[torch.Tensor | None], device: torch.device) -> torch.Tensor:
        """A vector in this layout holding `tensors` (None: zeros)."""
        vec = torch.zeros(self.numel, dtype=torch.float32, device=device)
        for i, t in enumerate(tensors):
            if t is not None:
                self.view(vec, i).copy_(t.detach().reshape(self.specs[i][1]))
        return vec

    def bind(self, tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Copy tensors into a new vector and make each one a view into it."""
        vec = self.pack(tensors, device)
        for i, t in enumerate(tensors):
            t.data = self.view(vec, i)
        return vec


class FlatWeights:
    """A model's parameters and floating buffers as views into flat vectors, with theta0 and the directions
    packed alike: a point's weights are `theta0 + c0 d1 (+ c1 d2)` (a line or plane through checkpoints also
    moves the buffers: `bbase + c0 bstep (+ c1 bstep_y)`)."""

    def __init__(self, model: nn.Module, directions: Directions, device: torch.device):
        self.params = list(model.parameters())
        self.layout = FlatLayout(self.params)
        self.flat = self.layout.bind(self.params, device)
        self.theta0 = self.flat.clone()
        self.names = _unique_names(model.named_parameters(), self.params)
        dx = directions.x
        if len(dx) != len(self.params) or any(d.numel() != p.numel() for d, p in zip(dx, self.params)):
            raise UserError("the directions do not match the model's parameters (different sizes)")
        self.d = [self.layout.pack(list(dx), device)]
        if directions.y is not None:
            self.d.append(self.layout.pack(list(directions.y), device))
        named = [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
        self.buffer_names = [n for n, _ in named]
        self.buffers = [b for _, b in named]
        self.blayout = FlatLayout(self.buffers)
        self.bflat = self.blayout.bind(self.buffers, device)
        self.bstep = self.bbase = self.bstep_y = None  # buffers move only through checkpoints (line, plane)
        if directions.x_buffers:
            moved = {**directions.x_buffers, **(directions.y_buffers or {})}
            absent = [n for n in moved if n not in self.buffer_names]
            if absent:
                raise UserError(f"the directions move buffers the model lacks: {', '.join(absent[:4])}")
            self.bbase = self.bflat.clone()
            self.bstep = self.blayout.pack([directions.x_buffers.get(n) for n in self.buffer_names], device)
            if directions.y_buffers:
                self.bstep_y = self.blayout.pack([directions.y_buffers.get(n) for n in self.buffer_names], device)

    def set_directions(self, directions: Directions) -> None:
        """Another plane of the same shape (random planes: directions.planes), copied into the packed
        directions in place, so every captured graph and fused kernel reads the new plane."""
        if directions.dims != len(self.d) or directions.x_buffers:
            raise ValueError("set_directions: another plane of the same dimensions, without moving buffers")
        for packed, tensors in zip(self.d, (directions.x, directions.y)):
            packed.copy_(self.layout.pack(list(tensors), packed.device))

    @property
    def ndim(self) -> int:
        return len(self.d)

    def row(self, params: torch.Tensor, buffers: torch.Tensor | None, c: torch.Tensor) -> None:
        """theta0 + c0 d1 (+ c1 d2) into `params` (N,) or (P, N), from device coordinates (D,) or (P, D);
        the moved buffers into `buffers` where the directions move them."""
        torch.addcmul(self.theta0, self.d[0], c[..., 0:1], out=params)
        if len(self.d) > 1:
            params.addcmul_(self.d[1], c[..., 1:2])
        if buffers is not None and self.bstep is not None:
            torch.addcmul(self.bbase, self.bstep, c[..., 0:1], out=buffers)
            if self.bstep_y is not None:
                buffers.addcmul_(self.bstep_y, c[..., 1:2])


def _unique_names(named: Iterator[tuple[str, torch.Tensor]], params: list[torch.Tensor]) -> list[str]:
    """The name of each of `params` (first name of a shared tensor)."""
    first: dict[int, str] = {}
    for n, p in named:
        first.setdefault(id(p), n)
    return [first[id(p)] for p in params]


def _dense(t: torch.Tensor) -> bool:
    """Contiguous in the default or a channels-last memory format (so numel elements of storage)."""
    if t.is_contiguous():
        return True
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
    return fmt is not None and t.is_contiguous(memory_format=fmt)


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(strides))
