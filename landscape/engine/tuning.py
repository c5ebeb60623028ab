"""How a worker chooses its runner once: mode, points per batch, batch size, compile, CUDA graph.

`tune` returns a frozen `Choice`, cached in `RUN_DIR/cache/engine-<device>-<key>.json` with
first-writer-wins, so every worker of one device kind takes the same path and fp32 values do not
depend on the worker.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..data import Split
from ..errors import first_line
from ..hardware import device_name, sync
from .metrics import Reduce
from .options import EngineOptions
from .runner import Choice, Parts, Runner

log = logging.getLogger(__name__)

CPU_BATCH = 1024           # CPU default: whole split up to this many samples per forward
VMAP_CANDIDATES = (4, 16, 64)
VMAP_MIN_GAIN = 1.2        # auto picks vmap only when it is at least this much faster per point
# CUDA: timed against the largest batch that fits. 1024: a ResNet-56 stage-1 activation (33 MB in bf16) fits the
# 50 MB L2 of an H100 there; below 512 a pass has ~100+ batches of ~120 kernels each, even in a graph.
BATCH_CANDIDATES = (512, 1024, 2048, 8192)
PROBE_SAMPLES = 8192       # CUDA: each candidate is timed on at least this many samples


def tune(parts: Parts, options: EngineOptions, reduce: Reduce, has_conv: bool,
         cache: ChoiceCache | None) -> tuple[Choice, dict[str, Any]]:
    """The runner's choice (cached, else measured where `options` leave it open) and how it was decided."""
    cached = cache.read() if cache else None
    tuner = Tuner(parts, options, reduce)
    mode, points = tuner.mode(cached, has_conv)
    batch = options.batch_size or (cached or {}).get("batch_size") or tuner.batch_size(mode, points)
    choice = Choice(mode, points, int(batch))
    choice = replace(choice, compile=tuner.compile(choice, cached))
    choice = tuner.cuda(choice, cached)
    if cache:
        choice = cache.agree(choice, tuner.info, options.batch_size)
    return choice, tuner.info


def cache_key(options: EngineOptions, precision: str, splits: Mapping[str, Split], model: nn.Module) -> dict:
    """What a cached choice depends on: the settings, the split sizes, the model's shapes, torch."""
    settings = {k: v for k, v in asdict(options).items() if k != "precision_check"} | {"precision": precision}
    return {**settings, "splits": [len(s) for s in splits.values()],
            "model": [type(model).__name__, [tuple(p.shape) for p in model.parameters()]], "torch": torch.__version__}


class ChoiceCache:
    """One file per device kind and key; the first worker to write it decides for all."""

    def __init__(self, directory: str | Path, key: Mapping[str, Any], device: torch.device):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        self.device = device
        self.path = Path(directory) / f"engine-{device_name(device)}-{digest}.json"

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text()) if self.path.is_file() else None
        except (OSError, ValueError):
            return None

    def agree(self, choice: Choice, info: Mapping[str, Any], fixed_batch: int | None) -> Choice:
        """Write `choice` unless a file is there (link is atomic and fails if it exists); the file's choice."""
        record = {**_record(choice), "device": device_name(self.device), "decision": info.get("mode_decision"),
                  "batch_decision": info.get("batch_decision"), "written": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record, indent=1))
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            theirs = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            log.warning("cannot write the engine cache %s: %s", self.path, err)
            return choice
        return Choice(theirs["mode"], int(theirs["points_per_batch"]), int(fixed_batch or theirs["batch_size"]),
                      bool(theirs["compile"]), bool(theirs.get("cuda_graph")))


def _record(choice: Choice) -> dict[str, Any]:
    return {"mode": choice.mode, "points_per_batch": choice.points_per_batch, "batch_size": choice.batch_size,
            "compile": choice.compile, "cuda_graph": choice.cuda_graph}


def seconds(fn: Callable[[], Any], reps: int, device: torch.device) -> float:
    """Seconds per call of `fn` on `device`, after one warm-up call."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def fit_batch_size(probe: Callable[[int], Callable[[], Any]], largest: int, device: torch.device,
                   info: dict[str, Any]) -> int:
    """CUDA: the largest batch whose step (`probe(n)`) fits in 70% of free memory: two probes, a linear
    fit, a check."""
    def peak(n: int) -> int:
        step = probe(n)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base

    torch.cuda.empty_cache()
    n1, n2 = min(largest, 64), min(largest, 256)
    p1, p2 = peak(n1), peak(n2)
    budget = 0.7 * torch.cuda.mem_get_info(device)[0]
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
    info["batch_probe"] = {"bytes_at": {n1: p1, n2: p2}, "budget": budget}
    return size


def memory_budget(device: torch.device) -> float:
    """Free bytes on `device` (CPU: available physical memory)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return 8e9


class Tuner:
    """The measurements behind a choice, each on runners of trial choices; `info` says what was measured."""

    def __init__(self, parts: Parts, options: EngineOptions, reduce: Reduce):
        self.parts, self.options, self.reduce = parts, options, reduce
        self.device = parts.device
        self.info: dict[str, Any] = {}
        self.largest = max(parts.splits.values(), key=len)

    def _probe(self, runner: Runner, n: int, *, fast: bool = False, moving: bool = False) -> Callable[[], Any]:
        """One step of `runner` at the origin on the first n samples of the largest split (`moving`: each
        call moves there first, as a pass does per point)."""
        split, how = self.largest, replace(runner.run_pass, fast=fast)
        x, y = split.x[:n].to(self.device), split.y[:n]
        origin = torch.zeros(how.points, self.parts.mover.weights.ndim, device=self.device)
        runner.move(origin, how.mode)
        if moving:
            return lambda: (runner.move(origin, how.mode), runner.step(how, self.reduce, x, y, split))
        return lambda: runner.step(how, self.reduce, x, y, split)

    def mode(self, cached: Mapping[str, Any] | None, has_conv: bool) -> tuple[str, int]:
        mode, ppb = self.options.mode, self.options.points_per_batch
        if mode == "loop":
            return "loop", 1
        if mode == "vmap":
            return "vmap", int(ppb or 16)
        if cached:
            return cached["mode"], int(cached["points_per_batch"])
        if has_conv:  # grouped convolutions under vmap: slower (BENCHMARKS.md), so no probe
            self.info["mode_decision"] = "convolutions: loop"
            return "loop", 1
        return self._measure_modes(ppb)

    def _measure_modes(self, ppb: int | None) -> tuple[str, int]:
        """Seconds per point on one batch: loop vs vmap at a few points per forward; keep the fastest."""
        n = CPU_BATCH if self.device.type == "cpu" else 4096
        decision = {"loop": seconds(self._probe(Runner(self.parts, Choice()), n, moving=True), 3, self.device)}
        budget = memory_budget(self.device) * 0.25
        w = self.parts.mover
        for p in ([int(ppb)] if ppb else VMAP_CANDIDATES):
            if p * w.weights.flat.numel() * 4 * (2 if w.folder else 1) > budget:
                continue
            try:
                step = self._probe(Runner(self.parts, Choice("vmap", p)), n, moving=True)
                decision[f"vmap{p}"] = seconds(step, 2, self.device) / p
            except (RuntimeError, NotImplementedError) as err:  # an op without a vmap rule, or out of memory
                log.info("vmap at %d points failed: %s", p, first_line(err))
                break
        best = min(decision, key=decision.get)
        self.info["mode_decision"] = {k: round(v, 6) for k, v in decision.items()}
        if best != "loop" and decision[best] * VMAP_MIN_GAIN <= decision["loop"]:
            return "vmap", int(best[4:])
        return "loop", 1

    def batch_size(self, mode: str, points: int) -> int:
        largest = len(self.largest)
        if self.device.type == "cpu":
            return min(largest, CPU_BATCH)
        runner = Runner(self.parts, Choice(mode, points))
        return fit_batch_size(lambda n: self._probe(runner, n), largest, self.device, self.info)

    def compile(self, choice: Choice, cached: Mapping[str, Any] | None) -> bool:
        """auto: on CUDA only, kept only where the compiled step beats eager on one full batch."""
        option = self.options.compile
        if option == "false" or (option == "auto" and self.device.type != "cuda"):
            return False
        if option == "auto" and cached:
            return bool(cached["compile"])
        if not hasattr(torch, "compile"):
            log.warning("torch.compile is unavailable in torch %s: running eager", torch.__version__)
            return False
        return option == "true" or self._compiled_is_faster(Runner(self.parts, replace(choice, compile=True)))

    def _compiled_is_faster(self, runner: Runner) -> bool:
        compiled = self._probe(runner, runner.choice.batch_size, fast=True)
        eager = self._probe(runner, runner.choice.batch_size)
        t0 = time.perf_counter()
        try:
            compiled()
        except Exception as err:  # noqa: BLE001 - any compiler failure means: run eager
            log.warning("torch.compile failed (%s): running eager", first_line(err, 200))
            return False
        if self.parts.steps.compile_failed:
            return False
        warm = time.perf_counter() - t0
        times: dict[bool, list[float]] = {}
        for fast, step in ((True, compiled), (False, eager), (True, compiled), (False, eager)):
            sync(self.device)
            t = time.perf_counter()
            step()
            sync(self.device)
            times.setdefault(fast, []).append(time.perf_counter() - t)
        compiled_s, eager_s = min(times[True]), min(times[False])
        self.info["compile_decision"] = {"warmup_s": round(warm, 2), "compiled_s": compiled_s, "eager_s": eager_s}
        return compiled_s < eager_s

    def cuda(self, choice: Choice, cached: Mapping[str, Any] | None) -> Choice:
        """CUDA, loop mode, device-resident data: batch size and CUDA graph, by time per sample.

        The largest batch that fits is not the fastest for small convnets: at ~1000 CIFAR images an
        activation stays in the 50 MB L2 cache, but then launches dominate unless the pass is one
        CUDA graph. So each candidate batch is timed on full batches of the largest split, with
        and without a graph (`eval.cuda_graph`), and the fastest pair is kept (cached per run).
        """
        graph_option = self.options.cuda_graph
        if self.device.type != "cuda" or choice.mode != "loop" or self.parts.stream:
            if graph_option == "true":
                log.warning("eval.cuda_graph=true applies to CUDA, loop mode and device-resident data only: off")
            return choice
        if cached and "cuda_graph" in cached:
            return replace(choice, cuda_graph=bool(cached["cuda_graph"]))
        return self.time_candidates(choice, graph_option)

    def time_candidates(self, choice: Choice, graph_option: str) -> Choice:
        """Time each candidate batch (launched, and as a graph unless `false`); keep the fastest per sample.
        `choice.batch_size`: the largest batch that fits."""
        fixed = self.options.batch_size
        batches = [fixed] if fixed else sorted({b for b in BATCH_CANDIDATES if b < choice.batch_size}
                                               | {choice.batch_size})
        graphs = {"true": [True], "false": [False], "auto": [False, True]}[graph_option]
        if len(batches) == 1 and len(graphs) == 1:  # nothing to choose: no timing
            return replace(choice, batch_size=batches[0], cuda_graph=graphs[0])
        times: dict[str, float] = {}
        for batch in batches:
            n = min(len(self.largest), -(-PROBE_SAMPLES // batch) * batch)
            probe = {"probe": replace(self.largest, x=self.largest.x[:n], y=self.largest.y[:n])}
            runner = Runner(self.parts, replace(choice, batch_size=batch))
            for graph in graphs:
                try:
                    times[f"{batch}{'g' if graph else ''}"] = self._time_pass(runner, probe, graph) / n
                except Exception as err:  # noqa: BLE001 - out of memory, a failed capture: not a candidate
                    log.info("batch %d%s not timed: %s", batch, " with a graph" if graph else "", first_line(err, 200))
                    torch.cuda.empty_cache()
        if not times and graphs == [True]:
            log.warning("eval.cuda_graph=true: no pass could be captured on %s; running without graphs",
                        device_name(self.device))
            return self.time_candidates(choice, "false")
        if not times:
            raise RuntimeError(f"no batch size could be timed on {device_name(self.device)}")
        best = min(times, key=times.get)
        self.info["batch_decision"] = {k: round(v * 1e6, 3) for k, v in times.items()}  # microseconds per sample
        return replace(choice, batch_size=int(best.rstrip("g")), cuda_graph=best.endswith("g"))

    def _time_pass(self, runner: Runner, probe: Mapping[str, Split], graph: bool, reps: int = 3) -> float:
        """Seconds for one point's pass over `probe` (after a warm-up pass: compiles, cudnn autotuning)."""
        c = torch.zeros(self.parts.mover.weights.ndim, device=self.device)
        out = torch.zeros(len(probe), runner.width(self.reduce, self.largest), dtype=torch.float64,
                          device=self.device)
        if graph:
            g = runner.capture(probe, self.reduce)
            run = lambda: g(c, out)  # noqa: E731
        else:
            run = lambda: runner.point_pass(c, out, probe, self.reduce)  # noqa: E731
        took = seconds(run, reps, self.device)
        run = g = None  # free the graph and its memory pool before the next candidate
        torch.cuda.empty_cache()
        return took
