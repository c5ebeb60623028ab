"""The forward runner: sums over every batch of every split at many points, along one chosen path.

Loop mode moves the model to one point at a time and runs large batches; vmap moves P points at
once and runs them in one batched forward. On CUDA, in loop mode on device-resident data, a point's
whole pass may be one replayed CUDA graph. Streamed splits run data outermost: each streamed batch
serves every point. The path is a frozen `Choice` (made by `tuning.tune`); a new choice is a new runner.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ..data import Split, normalize
from ..errors import first_line
from .graphs import PointGraph
from .metrics import Reduce, SplitInfo
from .moves import Mover, PointBatch
from .steps import Steps
from .stream import Stream, head

log = logging.getLogger(__name__)

CPU_NORMALISED_BYTES = 1 << 30  # CPU: inputs normalised once, kept as float32, up to this size


@dataclass(frozen=True)
class Choice:
    """How the runner runs: made once per worker, cached per device kind (every worker agrees)."""

    mode: str = "loop"
    points_per_batch: int = 1
    batch_size: int = 1024
    compile: bool = False
    cuda_graph: bool = False


@dataclass(frozen=True)
class Parts:
    """What a runner runs on, whatever its choice."""

    model: nn.Module  # fp32, BatchNorm unfolded; its weights are the mover's
    mover: Mover
    steps: Steps
    splits: Mapping[str, Split]  # on the device (streamed: targets only)
    stream: bool
    dtype: torch.dtype | None  # the run's bf16/fp16, None for fp32/tf32
    channels_last: bool
    out_shape: tuple[int, ...]  # model outputs per sample
    info: dict[str, Any]

    @property
    def device(self) -> torch.device:
        return self.mover.weights.flat.device


@dataclass(frozen=True)
class Pass:
    """One pass over points: `fast` allows the chosen compiled steps and CUDA graphs; `limit`: only the
    first samples of each split; `dtype` None: fp32."""

    mode: str
    points: int
    dtype: torch.dtype | None
    fast: bool = True
    limit: int | None = None
    stream: bool = False


@dataclass(frozen=True)
class PassForward:
    """The network at `coords` (N, D) along one pass: what a metric measures (`metrics.Forward`)."""

    runner: Runner
    coords: np.ndarray
    how: Pass

    @property
    def splits(self) -> tuple[SplitInfo, ...]:
        n, splits = int(np.prod(self.runner.parts.out_shape)), self.runner.parts.splits
        return tuple(SplitInfo(k, min(len(s), self.how.limit or len(s)), n) for k, s in splits.items())

    def sums(self, reduce: Reduce) -> torch.Tensor:
        return self.runner.sums(self.coords, reduce, self.how)

    @property
    def model(self) -> nn.Module:
        return self.runner.parts.model

    def each_point(self) -> Iterator[int]:
        """Each point's index in turn, `model` moved there."""
        parts = self.runner.parts
        cdev = torch.as_tensor(np.asarray(self.coords, dtype=np.float32)).to(parts.device)
        for i in range(len(cdev)):
            parts.mover.to_point(cdev[i])
            yield i

    def batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised inputs and targets of one split on the device, in the run's batch size."""
        s, size, device = self.runner.splits[split], self.runner.choice.batch_size, self.runner.parts.device
        n = min(len(s), self.how.limit or len(s))
        for start, stop in ((i, min(i + size, n)) for i in range(0, n, size)):
            yield normalize(s.x[start:stop].to(device), s.scale, s.mean, s.std), s.y[start:stop]


class Runner:
    """Sums of a reduce at many points with one `Choice`."""

    def __init__(self, parts: Parts, choice: Choice):
        self.parts, self.choice = parts, choice
        self.graphs: dict[tuple, PointGraph | None] = {}
        self.streams: dict[int, Stream] = {}

    @property
    def run_pass(self) -> Pass:
        c, p = self.choice, self.parts
        return Pass(c.mode, c.points_per_batch, p.dtype, stream=p.stream)

    def forward(self, coords: np.ndarray, how: Pass | None = None) -> PassForward:
        return PassForward(self, coords, how or self.run_pass)

    @cached_property
    def vmap(self) -> PointBatch:
        return self.parts.mover.batch(self.parts.steps.net, self.choice.points_per_batch)

    @cached_property
    def splits(self) -> Mapping[str, Split]:
        """CPU: the inputs normalised once (same ops, so the same values), when they take at most 1 GiB.

        A GPU keeps uint8 images and normalises per batch (DESIGN.md): there it costs ~1% of a point,
        and the compiled step fuses it; on a CPU it is a few percent of a small model's forward.
        """
        p = self.parts
        if p.device.type != "cpu" or p.stream:
            return p.splits
        cl = p.channels_last and self.choice.mode == "loop"
        if sum(s.x.numel() * 4 for s in p.splits.values()) > CPU_NORMALISED_BYTES:
            return p.splits
        return {k: Split(normalize(s.x, s.scale, s.mean, s.std, cl), s.y) for k, s in p.splits.items()}

    def move(self, coords: torch.Tensor, mode: str) -> None:
        """Loop: the model to coords[0]. vmap: the (P, N) weights of up to P points."""
        if mode == "loop":
            self.parts.mover.to_point(coords[0])
        else:
            self.vmap.fill(coords)

    def step(self, how: Pass, reduce: Reduce, x: torch.Tensor, y: torch.Tensor, split: Split) -> torch.Tensor:
        """(P, K) sums of one batch at the current point(s)."""
        extra: tuple = ()
        if how.mode == "vmap":
            extra = self.vmap.args(how.dtype)
        elif how.dtype is not None:
            self.parts.mover.cast()
        return self.parts.steps.run(how.mode, how.points, how.dtype, self.choice.compile and how.fast, reduce,
                                    x, y, split, extra)

    def width(self, reduce: Reduce, split: Split) -> int:
        """K: the columns `reduce` sums (from outputs of zeros)."""
        return reduce(torch.zeros((1, 1, *self.parts.out_shape), device=self.parts.device), split.y[:1]).shape[-1]

    def sums(self, coords: np.ndarray, reduce: Reduce, how: Pass) -> torch.Tensor:
        """(N, S, K) fp64 device sums at `coords` (N, D)."""
        n, width = len(coords), 1 if how.mode == "loop" else how.points
        splits = {k: head(s, how.limit, self.parts.device) for k, s in self.splits.items()} if how.limit \
            else self.splits
        k = self.width(reduce, next(iter(splits.values())))
        out = torch.zeros(n + width, len(splits), k, dtype=torch.float64, device=self.parts.device)
        cdev = torch.as_tensor(np.asarray(coords, dtype=np.float32)).to(self.parts.device)  # one copy per call
        chunks = [(i, min(i + width, n)) for i in range(0, n, width)]
        if how.stream:  # data outermost: each streamed batch serves every point
            for si, split in enumerate(splits.values()):
                for xb, start, stop in self._stream_of(split):
                    for p0, p1 in chunks:
                        self.move(cdev[p0:p1], how.mode)
                        out[p0:p0 + width, si] += self.step(how, reduce, xb, split.y[start:stop], split).double()
            return out[:n]
        graph = None
        if how.mode == "loop" and how.fast and not how.limit and self.choice.cuda_graph:
            graph = self.graph_for(splits, reduce)
        for p0, p1 in chunks:
            if graph is not None:
                graph(cdev[p0], out[p0])
            else:
                self._chunk_pass(cdev[p0:p1], out[p0:p0 + width], splits, reduce, how)
        return out[:n]

    def _chunk_pass(self, c: torch.Tensor, out: torch.Tensor, splits: Mapping[str, Split], reduce: Reduce,
                    how: Pass) -> None:
        """Move to the chunk's points `c` (P, D), add every batch's sums of every split to `out` (P, S, K)."""
        self.move(c, how.mode)
        for si, split in enumerate(splits.values()):
            for start in range(0, len(split), self.choice.batch_size):
                stop = min(start + self.choice.batch_size, len(split))
                out[:, si] += self.step(how, reduce, split.x[start:stop], split.y[start:stop], split).double()

    def point_pass(self, c: torch.Tensor, out: torch.Tensor, splits: Mapping[str, Split], reduce: Reduce) -> None:
        """Loop mode, one point `c` (D,) into `out` (S, K): the pass a CUDA graph captures."""
        self._chunk_pass(c[None], out[None], splits, reduce, replace(self.run_pass, mode="loop", points=1))

    def capture(self, splits: Mapping[str, Split], reduce: Reduce) -> PointGraph:
        shape = (len(splits), self.width(reduce, next(iter(splits.values()))))
        return PointGraph(lambda c, out: self.point_pass(c, out, splits, reduce), self.parts.mover.weights.ndim,
                          shape, self.parts.device)

    def graph_for(self, splits: Mapping[str, Split], reduce: Reduce) -> PointGraph | None:
        """The captured pass over these splits (made once, checked by PointGraph); None where capture fails."""
        key = (tuple(id(s) for s in splits.values()), reduce)
        if key not in self.graphs:
            try:
                self.graphs[key] = self.capture(splits, reduce)
                self.parts.info["graph_check"] = self.graphs[key].check
            except Exception as err:  # noqa: BLE001 - capture is best-effort: the plain pass is always correct
                log.warning("CUDA graph disabled: %s", first_line(err, 200))
                self.parts.info["graph_fallback"] = first_line(err, 200)
                self.graphs[key] = None
        return self.graphs[key]

    def _stream_of(self, split: Split) -> Iterator[tuple[torch.Tensor, int, int]]:
        """One streamer per split: the host copy is pinned once, not per tile."""
        if id(split) not in self.streams:
            self.streams[id(split)] = Stream(split, self.parts.device, self.choice.batch_size)
        return iter(self.streams[id(split)])
