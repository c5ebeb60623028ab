"""bf16/fp16 weights cast once per point, not once per batch, and linear layers padded for tensor cores.

Under autocast every conv/linear casts its fp32 weight and bias on every call: with batches small
enough to keep activations in L2, that is ~2 small kernels per layer per batch (a ResNet-56 pass
at batch 512: ~100 batches x ~110 casts). `LowPrecisionNet` is a copy of the net whose conv/linear
weights and biases are low-precision views into copies of the fp32 vectors they view; `refresh()`
recasts each whole vector once per point, with the same rounding autocast uses, so the values are
the same (bitwise, tested on CPU). On CUDA (`fuse`) the flat vector is moved and cast in one
compiled kernel (`move_and_cast`) instead. Everything else (BatchNorm, activations, the loss) still runs
under autocast from the shared fp32 tensors.

`pad=True` (CUDA): a linear layer whose sizes are not multiples of 8 runs on zero-padded weights
and input. Hopper's fast GEMM kernels need 16-byte-aligned rows (TMA): an output of 4759 or an
input of 942 bf16 values per row pushes cuBLAS to slower kernels. Zero padding adds exact zeros.
"""
from __future__ import annotations

import copy
import logging
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import first_line
from .bnfold import CONV_TYPES, BNFolder, _Folded
from .flat import FlatWeights
from .steps import raise_recompile_limit

log = logging.getLogger(__name__)

CAST_TYPES = CONV_TYPES + (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear, _Folded)
ALIGN = 8  # elements: 16 bytes of bf16/fp16


def low_precision_net(net: nn.Module, weights: FlatWeights, folder: BNFolder | None, dtype: torch.dtype | None,
                      pad: bool, device: torch.device) -> LowPrecisionNet | None:
    """bf16/fp16: `net` with its conv/linear weights cast once per point; None in fp32, or where the net
    cannot be copied (autocast then casts per batch). CUDA: moved and cast in one compiled kernel
    (not where a line moves the buffers too)."""
    if dtype is None:
        return None
    vectors = [weights.flat] + ([folder.weights, folder.biases] if folder else [])
    fuse = device.type == "cuda" and weights.bstep is None and hasattr(torch, "compile")
    if fuse:
        raise_recompile_limit()  # one compile per model size (and coordinate alignment)
    try:
        return LowPrecisionNet(net, vectors, dtype, pad=pad, share=weights.params + weights.buffers, fuse=fuse)
    except Exception as err:  # noqa: BLE001 - a model deepcopy cannot copy: autocast casts per batch
        log.info("weights cast per batch by autocast: %s", first_line(err, 200))
        return None


class _PaddedLinear(nn.Module):
    """`F.linear` on a weight padded to (out8, in8) with zeros; the input padded, the output sliced."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, in_features: int, out_features: int):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # what autocast does to the input of a linear layer
            x = x.to(self.weight.dtype)
        if self.weight.shape[1] != self.in_features:
            x = F.pad(x, (0, self.weight.shape[1] - self.in_features))
        y = F.linear(x, self.weight, self.bias)
        return y if self.weight.shape[0] == self.out_features else y[..., :self.out_features]


class LowPrecisionNet:
    """`net` with conv/linear weights in `dtype`; views into low-precision copies of `vectors`.

    `vectors`: the fp32 vectors the net's tensors are views of (flat parameters, folded weights and
    biases). A tensor used outside conv/linear layers (weight tying), or not a view of one of them,
    stays fp32 and autocast casts it per call as before.
    """

    def __init__(self, net: nn.Module, vectors: list[torch.Tensor], dtype: torch.dtype, pad: bool = False,
                 share: Iterable[torch.Tensor] = (), fuse: bool = False):
        shared = {id(t): t for t in [*net.parameters(), *net.buffers(), *share]}
        self.net = copy.deepcopy(net, memo=dict(shared))  # new modules, the same tensors (`share`: others to keep)
        self.vectors = [(v, torch.empty_like(v, dtype=dtype)) for v in vectors]
        self.padded: list[tuple[torch.Tensor, torch.Tensor]] = []  # (padded destination, source)
        self.cast = self.npadded = 0  # layers cast once per point; of them, linear layers padded
        self.at = self.flat_cast_at = -1  # the move the copies hold; the move `move` cast vectors[0] at
        self.mover = torch.compile(move_and_cast, dynamic=False) if fuse else None
        users: dict[int, int] = {}
        for m in self.net.modules():
            for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
                users[id(t)] = users.get(id(t), 0) + 1
        for name, m in list(self.net.named_modules()):
            if not isinstance(m, CAST_TYPES):
                continue
            own = {n: t for n, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))}
            if set(own) - {"weight", "bias"} or any(users[id(t)] > 1 for t in own.values()):
                continue  # other tensors, or tied to another layer: autocast casts them per call
            linear = isinstance(m, nn.Linear) or (isinstance(m, _Folded) and m.linear)
            w, b = own.get("weight"), own.get("bias")
            odd = w is not None and w.dim() == 2 and (w.shape[0] % ALIGN or w.shape[1] % ALIGN)
            if pad and name and linear and odd:
                self._pad(name, w, b, dtype)
                continue
            views = {n: self._view(t) for n, t in own.items() if t is not None}
            if any(v is None for v in views.values()):
                continue
            for n, v in views.items():
                if isinstance(m._parameters.get(n), nn.Parameter):
                    m._parameters[n] = nn.Parameter(v, requires_grad=False)
                else:
                    m._buffers[n] = v
            self.cast += 1

    def _view(self, t: torch.Tensor) -> torch.Tensor | None:
        """`t`'s place in the low-precision copy of the vector it views (None: it views none)."""
        for src, low in self.vectors:
            if t.untyped_storage().data_ptr() == src.untyped_storage().data_ptr() and t.dtype == src.dtype:
                return low.as_strided(t.shape, t.stride(), low.storage_offset() + t.storage_offset()
                                      - src.storage_offset())
        return None

    def _pad(self, name: str, w: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype) -> None:
        out, inp = w.shape
        up = lambda n: -(-n // ALIGN) * ALIGN  # noqa: E731
        wp = torch.zeros(up(out), up(inp), dtype=dtype, device=w.device)
        bp = None if b is None else torch.zeros(up(out), dtype=dtype, device=w.device)
        for low, src in ((wp[:out, :inp], w), (None if b is None else bp[:out], b)):
            if low is not None:  # recast from the low-precision vector where `src` has a place there: half the bytes
                self.padded.append((low, view if (view := self._view(src)) is not None else src))
        parent, _, leaf = name.rpartition(".")
        setattr(self.net.get_submodule(parent) if parent else self.net, leaf, _PaddedLinear(wp, bp, inp, out))
        self.cast += 1
        self.npadded += 1

    def move(self, theta0: torch.Tensor, d: Sequence[torch.Tensor], c: torch.Tensor, move: int) -> bool:
        """Move vectors[0] to theta0 + c0 d1 (+ c1 d2) and cast it, in one kernel; False where not fused
        (or the compiler failed: a warning, then the caller's plain ops from then on)."""
        if self.mover is None:
            return False
        flat, low = self.vectors[0]
        try:
            self.mover(theta0, d[0], d[1] if len(d) > 1 else None, c, flat, low)
        except Exception as err:  # noqa: BLE001 - a compiler failure
            log.warning("fused weight move failed (%s): plain ops from now on", first_line(err, 200))
            self.mover = None
            return False
        self.flat_cast_at = move
        return True

    def refresh(self, move: int) -> None:
        """The copies for move `move` (a counter the engine steps per move), recast once per move."""
        if self.at != move:
            self.recast(skip_flat=self.flat_cast_at == move)
            self.at = move

    def recast(self, skip_flat: bool = False) -> None:
        """One copy per vector (but vectors[0] where `move` already cast it), then one per padded tensor."""
        for i, (src, low) in enumerate(self.vectors):
            if i or not skip_flat:
                low.copy_(src)
        for low, src in self.padded:
            low.copy_(src)


def move_and_cast(theta0: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor | None, c: torch.Tensor,
                  flat: torch.Tensor, low: torch.Tensor) -> None:
    """flat = theta0 + c0 d1 (+ c1 d2), the engine's two addcmuls, and its low-precision copy `low`.

    Compiled (CUDA), one kernel that reads the three vectors once and writes both: 18 bytes per
    weight, where two addcmuls and a cast move 30 (the 3x9000 MLP: 3.8 against 6.4 GB per point,
    ~0.8 ms of an H100's 3.35 TB/s, ~2% of its point).
    """
    x = torch.addcmul(theta0, d1, c[0:1])
    if d2 is not None:
        x = torch.addcmul(x, d2, c[1:2])
    flat.copy_(x)
    low.copy_(x)
