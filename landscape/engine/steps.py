"""One batch at the current point(s): the forward (loop: one point; vmap: P points in one batched
forward) and a metric's reduce, in fp32 or bf16/fp16, eager or compiled (eager from the first
compiler failure on)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from ..data import Split, normalize
from ..errors import first_line
from .metrics import Reduce

if TYPE_CHECKING:
    from .lowp import LowPrecisionNet

log = logging.getLogger(__name__)


def raise_recompile_limit(limit: int = 64) -> None:
    """Every Evaluator compiles the same step code for its own model and shapes: allow more than 8."""
    config = getattr(getattr(torch, "_dynamo", None), "config", None)
    for name in ("recompile_limit", "cache_size_limit"):
        if config is not None and isinstance(getattr(config, name, None), int):
            setattr(config, name, max(getattr(config, name), limit))


class Steps:
    """Step functions made once per (mode, points, precision, compiled, reduce) and kept.

    Loop mode in the run's bf16/fp16 uses the low-precision net (weights cast once per point; the
    caller recasts them after a move). Autocast does not reach inside vmap, so vmap casts explicitly
    (its weights come cast, see `moves.PointBatch.args`). Logits go to fp32 inside `reduce`.
    """

    def __init__(self, net: nn.Module, lowp: LowPrecisionNet | None, channels_last: bool, device: torch.device,
                 compile_mode: str, info: dict[str, Any]):
        self.net, self.lowp, self.channels_last, self.device = net, lowp, channels_last, device
        self.compile_mode, self.info = compile_mode, info
        self.fns: dict[tuple, Callable] = {}
        self.compile_failed = False

    def run(self, mode: str, points: int, dtype: torch.dtype | None, compiled: bool, reduce: Reduce,
            x: torch.Tensor, y: torch.Tensor, split: Split, extra: tuple = ()) -> torch.Tensor:
        """(P, K) sums of one batch; `extra`: vmap's (batched, shared) tensors."""
        compiled = compiled and not self.compile_failed
        args = (x, y, split.scale, split.mean, split.std, *extra)
        fn = self._fn(mode, points, dtype, compiled, reduce)
        if not compiled:
            return fn(*args)
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - compiler failures of any kind: fall back to eager
            log.warning("torch.compile failed (%s): running eager from now on", first_line(err, 200))
            self.compile_failed = True
            self.info["fallback"] = first_line(err, 200)
            return self._fn(mode, points, dtype, False, reduce)(*args)

    def _fn(self, mode: str, points: int, dtype: torch.dtype | None, compiled: bool, reduce: Reduce) -> Callable:
        key = (mode, points, dtype, compiled, reduce)
        if key not in self.fns:
            fn = self._make(mode, dtype, reduce)
            if compiled:
                raise_recompile_limit()
                mode_ = None if self.compile_mode == "default" else self.compile_mode
                fn = torch.compile(fn, dynamic=False, mode=mode_)
            self.fns[key] = fn
        return self.fns[key]

    def _make(self, mode: str, dtype: torch.dtype | None, reduce: Reduce) -> Callable:
        net, cl, devtype = self.net, self.channels_last, self.device.type
        if mode == "loop" and dtype is not None and self.lowp is not None:
            net = self.lowp.net

        def forward(fn: Callable, *args: Any) -> torch.Tensor:
            if dtype is None:
                return fn(*args)
            with torch.autocast(devtype, dtype=dtype, cache_enabled=False):  # as CUDA graphs require
                return fn(*args)

        if mode == "loop":
            def step(x, y, scale, mean, std):
                return reduce(forward(net, normalize(x, scale, mean, std, cl))[None], y)
            return step

        def one(batched, shared, xb):
            return torch.func.functional_call(net, {**shared, **batched}, (xb,), strict=False)

        def vstep(x, y, scale, mean, std, batched, shared):
            xb = normalize(x, scale, mean, std, False)
            if dtype is not None:  # explicit casts: see PointBatch.args
                xb = xb.to(dtype)
            return reduce(torch.func.vmap(one, in_dims=(0, None, None))(batched, shared, xb), y)
        return vstep
