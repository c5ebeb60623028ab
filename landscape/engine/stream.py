"""A host split streamed to the device in batches, through two buffers (side-stream copies on CUDA)."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Iterator, Mapping

import torch

from ..data import Split

log = logging.getLogger(__name__)


def place(splits: Mapping[str, Split], device: torch.device, option: str) -> tuple[dict[str, Split], bool]:
    """The splits on the device, or (streamed) only their targets and normalisation: `eval.stream` auto
    streams on CUDA when the splits would take more than 40% of the free device memory."""
    need = lambda: sum(s.x.numel() * s.x.element_size() + s.y.numel() * s.y.element_size()  # noqa: E731
                       for s in splits.values())
    stream = option == "true" or (option == "auto" and device.type == "cuda"
                                  and need() > 0.4 * torch.cuda.mem_get_info(device)[0])
    if not stream:
        return {k: s.to(device) for k, s in splits.items()}, False
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return {k: replace(s, y=move(s.y), mean=move(s.mean), std=move(s.std)) for k, s in splits.items()}, True


def head(split: Split, n: int, device: torch.device) -> Split:
    """The first n samples with their normalisation, on the device."""
    return replace(split, x=split.x[:n], y=split.y[:n]).to(device)


class Stream:
    """Batches of a host split through two device buffers; on CUDA the next copy runs on a side stream."""

    def __init__(self, split: Split, device: torch.device, batch: int):
        self.split, self.device, self.batch = split, device, batch
        self.cuda = device.type == "cuda"
        x = split.x
        if self.cuda and not x.is_pinned():
            try:
                x = x.pin_memory()
            except RuntimeError as err:  # not enough pinnable memory: copies are then synchronous
                log.warning("cannot pin the streamed split (%s); copies will not overlap", err)
        self.x = x
        n = min(batch, len(split))
        self.bufs = [torch.empty((n, *x.shape[1:]), dtype=x.dtype, device=device) for _ in range(2)]
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None
        self.ready = [torch.cuda.Event() for _ in range(2)] if self.cuda else None
        self.free = [torch.cuda.Event() for _ in range(2)] if self.cuda else None

    def _fill(self, k: int, start: int, stop: int) -> torch.Tensor:
        buf = self.bufs[k][:stop - start]
        if self.cuda:
            with torch.cuda.stream(self.copy_stream):
                self.copy_stream.wait_event(self.free[k])  # the compute that read this buffer is done
                buf.copy_(self.x[start:stop], non_blocking=True)
                self.ready[k].record(self.copy_stream)
        else:
            buf.copy_(self.x[start:stop])
        return buf

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int]]:
        """(x batch on the device, start, stop); a buffer is refilled only after its batch's work."""
        n = len(self.split)
        starts = list(range(0, n, self.batch))
        if self.cuda:
            for ev in self.free:
                ev.record(torch.cuda.current_stream(self.device))
        nxt = self._fill(0, 0, min(self.batch, n)) if starts else None
        for i, start in enumerate(starts):
            stop, k = min(start + self.batch, n), i % 2
            cur = nxt
            if i + 1 < len(starts):  # prefetch the next batch while this one is computed
                nxt = self._fill((i + 1) % 2, starts[i + 1], min(starts[i + 1] + self.batch, n))
            if self.cuda:
                torch.cuda.current_stream(self.device).wait_event(self.ready[k])
            yield cur, start, stop
            if self.cuda:
                self.free[k].record(torch.cuda.current_stream(self.device))
