"""The evaluation engine: loss (and accuracy) at grid points `theta0 + a*d1 + b*d2`.

How a point is computed (see DESIGN.md, "The evaluation engine", and BENCHMARKS.md):
- every parameter, and every floating buffer, is a view into one flat device vector, each tensor
  aligned and laid out in its own memory format (so `channels_last` weights stay views); moving to a
  point is two fused in-place ops on that vector, never a rebuild from Python lists;
- two execution modes: `loop` runs one point at a time over large sample batches; `vmap` runs
  P points in one batched forward (`torch.func.functional_call` + `vmap`, parameters AND buffers
  passed, so eval-mode BatchNorm works). `auto` keeps convnets on `loop` (vmap turns convolutions
  into grouped convolutions: measured slower) and measures the two on one batch for other models;
- BatchNorm may be folded into the preceding conv/linear layer (`fold_bn`, auto: on CPU): the
  folded weights are recomputed from the flat vectors after every move by a handful of
  gather/multiply ops, whatever the depth of the network;
- `channels_last` for 2D convnets (auto: on, CPU and CUDA); `torch.compile` (auto: CUDA only, kept
  where it beats eager on a full batch, eager fallback on any compiler failure);
- the split stays on the device (uint8 images normalised per batch; on CPU normalised once) or is
  streamed through two device buffers filled on a side CUDA stream when it does not fit (each
  streamed batch then serves every point of the tile);
- loss sums (fp64) and correct counts stay on the device: one host sync per `evaluate` call;
- bf16/fp16 run under autocast with fp32 master weights (vmap: explicit casts, autocast does not
  reach inside vmap), logits go to fp32 before the loss, non-finite points are recomputed in fp32,
  and the first `precision_check` points of each call are also computed in fp32.
Batch size, mode and compile choices are made once per worker and cached per device name in the
run directory (`cache/engine-<device>-<key>.json`, first writer wins): every worker of the same
device kind then makes the same choice, so fp32 values do not depend on which worker computed a
tile (and within one engine they are bitwise independent of tiling and points per batch).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import StateDict
from .data import Split, normalize
from .directions import Directions
from .errors import UserError

log = logging.getLogger(__name__)

LOSSES = ("cross_entropy", "mse", "mae")
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("auto", "loop", "vmap")
CPU_BATCH = 1024           # CPU default: whole split up to this many samples per forward
VMAP_CANDIDATES = (4, 16, 64)
VMAP_MIN_GAIN = 1.2        # auto picks vmap only when it is at least this much faster per point
CHECK_SAMPLES = 4096       # precision_check compares the mean loss over the first samples of a split
CPU_NORMALISED_BYTES = 1 << 30  # CPU: inputs normalised once, kept as float32, up to this size
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# ----------------------------------------------------------------------------- public helpers

def loss_sum(out: torch.Tensor, y: torch.Tensor, loss: str, classify: bool) -> tuple[torch.Tensor, int]:
    """Sum of the per-element loss (fp32) over one batch and the number of elements it averages over."""
    return point_sums(out[None], y, loss, classify)[0, 0], y.shape[0] if loss == "cross_entropy" else out.numel()


def check_fits(model: nn.Module, split: Split, num_classes: int) -> None:
    """Run two samples through the model: a clear error if the data's shape or classes do not fit."""
    head = replace(split, x=split.x[:2], y=split.y[:2]).to(next(model.parameters()).device)  # streamed: x on host
    try:
        with torch.inference_mode():
            out = model.eval()(head.inputs(0, 2))
    except RuntimeError as err:
        raise UserError(f"data of shape {tuple(split.x.shape[1:])} does not fit the model: "
                        f"{str(err).splitlines()[0]}") from err
    if num_classes > 0 and (out.dim() != 2 or out.shape[1] != num_classes):
        raise UserError(f"the model outputs shape {tuple(out.shape[1:])} but the data have "
                        f"{num_classes} classes: set the model's num_classes to match")


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def tune_cpu_malloc() -> bool:
    """Keep freed memory in the process (glibc): no munmap + page faults for every large activation.

    By default glibc serves every allocation above 32 MB with mmap and returns it on free, so each
    CPU forward re-faults its activations (ResNet-20, 512 images: ~400k page faults and ~1 s of
    system time per pass, see BENCHMARKS.md). mallopt at runtime does what the MALLOC_*_ env vars
    do at process start. Returns False where it does not apply (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        big = ctypes.c_int(2**31 - 1)  # mallopt takes an int: 2 GiB is the largest threshold
        ok = libc.mallopt(M_MMAP_THRESHOLD, big) == 1
        ok &= libc.mallopt(M_TRIM_THRESHOLD, big) == 1
        ok &= libc.mallopt(M_TOP_PAD, ctypes.c_int(1 << 30)) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


def device_name(device: torch.device) -> str:
    """`cpu` or the GPU's product name, safe for a file name."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or device.type


def _tristate(value: Any, name: str) -> str:
    """auto | true | false from YAML (bools or strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "auto" if value is None else str(value).lower()
    if text not in ("auto", "true", "false"):
        raise UserError(f"eval.{name} is '{value}': use auto, true or false")
    return text


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- flat vectors

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


# ----------------------------------------------------------------------------- BatchNorm folding

class _Folded(nn.Module):
    """A conv or linear layer whose weight and bias are BatchNorm-folded buffers (views, set per point)."""

    def __init__(self, layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.linear = isinstance(layer, nn.Linear)
        object.__setattr__(self, "_layer", layer)  # for its conv settings only: not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear:
            return F.linear(x, self.weight, self.bias)
        return self._layer._conv_forward(x, self.weight, self.bias)


class BNFolder:
    """`conv -> BatchNorm` pairs of a traced model folded into one layer, refolded per point by index ops.

    For every channel c of a pair: s_c = gamma_c / sqrt(var_c + eps), W'_c = W_c s_c,
    b'_c = beta_c + (b_c - mean_c) s_c. Gammas, betas and conv weights are gathered from the flat
    parameter vector, means and variances from the flat buffer vector, so a refold costs ~8 kernels
    for the whole network, for one point (N,) or for P points at once (P, N).
    """

    def __init__(self, model: nn.Module, params: list[torch.Tensor], param_layout: FlatLayout,
                 buffers: list[torch.Tensor], buffer_layout: FlatLayout, device: torch.device):
        self.net = torch.fx.symbolic_trace(model)
        modules = dict(self.net.named_modules())
        pindex = {id(p): i for i, p in enumerate(params)}
        bindex = {id(b): i for i, b in enumerate(buffers)}
        pairs = []
        for node in list(self.net.graph.nodes):
            if node.op != "call_module" or not isinstance(modules.get(node.target), BN_TYPES):
                continue
            bn, prev = modules[node.target], node.args[0]
            if not (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
                continue
            layer = modules.get(prev.target)
            if not isinstance(layer, CONV_TYPES + (nn.Linear,)) or not bn.affine or bn.running_mean is None:
                continue
            if isinstance(layer, nn.Linear) and not isinstance(bn, nn.BatchNorm1d):
                continue
            if id(layer.weight) not in pindex or id(bn.running_var) not in bindex:
                continue
            pairs.append((node, prev, layer, bn))
        self.pairs = len(pairs)
        if not pairs:
            return
        # index vectors: per channel (gamma, beta: params; mean, var: buffers; eps) and per weight element
        g, be, mu, var, eps, widx, sidx, cb_at, cb_idx = [], [], [], [], [], [], [], [], []
        aligned = lambda n: -(-n // ALIGN) * ALIGN  # noqa: E731 - the folded weights are aligned like the flat ones
        w_numel = sum(aligned(layer.weight.numel()) for _, _, layer, _ in pairs)
        self.nw, self.nc = w_numel, sum(bn.num_features for *_, bn in pairs)
        wspecs, woff, coff = [], 0, 0
        for _, _, layer, bn in pairs:
            ch = bn.num_features
            rng = lambda t, lay, idx: torch.arange(lay.specs[idx][0], lay.specs[idx][0] + t.numel())  # noqa: E731
            g.append(rng(bn.weight, param_layout, pindex[id(bn.weight)]))
            be.append(rng(bn.bias, param_layout, pindex[id(bn.bias)]))
            mu.append(rng(bn.running_mean, buffer_layout, bindex[id(bn.running_mean)]))
            var.append(rng(bn.running_var, buffer_layout, bindex[id(bn.running_var)]))
            eps.append(torch.full((ch,), float(bn.eps)))
            wi = pindex[id(layer.weight)]
            w_off, shape, stride = param_layout.specs[wi]
            n = aligned(layer.weight.numel())  # the padding maps onto the flat vector's zero padding
            widx.append(torch.arange(w_off, w_off + n))
            channel = torch.zeros(n, dtype=torch.long)  # output channel of each element, in storage order
            channel.as_strided(shape, stride).copy_(
                torch.arange(ch).view(-1, *([1] * (len(shape) - 1))).expand(shape))
            sidx.append(channel + coff)
            if layer.bias is not None:
                cb_at.append(torch.arange(coff, coff + ch))
                cb_idx.append(rng(layer.bias, param_layout, pindex[id(layer.bias)]))
            wspecs.append((woff, shape, stride, coff, ch))
            woff, coff = woff + n, coff + ch
        to = lambda ts: torch.cat(ts).to(device)  # noqa: E731
        self.g, self.be, self.mu, self.var, self.eps = to(g), to(be), to(mu), to(var), to(eps)
        self.widx, self.sidx = to(widx), to(sidx)
        self.cb = (to(cb_at), to(cb_idx)) if cb_at else None
        self.wspecs = wspecs
        self.weights = torch.zeros(1, w_numel, device=device)  # loop mode: row 0, the current point
        self.biases = torch.zeros(1, self.nc, device=device)
        for k, (node, prev, layer, bn) in enumerate(pairs):
            w, b = self.views(self.weights, self.biases, k)
            name = f"bnfolded_{k}"
            self.net.add_submodule(name, _Folded(layer, w[0], b[0]))
            prev.target = name
            node.replace_all_uses_with(prev)
            self.net.graph.erase_node(node)
        self.net.recompile()
        self.net.delete_all_unused_submodules()  # the traced copy only: the model keeps its BatchNorms
        self.names = [f"bnfolded_{k}" for k in range(len(pairs))]

    def views(self, weights: torch.Tensor, biases: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Folded weight and bias of pair k, with the leading point dim of `weights` (P, nw)."""
        woff, shape, stride, coff, ch = self.wspecs[k]
        w = weights.as_strided((weights.shape[0], *shape), (weights.stride(0), *stride),
                               weights.storage_offset() + woff)
        return w, biases[:, coff:coff + ch]

    def fold(self, params: torch.Tensor, buffers: torch.Tensor, weights: torch.Tensor,
             biases: torch.Tensor) -> None:
        """Folded weights (P, nw) and biases (P, nc) from parameters (P, N) and buffers (P or 1, Nb)."""
        scale = torch.rsqrt(buffers[:, self.var] + self.eps) * params[:, self.g]
        torch.sub(params[:, self.be], buffers[:, self.mu] * scale, out=biases)
        if self.cb is not None:
            at, idx = self.cb
            biases[:, at] += params[:, idx] * scale[:, at]
        torch.mul(params[:, self.widx], scale[:, self.sidx], out=weights)


# ----------------------------------------------------------------------------- sums over a batch

def point_sums(out: torch.Tensor, y: torch.Tensor, loss: str, classify: bool) -> torch.Tensor:
    """(P, 2) fp32 [loss sum, correct count] of outputs `out` (P, B, ...) against targets `y` (B, ...)."""
    out = out.float()  # fp16/bf16 logits to fp32 before any reduction
    p = out.shape[0]
    if loss == "cross_entropy":
        if not classify:
            raise UserError("loss cross_entropy needs class labels; use loss=mse or loss=mae for regression")
        picked = out.gather(-1, y.view(1, -1, 1).expand(p, -1, 1)).squeeze(-1)
        total = (torch.logsumexp(out, -1) - picked).sum(1)
    else:
        if classify:  # Li et al.: softmax probabilities against one-hot targets
            target = F.one_hot(y, out.shape[-1]).to(out.dtype)
            diff = out.softmax(-1) - target
        else:
            diff = out - y.reshape(out.shape[1:])
        total = (diff.square() if loss == "mse" else diff.abs()).flatten(1).sum(1)
    correct = (out.argmax(-1) == y).flatten(1).sum(1).float() if classify else torch.zeros_like(total)
    return torch.stack([total, correct], 1)


# ----------------------------------------------------------------------------- streaming

class _Stream:
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


# ----------------------------------------------------------------------------- the engine

class Evaluator:
    """Evaluates a model along directions on device-resident (or streamed) splits; one per worker.

    Keyword options (all with defaults; `conf/surface.yaml` `eval.*` documents them):
    mode auto|loop|vmap, points_per_batch (vmap: points per forward), compile auto|true|false,
    fold_bn auto|true|false, channels_last auto|true|false, stream auto|true|false, precision_check
    (points per `evaluate` call also computed in fp32, bf16/fp16 only), cache_dir (where choices
    are cached per device name).
    """

    def __init__(self, model: nn.Module, origin: StateDict, directions: Directions,
                 splits: Mapping[str, Split], num_classes: int, loss: str = "cross_entropy",
                 precision: str = "fp32", batch_size: int | None = None,
                 device: str | torch.device = "cpu", *, mode: str = "auto",
                 points_per_batch: int | None = None, compile: Any = "auto", fold_bn: Any = "auto",
                 channels_last: Any = "auto", stream: Any = "auto", precision_check: int = 1,
                 cache_dir: str | Path | None = None):
        if loss not in LOSSES:
            raise UserError(f"loss '{loss}' is unknown: use one of {', '.join(LOSSES)}")
        if precision not in PRECISIONS:
            raise UserError(f"precision '{precision}' is unknown: use one of {', '.join(PRECISIONS)}")
        if mode not in MODES:
            raise UserError(f"eval.mode '{mode}' is unknown: use one of {', '.join(MODES)}")
        if points_per_batch is not None and int(points_per_batch) < 1:
            raise UserError(f"eval.points_per_batch is {points_per_batch}: use 1 or more, or null")
        if batch_size is not None and int(batch_size) < 1:
            raise UserError(f"eval.batch_size is {batch_size}: use 1 or more, or null")
        t_setup = time.perf_counter()
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        cuda = self.device.type == "cuda"
        self.loss, self.precision, self.classify = loss, precision, num_classes > 0
        self.dtype = PRECISIONS[precision]
        self.precision_check = max(0, int(precision_check or 0))
        self.cache_dir = Path(cache_dir) if cache_dir else None
        opts = {"compile": _tristate(compile, "compile"), "channels_last": _tristate(channels_last, "channels_last"),
                "stream": _tristate(stream, "stream"), "fold_bn": _tristate(fold_bn, "fold_bn")}
        self.options = {"mode": mode, "points_per_batch": points_per_batch, "batch_size": batch_size,
                        "precision": precision, **opts}

        model.load_state_dict(origin)
        self.model = model.eval()
        has_conv = any(isinstance(m, CONV_TYPES) for m in model.modules())
        self.has_conv = has_conv
        # channels_last: faster for 2D convolutions with cuDNN and with oneDNN on CPU alike (BENCHMARKS.md)
        self.channels_last = opts["channels_last"] == "true" or (opts["channels_last"] == "auto" and any(
            isinstance(m, nn.Conv2d) for m in model.modules()))
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

        # parameters and floating buffers become views into flat vectors
        self.params = list(self.model.parameters())
        self.playout = FlatLayout(self.params)
        self.flat = self.playout.bind(self.params, self.device)
        self.theta0 = self.flat.clone()
        self.param_names = _unique_names(self.model.named_parameters(), self.params)
        dx = directions.x
        if len(dx) != len(self.params) or any(d.numel() != p.numel() for d, p in zip(dx, self.params)):
            raise UserError("the directions do not match the model's parameters (different sizes)")
        self.d = [self.playout.pack(list(dx), self.device)]
        if directions.y is not None:
            self.d.append(self.playout.pack(list(directions.y), self.device))
        named_buffers = [(n, b) for n, b in self.model.named_buffers() if b.is_floating_point()]
        self.buffer_names = [n for n, _ in named_buffers]
        self.buffer_list = [b for _, b in named_buffers]
        self.blayout = FlatLayout(self.buffer_list)
        self.bflat = self.blayout.bind(self.buffer_list, self.device)
        self.bstep = None  # line directions: the buffers move with the weights
        if directions.x_buffers:
            absent = [n for n in directions.x_buffers if n not in self.buffer_names]
            if absent:
                raise UserError(f"the directions move buffers the model lacks: {', '.join(absent[:4])}")
            self.bbase = self.bflat.clone()
            self.bstep = self.blayout.pack([directions.x_buffers.get(n) for n in self.buffer_names], self.device)

        self.folder = None
        # fold_bn auto: on CPU, where it measured 1.0-1.2x faster (BENCHMARKS.md); on CUDA only when asked
        fold = opts["fold_bn"] == "true" or (opts["fold_bn"] == "auto" and not cuda and any(
            isinstance(m, BN_TYPES) for m in model.modules()))
        if fold:
            say = log.warning if opts["fold_bn"] == "true" else log.info
            try:
                folder = BNFolder(self.model, self.params, self.playout, self.buffer_list, self.blayout,
                                  self.device)
                self.folder = folder if folder.pairs else None
                if not folder.pairs:
                    say("eval.fold_bn: no conv/linear -> BatchNorm pair found; running unfolded")
            except Exception as err:  # fx cannot trace every model (data-dependent control flow)
                say("eval.fold_bn: cannot trace the model (%s); running unfolded", str(err).splitlines()[0])
        self.net = self.folder.net if self.folder else self.model

        # data: resident on the device unless it does not fit (or streaming is forced)
        self.host_splits = dict(splits)
        self.stream = opts["stream"] == "true" or (opts["stream"] == "auto" and cuda and self._too_big(splits))
        if self.stream:
            self.splits = {k: _with_y_on(s, self.device) for k, s in splits.items()}
        else:
            self.splits = {k: s.to(self.device) for k, s in splits.items()}
        check_fits(self.model, next(iter(self.splits.values())), num_classes)
        with torch.inference_mode():
            probe = self.model(_head(next(iter(self.splits.values())), 1, self.device).inputs(0, 1))
        self.out_per_sample = probe[0].numel()

        self.info: dict[str, Any] = {}
        self.last_info: dict[str, Any] = {}
        self._compiled: dict[str, Callable] = {}
        self.mode, self.points, self.use_compile = "loop", 1, False
        self._normalised: dict[str, Split] | None = None
        self._streams: dict[tuple[int, int], _Stream] = {}
        self._vmap_state: dict[int, Any] = {}
        cached = self._read_cache()
        with torch.inference_mode(), self._backend_flags():
            self._choose_mode(cached)
            self.batch_size = int(batch_size) if batch_size else (
                cached.get("batch_size") if cached else None) or self._choose_batch_size()
            self.use_compile = self._choose_compile(opts["compile"], cached)
        self._write_cache()
        self.info.update({"mode": self.mode, "points_per_batch": self.points, "batch_size": self.batch_size,
                          "compile": self.use_compile, "fold_bn": self.folder is not None,
                          "channels_last": self.channels_last, "stream": self.stream,
                          "setup_seconds": time.perf_counter() - t_setup})
        log.info("engine: %s", self.info)

    # ------------------------------------------------------------------ setup choices

    def _too_big(self, splits: Mapping[str, Split]) -> bool:
        """Stream when the splits would take more than 40% of the free device memory."""
        need = sum(s.x.numel() * s.x.element_size() + s.y.numel() * s.y.element_size() for s in splits.values())
        free, _ = torch.cuda.mem_get_info(self.device)
        return need > 0.4 * free

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = json.dumps({**self.options, "splits": [len(s) for s in self.host_splits.values()],
                          "model": [type(self.model).__name__, [tuple(p.shape) for p in self.params]],
                          "torch": torch.__version__}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.cache_dir / f"engine-{device_name(self.device)}-{digest}.json"

    def _read_cache(self) -> dict[str, Any] | None:
        path = self._cache_file()
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _write_cache(self) -> None:
        """First writer wins (link is atomic and fails if the file exists): all workers agree."""
        path = self._cache_file()
        if path is None:
            return
        record = {"mode": self.mode, "points_per_batch": self.points, "batch_size": self.batch_size,
                  "compile": self.use_compile, "device": device_name(self.device),
                  "decision": self.info.get("mode_decision"), "written": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record, indent=1))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            theirs = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            log.warning("cannot write the engine cache %s: %s", path, err)
            return
        if (theirs.get("mode"), theirs.get("points_per_batch"), theirs.get("batch_size"), theirs.get("compile")) != \
                (self.mode, self.points, self.batch_size, self.use_compile):
            self._apply_cached(theirs)  # another worker was first: use its choices

    def _apply_cached(self, cached: Mapping[str, Any]) -> None:
        self.mode, self.points = cached["mode"], int(cached["points_per_batch"])
        self.batch_size = int(self.options["batch_size"] or cached["batch_size"])
        self.use_compile = bool(cached["compile"])
        self._normalised = None
        self._compiled.clear()
        self._vmap_state.clear()

    def _choose_mode(self, cached: Mapping[str, Any] | None) -> None:
        mode, ppb = self.options["mode"], self.options["points_per_batch"]
        if mode == "loop":
            self.mode, self.points = "loop", 1
        elif mode == "vmap":
            self.mode, self.points = "vmap", int(ppb or 16)
        elif cached:
            self.mode, self.points = cached["mode"], int(cached["points_per_batch"])
        elif self.has_conv:  # grouped convolutions under vmap: slower (BENCHMARKS.md), so no probe
            self.mode, self.points = "loop", 1
            self.info["mode_decision"] = "convolutions: loop"
        else:
            self._measure_modes(ppb)

    def _probe_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, Split]:
        split = max(self.splits.values(), key=len)
        n = min(n, len(split))
        x = split.x[:n].to(self.device)
        return x, split.y[:n], split

    def _measure_modes(self, ppb: int | None) -> None:
        """Seconds per point on one batch: loop vs vmap at a few points per forward; keep the fastest."""
        x, y, split = self._probe_batch(CPU_BATCH if self.device.type == "cpu" else 4096)
        coords = np.zeros((max(VMAP_CANDIDATES + ((ppb,) if ppb else ())), len(self.d)))

        def timed(fn: Callable[[], Any], reps: int) -> float:
            fn()  # warm-up
            _sync(self.device)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(self.device)
            return (time.perf_counter() - t0) / reps

        def loop_once() -> None:
            self._apply(coords[:1], "loop")
            self._step("loop", x, y, split, eager=True)

        decision = {"loop": timed(loop_once, 3)}
        budget = self._memory_budget() * 0.25
        for p in ([int(ppb)] if ppb else VMAP_CANDIDATES):
            if p * self.flat.numel() * 4 * (2 if self.folder else 1) > budget:
                continue

            def vmap_once(p=p) -> None:
                self._apply(coords[:p], "vmap", p)
                self._step("vmap", x, y, split, eager=True, points=p)

            try:
                decision[f"vmap{p}"] = timed(vmap_once, 2) / p
            except (RuntimeError, NotImplementedError) as err:  # an op without a vmap rule, or out of memory
                log.info("vmap at %d points failed: %s", p, str(err).splitlines()[0])
                break
        best = min(decision, key=decision.get)
        if best != "loop" and decision[best] * VMAP_MIN_GAIN <= decision["loop"]:
            self.mode, self.points = "vmap", int(best[4:])
        else:
            self.mode, self.points = "loop", 1
        self.info["mode_decision"] = {k: round(v, 6) for k, v in decision.items()}
        self._vmap_state.clear()

    def _memory_budget(self) -> float:
        if self.device.type == "cuda":
            return float(torch.cuda.mem_get_info(self.device)[0])
        try:
            return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            return 8e9

    def _choose_batch_size(self) -> int:
        largest = max(len(s) for s in self.splits.values())
        if self.device.type == "cpu":
            return min(largest, CPU_BATCH)
        return self._fit_batch_size(largest)

    def _fit_batch_size(self, largest: int) -> int:
        """Largest batch whose forward fits in 70% of free memory: two probes, a linear fit, a check."""
        split = max(self.splits.values(), key=len)
        coords = np.zeros((self.points, len(self.d)))
        self._apply(coords, self.mode, self.points)

        def peak(n: int) -> int:
            x, y = split.x[:n].to(self.device), split.y[:n]
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            self._step(self.mode, x, y, split, eager=True, points=self.points)
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - base

        torch.cuda.empty_cache()
        n1, n2 = min(largest, 64), min(largest, 256)
        p1, p2 = peak(n1), peak(n2)
        budget = 0.7 * torch.cuda.mem_get_info(self.device)[0]
        if n2 == largest and p2 < budget:
            size = largest
        else:
            per = max((p2 - p1) / max(n2 - n1, 1), 1.0)
            size = int((budget - max(p1 - per * n1, 0)) / per)
            size = largest if size >= largest else max(n2, size // 64 * 64)
        while True:  # check it, halving on out-of-memory
            try:
                peak(size)
                break
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if size <= 1:
                    raise
                size = max(1, size // 2)
        self.info["batch_probe"] = {"bytes_at": {n1: p1, n2: p2}, "budget": budget}
        return size

    def _choose_compile(self, option: str, cached: Mapping[str, Any] | None) -> bool:
        """auto: on CUDA only, kept only where the compiled step beats eager on one full batch."""
        if option == "false" or (option == "auto" and self.device.type != "cuda"):
            return False
        if option == "auto" and cached:
            return bool(cached["compile"])
        if not hasattr(torch, "compile"):
            log.warning("torch.compile is unavailable in torch %s: running eager", torch.__version__)
            return False
        if option == "true":
            return True
        split = max(self.splits.values(), key=len)
        x, y = split.x[:self.batch_size].to(self.device), split.y[:self.batch_size]
        coords = np.zeros((self.points, len(self.d)))
        self._apply(coords, self.mode, self.points)
        self.use_compile = True
        t0 = time.perf_counter()
        try:
            self._step(self.mode, x, y, split, points=self.points)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: run eager
            log.warning("torch.compile failed (%s): running eager", str(err).splitlines()[0][:200])
            self._compiled.clear()
            return False
        if "fallback" in self.info:
            return False
        warm = time.perf_counter() - t0
        times = {}
        for eager in (False, True, False, True):
            _sync(self.device)
            t = time.perf_counter()
            self._step(self.mode, x, y, split, eager=eager, points=self.points)
            _sync(self.device)
            times.setdefault(eager, []).append(time.perf_counter() - t)
        compiled_s, eager_s = min(times[False]), min(times[True])
        self.info["compile_decision"] = {"warmup_s": round(warm, 2), "compiled_s": compiled_s, "eager_s": eager_s}
        return compiled_s < eager_s

    @contextlib.contextmanager
    def _backend_flags(self):
        """tf32 only for precision tf32; cudnn autotuning only where results need not be bit-stable."""
        cuda = torch.backends.cuda.matmul
        saved = (cuda.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
        tf32 = self.precision == "tf32"
        cuda.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = self.precision not in ("fp32",)
        try:
            yield
        finally:
            cuda.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved

    # ------------------------------------------------------------------ moving to points

    def set_point(self, coord: np.ndarray) -> None:
        """Weights (and, for a line, buffers) at one point, in place; folded weights follow."""
        self._set_row(self.flat, self.bflat if self.bstep is not None else None, coord)
        if self.folder:
            self.folder.fold(self.flat[None], self.bflat[None], self.folder.weights, self.folder.biases)

    def _set_row(self, params: torch.Tensor, buffers: torch.Tensor | None, coord: np.ndarray) -> None:
        torch.add(self.theta0, self.d[0], alpha=float(coord[0]), out=params)
        if len(self.d) > 1:
            params.add_(self.d[1], alpha=float(coord[1]))
        if buffers is not None:
            torch.add(self.bbase, self.bstep, alpha=float(coord[0]), out=buffers)

    def _apply(self, coords: np.ndarray, mode: str, points: int = 1) -> None:
        """Loop: move the model to coords[0]. vmap: fill the (P, N) weights of up to P points (padded)."""
        if mode == "loop":
            self.set_point(coords[0])
            return
        st = self._vmap_buffers(points)
        for i in range(points):
            c = coords[min(i, len(coords) - 1)]  # a short last chunk repeats its last point
            self._set_row(st["W"][i], st["B"][i] if st["B"] is not None else None, c)
        if self.folder:
            buffers = st["B"] if st["B"] is not None else self.bflat[None]
            self.folder.fold(st["W"], buffers, st["FW"], st["FB"])

    def _vmap_buffers(self, points: int) -> dict[str, Any]:
        """fp32 (P, ...) weights of the points of a chunk, and the batched name -> view dict over them."""
        st = self._vmap_state.get(points)
        if st is not None:
            return st
        zeros = lambda n, dtype=torch.float32: torch.zeros(points, n, device=self.device, dtype=dtype)  # noqa: E731
        folded = self.folder is not None
        st = {"W": zeros(self.flat.numel()), "B": zeros(self.bflat.numel()) if self.bstep is not None else None,
              "FW": zeros(self.folder.nw) if folded else None, "FB": zeros(self.folder.nc) if folded else None}
        st["batched"] = self._batched_views(st)
        self._vmap_state[points] = st
        return st

    def _batched_views(self, t: Mapping[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        own = dict(self.net.named_parameters()) | dict(self.net.named_buffers())
        batched = {n: self.playout.view(t["W"], i) for i, n in enumerate(self.param_names) if n in own}
        if t["B"] is not None:
            batched |= {n: self.blayout.view(t["B"], i) for i, n in enumerate(self.buffer_names) if n in own}
        if self.folder:
            for k, name in enumerate(self.folder.names):
                w, b = self.folder.views(t["FW"], t["FB"], k)
                batched |= {f"{name}.weight": w, f"{name}.bias": b}
        return batched

    def _vmap_args(self, points: int, dtype: torch.dtype | None) -> tuple[dict, dict]:
        """(batched, shared) tensors for functional_call under vmap.

        Autocast does not reach inside vmap (torch 2.x), so bf16/fp16 vmap runs on explicit casts:
        weights, buffers and inputs in the low precision (logits still go to fp32 before the loss).
        """
        st = self._vmap_buffers(points)
        if dtype is None:
            return st["batched"], {}
        key = ("cast", dtype)
        if key not in st:
            cast = {k: None if v is None else torch.empty_like(v, dtype=dtype) for k, v in st.items()
                    if k in ("W", "B", "FW", "FB")}
            shared_vec = torch.empty_like(self.bflat, dtype=dtype)
            own = dict(self.net.named_buffers())
            shared = {n: self.blayout.view(shared_vec, i) for i, n in enumerate(self.buffer_names)
                      if n in own and st["B"] is None}
            st[key] = (cast, self._batched_views(cast), shared_vec, shared)
        cast, batched, shared_vec, shared = st[key]
        for k, v in cast.items():
            if v is not None:
                v.copy_(st[k])
        shared_vec.copy_(self.bflat)
        return batched, shared

    # ------------------------------------------------------------------ one batch

    def _make_step(self, mode: str, dtype: torch.dtype | None, points: int) -> Callable:
        net, loss, classify, cl = self.net, self.loss, self.classify, self.channels_last
        devtype = self.device.type

        def forward(fn: Callable, *args: Any) -> torch.Tensor:
            if dtype is None:
                return fn(*args)
            with torch.autocast(devtype, dtype=dtype):
                return fn(*args)

        if mode == "loop":
            def step(x, y, scale, mean, std):
                out = forward(net, normalize(x, scale, mean, std, cl))
                return point_sums(out[None], y, loss, classify)
            return step

        def one(batched, shared, xb):
            return torch.func.functional_call(net, {**shared, **batched}, (xb,), strict=False)

        def vstep(x, y, scale, mean, std, batched, shared):
            xb = normalize(x, scale, mean, std, False)
            if dtype is not None:  # explicit casts: see _vmap_args
                xb = xb.to(dtype)
            out = torch.func.vmap(one, in_dims=(0, None, None))(batched, shared, xb)
            return point_sums(out, y, loss, classify)
        return vstep

    def _step(self, mode: str, x: torch.Tensor, y: torch.Tensor, split: Split, *, eager: bool = False,
              points: int = 1, dtype: Any = "run") -> torch.Tensor:
        """(P, 2) sums for one batch at the current point(s)."""
        dtype = self.dtype if dtype == "run" else dtype
        key = f"{mode}-{points}-{dtype}"
        compiled = self.use_compile and not eager and dtype == self.dtype
        fn = self._compiled.get(("c" if compiled else "e") + key)
        if fn is None:
            fn = self._make_step(mode, dtype, points)
            if compiled:
                _raise_recompile_limit()
                fn = torch.compile(fn, dynamic=False)
            self._compiled[("c" if compiled else "e") + key] = fn
        args = (x, y, split.scale, split.mean, split.std)
        if mode == "vmap":
            args += self._vmap_args(points, dtype)
        if not compiled:
            return fn(*args)
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - compiler failures of any kind: fall back to eager
            log.warning("torch.compile failed (%s): running eager from now on", str(err).splitlines()[0][:200])
            self.use_compile = False
            self.info["fallback"] = str(err).splitlines()[0][:200]
            return self._step(mode, x, y, split, eager=True, points=points, dtype=dtype)

    # ------------------------------------------------------------------ a batch of points

    def _chunks(self, n: int, mode: str, points: int) -> list[tuple[int, int]]:
        size = 1 if mode == "loop" else points
        return [(i, min(i + size, n)) for i in range(0, n, size)]

    def _stream_of(self, split: Split) -> "_Stream":
        """One streamer per split and batch size: the host copy is pinned once, not per tile."""
        key = (id(split), self.batch_size)
        if key not in self._streams:
            self._streams[key] = _Stream(split, self.device, self.batch_size)
        return self._streams[key]

    def _batches(self, split: Split, batch: int) -> Iterator[tuple[torch.Tensor, int, int]]:
        for start in range(0, len(split), batch):
            stop = min(start + batch, len(split))
            yield split.x[start:stop], start, stop

    def _sums(self, coords: np.ndarray, splits: Mapping[str, Split], mode: str, points: int, *,
              dtype: Any = "run", eager: bool = False, limit: int | None = None,
              stream: bool | None = None) -> torch.Tensor:
        """(npoints, nsplits, 2) fp64 device sums; `limit`: only the first samples of each split."""
        n = len(coords)
        chunks = self._chunks(n, mode, points)
        width = 1 if mode == "loop" else points
        sums = torch.zeros(n + width, len(splits), 2, dtype=torch.float64, device=self.device)
        stream = self.stream if stream is None else stream
        splits = {k: _head(s, limit, self.device) for k, s in splits.items()} if limit else splits

        def accumulate(p0: int, si: int, xb: torch.Tensor, split: Split, start: int, stop: int) -> None:
            r = self._step(mode, xb, split.y[start:stop], split, eager=eager, points=width, dtype=dtype)
            sums[p0:p0 + width, si] += r.double()

        if stream:  # data outermost: each streamed batch serves every point
            for si, split in enumerate(splits.values()):
                for xb, start, stop in self._stream_of(split):
                    for p0, p1 in chunks:
                        self._apply(coords[p0:p1], mode, points)
                        accumulate(p0, si, xb, split, start, stop)
        else:
            for p0, p1 in chunks:
                self._apply(coords[p0:p1], mode, points)
                for si, split in enumerate(splits.values()):
                    for xb, start, stop in self._batches(split, self.batch_size):
                        accumulate(p0, si, xb, split, start, stop)
        return sums[:n]

    def evaluate(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Per point `{split}_loss` (mean over the split) and `{split}_acc` (percent, classification)."""
        coords = np.atleast_2d(np.asarray(coords, dtype=np.float64))
        info: dict[str, Any] = {}
        with torch.inference_mode(), self._backend_flags():
            splits = self._eval_splits()
            sums = self._sums(coords, splits, self.mode, self.points)
            check = None
            k = min(self.precision_check, len(coords)) if self.dtype is not None else 0
            if k:  # the first k points over the first samples, eager, in the run's mode: run precision and fp32
                kw = {"eager": True, "limit": CHECK_SAMPLES, "stream": False}
                run = self._sums(coords[:k], splits, self.mode, self.points, **kw)
                ref = self._sums(coords[:k], splits, self.mode, self.points, dtype=None, **kw)
                check = torch.stack([run[..., 0], ref[..., 0]])
            host = sums.cpu().numpy()  # (points, splits, 2): the one host sync
            if check is not None:
                c = check.cpu().numpy()
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.abs(c[0] - c[1]) / np.maximum(np.abs(c[1]), 1e-30)
                rel[~np.isfinite(c[0]) & np.isfinite(c[1])] = np.inf
                info["precision_check"] = float(np.nanmax(rel)) if np.isfinite(c[1]).any() else float("nan")
                info["precision_check_points"] = k
            bad = ~np.isfinite(host[..., 0]).all(1)
            if self.dtype is not None and bad.any():  # overflow in fp16/bf16: recompute those points in fp32
                idx = np.flatnonzero(bad)
                redo = self._sums(coords[idx], splits, "loop", 1, dtype=None, eager=True).cpu().numpy()
                host[idx] = redo
                info["recomputed_fp32"] = int(len(idx))
                log.warning("%d point(s) overflowed in %s and were recomputed in fp32", len(idx), self.precision)
        out = {}
        for i, (name, split) in enumerate(self.splits.items()):
            count = len(split) if self.loss == "cross_entropy" else len(split) * self.out_per_sample
            out[f"{name}_loss"] = host[:, i, 0] / count
            if self.classify:
                out[f"{name}_acc"] = 100.0 * host[:, i, 1] / len(split)
        self.last_info = info
        return out

    def _eval_splits(self) -> Mapping[str, Split]:
        """CPU: the inputs normalised once (same ops, so the same values), when they take at most 1 GiB.

        A GPU keeps uint8 images and normalises per batch (DESIGN.md): there it costs ~1% of a point,
        and the compiled step fuses it; on a CPU it is a few percent of a small model's forward.
        """
        if self.device.type != "cpu" or self.stream:
            return self.splits
        if self._normalised is None:
            cl = self.channels_last and self.mode == "loop"
            need = sum(s.x.numel() * 4 for s in self.splits.values())
            self._normalised = self.splits if need > CPU_NORMALISED_BYTES else {
                k: Split(normalize(s.x, s.scale, s.mean, s.std, cl), s.y) for k, s in self.splits.items()}
        return self._normalised

    def meta(self) -> dict[str, Any]:
        """Scalars for a tile file's attributes: how the engine ran, and the last precision check."""
        m = {f"engine_{k}": v for k, v in self.info.items() if isinstance(v, (bool, int, float, str))}
        return m | self.last_info


def _raise_recompile_limit(limit: int = 64) -> None:
    """Every Evaluator compiles the same step code for its own model and shapes: allow more than 8."""
    config = getattr(getattr(torch, "_dynamo", None), "config", None)
    for name in ("recompile_limit", "cache_size_limit"):
        if config is not None and isinstance(getattr(config, name, None), int):
            setattr(config, name, max(getattr(config, name), limit))


def _unique_names(named: Iterator[tuple[str, torch.Tensor]], params: list[torch.Tensor]) -> list[str]:
    """The name of each of `params` (first name of a shared tensor)."""
    first: dict[int, str] = {}
    for n, p in named:
        first.setdefault(id(p), n)
    return [first[id(p)] for p in params]


def _with_y_on(split: Split, device: torch.device) -> Split:
    """Targets and normalisation constants on the device, inputs left on the host (streamed)."""
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return replace(split, y=move(split.y), mean=move(split.mean), std=move(split.std))


def _head(split: Split, n: int, device: torch.device) -> Split:
    """The first n samples with their normalisation, on the device."""
    return replace(split, x=split.x[:n], y=split.y[:n]).to(device)
