"""How an Evaluator picks its settings once per worker: mode, batch size, compile; cached per device.

Choices are written to `RUN_DIR/cache/engine-<device>-<key>.json` with first-writer-wins, so every
worker of one device kind takes the same path and fp32 values do not depend on the worker.
A mixin of `Evaluator` (it reads the engine's state): kept apart so the engine reads top to bottom.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .data import Split
from .graphs import PointGraph
from .errors import first_line
from .hardware import device_name, sync

log = logging.getLogger(__name__)

CPU_BATCH = 1024           # CPU default: whole split up to this many samples per forward
VMAP_CANDIDATES = (4, 16, 64)
VMAP_MIN_GAIN = 1.2        # auto picks vmap only when it is at least this much faster per point
# CUDA: timed against the largest batch that fits. 1024: a ResNet-56 stage-1 activation (33 MB in bf16) fits the
# 50 MB L2 of an H100 there; below 512 a pass has ~100+ batches of ~120 kernels each, even in a graph.
BATCH_CANDIDATES = (512, 1024, 2048, 8192)
PROBE_SAMPLES = 8192       # CUDA: each candidate is timed on at least this many samples


class EngineChoices:
    """Setup-time measurements and their cache; see the module docstring."""

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
        record = {**self._choices(), "device": device_name(self.device), "decision": self.info.get("mode_decision"),
                  "batch_decision": self.info.get("batch_decision"), "written": time.strftime("%Y-%m-%d %H:%M:%S")}
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
        theirs_choices = {k: theirs.get(k) for k in self._choices()} | {"cuda_graph": bool(theirs.get("cuda_graph"))}
        if theirs_choices != self._choices():
            self._apply_cached(theirs)  # another worker was first: use its choices

    def _choices(self) -> dict[str, Any]:
        """What the cache records and every worker of the run must share."""
        return {"mode": self.mode, "points_per_batch": self.points, "batch_size": self.batch_size,
                "compile": self.use_compile, "cuda_graph": self.use_graph}

    def _apply_cached(self, cached: Mapping[str, Any]) -> None:
        self.mode, self.points = cached["mode"], int(cached["points_per_batch"])
        self.batch_size = int(self.options["batch_size"] or cached["batch_size"])
        self.use_compile = bool(cached["compile"])
        self.use_graph = bool(cached.get("cuda_graph"))
        self._graphs.clear()
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

    def _largest_split(self) -> Split:
        return max(self.splits.values(), key=len)

    def _probe_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, Split]:
        split = self._largest_split()
        n = min(n, len(split))
        x = split.x[:n].to(self.device)
        return x, split.y[:n], split

    def _measure_modes(self, ppb: int | None) -> None:
        """Seconds per point on one batch: loop vs vmap at a few points per forward; keep the fastest."""
        x, y, split = self._probe_batch(CPU_BATCH if self.device.type == "cpu" else 4096)
        coords = np.zeros((max(VMAP_CANDIDATES + ((ppb,) if ppb else ())), len(self.d)))

        def loop_once() -> None:
            self._apply(coords[:1], "loop")
            self._step("loop", x, y, split, eager=True)

        decision = {"loop": self._seconds(loop_once, 3)}
        budget = self._memory_budget() * 0.25
        for p in ([int(ppb)] if ppb else VMAP_CANDIDATES):
            if p * self.flat.numel() * 4 * (2 if self.folder else 1) > budget:
                continue

            def vmap_once(p=p) -> None:
                self._apply(coords[:p], "vmap", p)
                self._step("vmap", x, y, split, eager=True, points=p)

            try:
                decision[f"vmap{p}"] = self._seconds(vmap_once, 2) / p
            except (RuntimeError, NotImplementedError) as err:  # an op without a vmap rule, or out of memory
                log.info("vmap at %d points failed: %s", p, first_line(err))
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
        split = self._largest_split()
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
        split = self._largest_split()
        x, y = split.x[:self.batch_size].to(self.device), split.y[:self.batch_size]
        coords = np.zeros((self.points, len(self.d)))
        self._apply(coords, self.mode, self.points)
        self.use_compile = True
        t0 = time.perf_counter()
        try:
            self._step(self.mode, x, y, split, points=self.points)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: run eager
            log.warning("torch.compile failed (%s): running eager", first_line(err, 200))
            self._compiled.clear()
            return False
        if "fallback" in self.info:
            return False
        warm = time.perf_counter() - t0
        times = {}
        for eager in (False, True, False, True):
            sync(self.device)
            t = time.perf_counter()
            self._step(self.mode, x, y, split, eager=eager, points=self.points)
            sync(self.device)
            times.setdefault(eager, []).append(time.perf_counter() - t)
        compiled_s, eager_s = min(times[False]), min(times[True])
        self.info["compile_decision"] = {"warmup_s": round(warm, 2), "compiled_s": compiled_s, "eager_s": eager_s}
        return compiled_s < eager_s

    def _tune_cuda(self, graph_option: str, cached: Mapping[str, Any] | None) -> None:
        """CUDA, loop mode, device-resident data: batch size and CUDA graph, by time per sample.

        The largest batch that fits is not the fastest for small convnets: at ~1000 CIFAR images an
        activation stays in the 50 MB L2 cache, but then launches dominate unless the pass is one
        CUDA graph. So each candidate batch is timed on full batches of the largest split, with
        and without a graph (`eval.cuda_graph`), and the fastest pair is kept (cached per run).
        """
        if graph_option == "true" and (self.device.type != "cuda" or self.mode != "loop" or self.stream):
            log.warning("eval.cuda_graph=true applies to CUDA, loop mode and device-resident data only: off")
        if self.device.type != "cuda" or self.mode != "loop" or self.stream:
            return
        if cached and "cuda_graph" in cached:
            self.use_graph = bool(cached["cuda_graph"])
            return
        self._time_candidates(graph_option)

    def _time_candidates(self, graph_option: str) -> None:
        """Time each candidate batch (launched, and as a graph unless `false`); keep the fastest per sample."""
        fixed = self.options["batch_size"]
        largest = self.batch_size
        batches = [int(fixed)] if fixed else sorted({b for b in BATCH_CANDIDATES if b < largest} | {largest})
        graphs = {"true": [True], "false": [False], "auto": [False, True]}[graph_option]
        if len(batches) == 1 and len(graphs) == 1:  # nothing to choose: no timing
            self.batch_size, self.use_graph = batches[0], graphs[0]
            return
        split = self._largest_split()
        times: dict[str, float] = {}
        for batch in batches:
            n = min(len(split), -(-PROBE_SAMPLES // batch) * batch)
            probe = {"probe": replace(split, x=split.x[:n], y=split.y[:n])}
            self.batch_size = batch
            for graph in graphs:
                try:
                    times[f"{batch}{'g' if graph else ''}"] = self._time_pass(probe, graph) / n
                except Exception as err:  # noqa: BLE001 - out of memory, a failed capture: not a candidate
                    log.info("batch %d%s not timed: %s", batch, " with a graph" if graph else "",
                             first_line(err, 200))
                    torch.cuda.empty_cache()
        if not times and graphs == [True]:
            log.warning("eval.cuda_graph=true: no pass could be captured on %s; running without graphs",
                        device_name(self.device))
            return self._time_candidates("false")
        if not times:
            raise RuntimeError(f"no batch size could be timed on {device_name(self.device)}")
        best = min(times, key=times.get)
        self.batch_size, self.use_graph = int(best.rstrip("g")), best.endswith("g")
        self.info["batch_decision"] = {k: round(v * 1e6, 3) for k, v in times.items()}  # microseconds per sample

    def _time_pass(self, probe: Mapping[str, Split], graph: bool, reps: int = 3) -> float:
        """Seconds for one point's pass over `probe` (after a warm-up pass: compiles, cudnn autotuning)."""
        c = torch.zeros(len(self.d), device=self.device)
        out = torch.zeros(len(probe), 2, dtype=torch.float64, device=self.device)
        g = None
        if graph:
            g = PointGraph(lambda c_, o: self._point_pass(c_, o, probe), len(self.d), len(probe), self.device)
            run = lambda: g(c, out)  # noqa: E731
        else:
            run = lambda: self._point_pass(c, out, probe)  # noqa: E731
        seconds = self._seconds(run, reps)
        run = g = None  # free the graph and its memory pool before the next candidate
        torch.cuda.empty_cache()
        return seconds

    def _seconds(self, fn: Callable[[], Any], reps: int) -> float:
        """Seconds per call of `fn` on this device, after one warm-up call."""
        fn()
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(self.device)
        return (time.perf_counter() - t0) / reps
