"""One grid point's whole pass captured as a CUDA graph: one launch per point instead of thousands.

A ResNet-56 pass over 50,000 images at batch 1024 is ~50 batches x ~120 kernels; launched one by
one from Python they cost more than the math once batches are small enough to stay in L2. The
captured pass reads its coordinate from a device tensor and accumulates into a device output, so a
replay is: copy the coordinate in, replay, add the output to the tile's sums (no host sync).
"""
from __future__ import annotations

from typing import Callable

import torch

PassFn = Callable[[torch.Tensor, torch.Tensor], None]  # (coordinate (D,), sums out (S, K) fp64)


class PointGraph:
    """`run(coord, out)` captured once, after a warm-up on a side stream (as the CUDA-graph docs ask).

    Everything `run` touches must keep its address between replays: the flat weight vectors and
    the device-resident splits do; what it allocates comes from the graph's private pool. The
    check: the warm-up runs at `check_at` (every coordinate); the capture holds NaN coordinates; a
    launched pass at NaN leaves NaN weights; then a replay at `check_at` must give the warm-up's
    sums. A graph that kept the capture's coordinate, does not move the weights itself, or runs
    nothing gives NaN or other sums, however flat the loss is there: RuntimeError, and the caller
    runs the plain pass.
    """

    def __init__(self, run: PassFn, ndim: int, shape: tuple[int, int], device: torch.device, *,
                 check_at: float = 0.05, tolerance: float = 1e-4):
        self.coord = torch.full((ndim,), check_at, device=device)
        self.out = torch.zeros(shape, dtype=torch.float64, device=device)

        def body() -> None:
            self.out.zero_()
            run(self.coord, self.out)

        self._warm_up(body, device)  # compiles and cudnn autotuning happen here, never inside the capture
        expected = self.out.clone()
        self.coord.fill_(float("nan"))  # a graph holding the capture's coordinate would replay NaN
        self._capture(body, device)
        run(self.coord, torch.zeros_like(expected))  # launched at NaN: NaN weights unless a replay moves them
        self.out.fill_(float("nan"))  # and a replay that runs nothing leaves NaN sums, not the warm-up's
        got = torch.zeros_like(expected)
        self(torch.full_like(self.coord, check_at), got)
        diff = ((got - expected).abs() / expected.abs().clamp_min(1e-30)).max().item()
        if not diff <= tolerance:
            raise RuntimeError(f"the CUDA graph's replay differs from the launched pass by {diff:.2e} (relative)")
        self.check = diff

    def __call__(self, coord: torch.Tensor, out: torch.Tensor) -> None:
        """Add the sums at `coord` (D,) to `out` (S, K), all on the device, in stream order."""
        self.coord.copy_(coord)
        self._replay()
        out += self.out

    # the CUDA parts (tests/test_engine.py replaces only these to run the rest on a CPU)

    def _warm_up(self, body: Callable[[], None], device: torch.device) -> None:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            body()
        torch.cuda.current_stream(device).wait_stream(side)

    def _capture(self, body: Callable[[], None], device: torch.device) -> None:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # the warm-up's cached activations: the capture needs that memory again
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            body()

    def _replay(self) -> None:
        self.graph.replay()
