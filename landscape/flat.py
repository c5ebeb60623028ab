"""Flat vectors: all parameters (or buffers) of a model as views into one aligned float32 vector.

Moving to a grid point is then two fused in-place ops on one vector, never a rebuild from lists.
"""
from __future__ import annotations

import torch

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
