"""The evaluation engine: loss (and accuracy) at grid points `theta0 + a*d1 + b*d2`.

How a point is computed (see DESIGN.md, "The evaluation engine", and BENCHMARKS.md):
- every parameter, and every floating buffer, is a view into one flat device vector, each tensor
  aligned and laid out in its own memory format (so `channels_last` weights stay views); moving to a
  point is two fused in-place ops on that vector, never a rebuild from Python lists (`flat.py`; CUDA
  bf16/fp16: one compiled kernel that also writes the low-precision copy, `lowp.move_and_cast`);
- two execution modes: `loop` runs one point at a time over large sample batches; `vmap` runs
  P points in one batched forward (`torch.func.functional_call` + `vmap`, parameters AND buffers
  passed, so eval-mode BatchNorm works). `auto` keeps convnets on `loop` (vmap turns convolutions
  into grouped convolutions: measured slower) and measures the two on one batch for other models;
- BatchNorm may be folded into the preceding conv/linear layer (`fold_bn`, auto: on): the
  folded weights are recomputed from the flat vectors after every move by a handful of
  gather/multiply ops, whatever the depth of the network (`bnfold.py`);
- `channels_last` for 2D convnets (auto: on, CPU and CUDA); `torch.compile` (auto: CUDA only, kept
  where it beats eager on a full batch, eager fallback on any compiler failure);
- on CUDA in loop mode, the batch size and whether a point's whole pass runs as one captured CUDA
  graph (`graphs.py`) are timed per sample once per run (`choices.py`);
- the split stays on the device (uint8 images normalised per batch; on CPU normalised once) or is
  streamed through two device buffers filled on a side CUDA stream when it does not fit (each
  streamed batch then serves every point of the tile; `stream.py`);
- loss sums (fp64) and correct counts (`sums.py`) stay on the device: one host sync per `evaluate` call;
- bf16/fp16 run under autocast with fp32 master weights (vmap: explicit casts, autocast does not
  reach inside vmap), logits go to fp32 before the loss, non-finite points are recomputed in fp32,
  and the first `precision_check` points of each call are also computed in fp32. Conv/linear
  weights are cast once per point, not per batch (`lowp.py`: autocast's values, bitwise), and on
  CUDA linear layers are zero-padded to tensor-core-aligned sizes (`pad_linear`, auto: CUDA).
Batch size, mode and compile choices (`choices.py`) are made once per worker and cached per device name in the
run directory (`cache/engine-<device>-<key>.json`, first writer wins): every worker of the same
device kind then makes the same choice, so fp32 values do not depend on which worker computed a
tile (and within one engine they are bitwise independent of tiling and points per batch).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from .bnfold import BN_TYPES, CONV_TYPES, BNFolder
from .checkpoint import StateDict
from .choices import EngineChoices
from .data import Split, normalize
from .directions import Directions
from .errors import UserError, first_line, whole_number
from .flat import FlatLayout
from .graphs import PointGraph
from .hardware import backend_flags, device_name
from .lowp import LowPrecisionNet
from .stream import Stream
from .sums import check_fits, check_loss, point_sums

log = logging.getLogger(__name__)

# Bumped whenever the fp32 arithmetic of a point changes (tiles record it; landscape-status flags a mix):
# 1 moved weights with add(alpha=a), 2 with addcmul on device coordinates (CUDA graphs replay them).
ENGINE_VERSION = 2
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("auto", "loop", "vmap")
TRISTATES = ("compile", "channels_last", "stream", "fold_bn", "cuda_graph", "pad_linear")  # auto | true | false each
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")  # CUDA graphs are the engine's own (graphs.py)
# precision_check compares the mean loss over the first samples of a split. 1024, not 4096: fp32 GEMMs run
# at ~1/15 of bf16's rate, so on the 3x9000 MLP 4096 fp32 samples cost ~2% of a 64-point tile (estimated).
CHECK_SAMPLES = 1024
CPU_NORMALISED_BYTES = 1 << 30  # CPU: inputs normalised once, kept as float32, up to this size


def check_options(loss: str = "cross_entropy", precision: str = "fp32", *, mode: str = "auto",
                  points_per_batch: int | None = None, batch_size: int | None = None, compile_mode: str = "default",
                  **tristates: Any) -> dict[str, Any]:
    """The engine's options checked (a UserError naming the key) and normalised; needs no model or device.

    `landscape-surface` calls it before writing anything, the Evaluator again on every worker.
    """
    check_loss(loss)
    if precision not in PRECISIONS:
        raise UserError(f"precision '{precision}' is unknown: use one of {', '.join(PRECISIONS)}")
    if mode not in MODES:
        raise UserError(f"eval.mode '{mode}' is unknown: use one of {', '.join(MODES)}")
    for key, value in (("points_per_batch", points_per_batch), ("batch_size", batch_size)):
        if value is not None:
            whole_number(value, f"eval.{key}", 1, ", or null")
    if compile_mode not in COMPILE_MODES:
        raise UserError(f"eval.compile_mode '{compile_mode}' is unknown: use one of {', '.join(COMPILE_MODES)}")
    unknown = sorted(set(tristates) - set(TRISTATES))
    if unknown:
        raise TypeError(f"unknown engine options: {', '.join(unknown)}")
    return {"mode": mode, "points_per_batch": points_per_batch, "batch_size": batch_size, "precision": precision,
            "compile_mode": compile_mode, **{k: _tristate(tristates.get(k, "auto"), k) for k in TRISTATES}}


def _tristate(value: Any, name: str) -> str:
    """auto | true | false from YAML (bools or strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "auto" if value is None else str(value).lower()
    if text not in ("auto", "true", "false"):
        raise UserError(f"eval.{name} is '{value}': use auto, true or false")
    return text


# ----------------------------------------------------------------------------- the engine

class Evaluator(EngineChoices):
    """Evaluates a model along directions on device-resident (or streamed) splits; one per worker.

    Keyword options (all with defaults; `conf/surface.yaml` `eval.*` documents them):
    mode auto|loop|vmap, points_per_batch (vmap: points per forward), compile auto|true|false,
    fold_bn auto|true|false, channels_last auto|true|false, stream auto|true|false, cuda_graph
    auto|true|false, pad_linear auto|true|false, compile_mode default|max-autotune-no-cudagraphs,
    precision_check (points per `evaluate` call also computed in fp32, bf16/fp16 only), cache_dir
    (where choices are cached per device name). `check_options` checks them.
    """

    def __init__(self, model: nn.Module, origin: StateDict, directions: Directions,
                 splits: Mapping[str, Split], num_classes: int, loss: str = "cross_entropy",
                 precision: str = "fp32", batch_size: int | None = None,
                 device: str | torch.device = "cpu", *, mode: str = "auto",
                 points_per_batch: int | None = None, compile: Any = "auto", fold_bn: Any = "auto",
                 channels_last: Any = "auto", stream: Any = "auto", precision_check: int = 1,
                 cuda_graph: Any = "auto", compile_mode: str = "default", pad_linear: Any = "auto",
                 cache_dir: str | Path | None = None):
        self.options = opts = check_options(
            loss, precision, mode=mode, points_per_batch=points_per_batch, batch_size=batch_size,
            compile_mode=compile_mode, compile=compile, channels_last=channels_last, stream=stream,
            fold_bn=fold_bn, cuda_graph=cuda_graph, pad_linear=pad_linear)
        t_setup = time.perf_counter()
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        cuda = self.device.type == "cuda"
        self.loss, self.precision, self.classify = loss, precision, num_classes > 0
        self.dtype = PRECISIONS[precision]
        self.precision_check = max(0, int(precision_check or 0))
        self.cache_dir = Path(cache_dir) if cache_dir else None

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
        # fold_bn auto: on, where there is BatchNorm; measured 1.0-1.2x faster on CPU, 1.06x on an H200 (BENCHMARKS.md)
        fold = opts["fold_bn"] == "true" or (opts["fold_bn"] == "auto" and any(
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
                say("eval.fold_bn: cannot trace the model (%s); running unfolded", first_line(err))
        self.net = self.folder.net if self.folder else self.model

        # data: resident on the device unless it does not fit (or streaming is forced)
        self.host_splits = dict(splits)
        self.stream = opts["stream"] == "true" or (opts["stream"] == "auto" and cuda and self._too_big(splits))
        if self.stream:
            self.splits = {k: _with_y_on(s, self.device) for k, s in splits.items()}
        else:
            self.splits = {k: s.to(self.device) for k, s in splits.items()}
        for name, split in self.splits.items():
            check_fits(self.model, split, num_classes, loss, name)
        with torch.inference_mode():
            probe = self.model(_head(next(iter(self.splits.values())), 1, self.device).inputs(0, 1))
        self.out_per_sample = probe[0].numel()

        self.info: dict[str, Any] = {}
        self.lowp = self._low_precision_net(opts["pad_linear"], cuda)
        self._moves = 0  # moves so far: low-precision copies are recast once per move, before a step uses them
        self.last_info: dict[str, Any] = {}
        self._compiled: dict[str, Callable] = {}
        self.mode, self.points, self.use_compile = "loop", 1, False
        self._normalised: dict[str, Split] | None = None
        self._streams: dict[tuple[int, int], Stream] = {}
        self._vmap_state: dict[int, Any] = {}
        self._graphs: dict[tuple, PointGraph | None] = {}
        self.use_graph = False
        cached = self._read_cache()
        with torch.inference_mode(), backend_flags(self.precision):
            self._choose_mode(cached)
            self.batch_size = int(batch_size) if batch_size else (
                cached.get("batch_size") if cached else None) or self._choose_batch_size()
            self.use_compile = self._choose_compile(opts["compile"], cached)
            self._tune_cuda(opts["cuda_graph"], cached)
        self._write_cache()
        self.info.update({"version": ENGINE_VERSION, "device_name": device_name(self.device), "mode": self.mode,
                          "points_per_batch": self.points, "batch_size": self.batch_size,
                          "compile": self.use_compile, "cuda_graph": self.use_graph, "fold_bn": self.folder is not None,
                          "channels_last": self.channels_last, "stream": self.stream,
                          "setup_seconds": time.perf_counter() - t_setup})
        log.info("engine: %s", self.info)

    def _low_precision_net(self, pad_option: str, cuda: bool) -> LowPrecisionNet | None:
        """bf16/fp16: the net with its conv/linear weights cast once per point (`lowp.py`); None in fp32."""
        if self.dtype is None:
            return None
        vectors = [self.flat] + ([self.folder.weights, self.folder.biases] if self.folder else [])
        pad = pad_option == "true" or (pad_option == "auto" and cuda)
        # CUDA: move and cast in one compiled kernel (not where lines move buffers too)
        fuse = cuda and self.bstep is None and hasattr(torch, "compile")
        if fuse:
            _raise_recompile_limit()  # one compile per model size (and coordinate alignment)
        try:
            lowp = LowPrecisionNet(self.net, vectors, self.dtype, pad=pad, share=self.params + self.buffer_list,
                                   fuse=fuse)
        except Exception as err:  # noqa: BLE001 - a model deepcopy cannot copy: autocast casts per batch
            log.info("weights cast per batch by autocast: %s", first_line(err, 200))
            return None
        self.info.update({"lowp_layers": lowp.cast, "padded_linear": lowp.npadded})
        return lowp

    # ------------------------------------------------------------------ moving to points

    def set_point(self, coord: np.ndarray | torch.Tensor) -> None:
        """Weights (and, for a line, buffers) at one point, in place; folded weights follow."""
        c = self._on_device(coord)
        self._moves += 1
        if self.lowp is None or not self.lowp.move(self.theta0, self.d, c, self._moves):
            self._set_row(self.flat, self.bflat if self.bstep is not None else None, c)
        if self.folder:
            self.folder.fold(self.flat[None], self.bflat[None], self.folder.weights, self.folder.biases)

    def _on_device(self, coords: np.ndarray | torch.Tensor) -> torch.Tensor:
        """fp32 coordinates on the device: the ops read them there, so a CUDA graph can replay them."""
        if isinstance(coords, torch.Tensor):
            return coords
        return torch.as_tensor(np.asarray(coords, dtype=np.float32)).to(self.device)

    def _set_row(self, params: torch.Tensor, buffers: torch.Tensor | None, c: torch.Tensor) -> None:
        """theta0 + c0 d1 (+ c1 d2) into `params` (N,) or (P, N), from device coordinates (D,) or (P, D)."""
        torch.addcmul(self.theta0, self.d[0], c[..., 0:1], out=params)
        if len(self.d) > 1:
            params.addcmul_(self.d[1], c[..., 1:2])
        if buffers is not None:
            torch.addcmul(self.bbase, self.bstep, c[..., 0:1], out=buffers)

    def _apply(self, coords: np.ndarray | torch.Tensor, mode: str, points: int = 1) -> None:
        """Loop: move the model to coords[0]. vmap: fill the (P, N) weights of up to P points (padded)."""
        coords = self._on_device(coords)
        if mode == "loop":
            self.set_point(coords[0])
            return
        self._moves += 1
        st = self._vmap_buffers(points)
        if len(coords) < points:  # a short last chunk repeats its last point
            coords = torch.cat([coords, coords[-1:].expand(points - len(coords), -1)])
        self._set_row(st["W"], st["B"], coords)  # all P points in one op per direction
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
            st[key] = [cast, self._batched_views(cast), shared_vec, shared, -1]
        cast, batched, shared_vec, shared, at = st[key]
        if at != self._moves:  # cast once per chunk of points, not per batch
            for k, v in cast.items():
                if v is not None:
                    v.copy_(st[k])
            shared_vec.copy_(self.bflat)
            st[key][-1] = self._moves
        return batched, shared

    # ------------------------------------------------------------------ one batch

    def _make_step(self, mode: str, dtype: torch.dtype | None, points: int) -> Callable:
        net, loss, classify, cl = self.net, self.loss, self.classify, self.channels_last
        if self._lowp_for(mode, dtype) is not None:
            net = self.lowp.net  # weights cast once per point (`_step` recasts them after a move)
        devtype = self.device.type

        def forward(fn: Callable, *args: Any) -> torch.Tensor:
            if dtype is None:
                return fn(*args)
            with torch.autocast(devtype, dtype=dtype, cache_enabled=False):  # as CUDA graphs require
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

    def _lowp_for(self, mode: str, dtype: torch.dtype | None) -> LowPrecisionNet | None:
        """The low-precision net, where a step uses it: loop mode in the run's bf16/fp16."""
        return self.lowp if mode == "loop" and dtype is not None and dtype == self.dtype else None

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
                mode_ = self.options["compile_mode"]
                fn = torch.compile(fn, dynamic=False, mode=None if mode_ == "default" else mode_)
            self._compiled[("c" if compiled else "e") + key] = fn
        args = (x, y, split.scale, split.mean, split.std)
        if mode == "vmap":
            args += self._vmap_args(points, dtype)
        elif (lowp := self._lowp_for(mode, dtype)) is not None:
            lowp.refresh(self._moves)
        if not compiled:
            return fn(*args)
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - compiler failures of any kind: fall back to eager
            log.warning("torch.compile failed (%s): running eager from now on", first_line(err, 200))
            self.use_compile = False
            self.info["fallback"] = first_line(err, 200)
            return self._step(mode, x, y, split, eager=True, points=points, dtype=dtype)

    # ------------------------------------------------------------------ a batch of points

    def _chunks(self, n: int, mode: str, points: int) -> list[tuple[int, int]]:
        size = 1 if mode == "loop" else points
        return [(i, min(i + size, n)) for i in range(0, n, size)]

    def _stream_of(self, split: Split) -> "Stream":
        """One streamer per split and batch size: the host copy is pinned once, not per tile."""
        key = (id(split), self.batch_size)
        if key not in self._streams:
            self._streams[key] = Stream(split, self.device, self.batch_size)
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
        cdev = self._on_device(coords)  # one copy per call: a host copy per batch would sync each time

        if stream:  # data outermost: each streamed batch serves every point
            for si, split in enumerate(splits.values()):
                for xb, start, stop in self._stream_of(split):
                    for p0, p1 in chunks:
                        self._apply(cdev[p0:p1], mode, points)
                        r = self._step(mode, xb, split.y[start:stop], split, eager=eager, points=width, dtype=dtype)
                        sums[p0:p0 + width, si] += r.double()
            return sums[:n]
        graph = None
        if mode == "loop" and self.use_graph and not eager and not limit and dtype == "run":
            graph = self._graph_for(splits)
        for p0, p1 in chunks:
            if graph is not None:
                graph(cdev[p0], sums[p0])
            else:
                self._chunk_pass(cdev[p0:p1], sums[p0:p0 + width], splits, mode, points, eager=eager, dtype=dtype)
        return sums[:n]

    def _chunk_pass(self, c: torch.Tensor, out: torch.Tensor, splits: Mapping[str, Split], mode: str, points: int,
                    *, eager: bool = False, dtype: Any = "run") -> None:
        """Move to the chunk's points `c` (P, D), add every batch's sums of every split to `out` (P, S, 2)."""
        self._apply(c, mode, points)
        for si, split in enumerate(splits.values()):
            for xb, start, stop in self._batches(split, self.batch_size):
                r = self._step(mode, xb, split.y[start:stop], split, eager=eager, points=out.shape[0], dtype=dtype)
                out[:, si] += r.double()

    def _point_pass(self, c: torch.Tensor, out: torch.Tensor, splits: Mapping[str, Split]) -> None:
        """Loop mode, one point `c` (D,) into `out` (S, 2): the pass a CUDA graph captures."""
        self._chunk_pass(c[None], out[None], splits, "loop", 1)

    def _graph_for(self, splits: Mapping[str, Split]) -> PointGraph | None:
        """The captured pass over these splits (made once, checked by PointGraph); None where capture fails."""
        key = (tuple(id(s) for s in splits.values()), self.batch_size)
        if key in self._graphs:
            return self._graphs[key]
        graph = None
        try:
            graph = PointGraph(lambda c, out: self._point_pass(c, out, splits), len(self.d), len(splits),
                               self.device)
            self.info["graph_check"] = graph.check
        except Exception as err:  # noqa: BLE001 - capture is best-effort: the plain pass is always correct
            log.warning("CUDA graph disabled: %s", first_line(err, 200))
            self.info["graph_fallback"] = first_line(err, 200)
            self.use_graph, graph = False, None
        self._graphs[key] = graph
        return graph

    def evaluate(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Per point `{split}_loss` (mean over the split) and `{split}_acc` (percent, classification)."""
        coords = np.atleast_2d(np.asarray(coords, dtype=np.float64))
        info: dict[str, Any] = {}
        with torch.inference_mode(), backend_flags(self.precision):
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
