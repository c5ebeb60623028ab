"""`launcher.dry_run=true`: what would be submitted, and what it would cost, from a calibration here."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from jobs.run import RunDir
from jobs.tile import build_worker
from landscape.engine import curvature
from landscape.errors import UserError
from landscape.hardware import check_device, pick_device

from .backends import Launcher
from .prepare import prepare

# CPU runs longer than this (CPU-worker seconds) get the hint to compile: eval.compile auto stays off on CPU, where
# it measured 1.15-1.23x after 12-15 s of compiling per worker (BENCHMARKS.md), a loss on short runs
COMPILE_HINT_SECONDS = 1800.0


def calibrate(run: RunDir, cache_dir: Path, points: int = 3) -> tuple[float, str, str]:
    """Seconds per point on this machine (after one warm-up point), the device used (the run's eval.device
    where this machine has it, else what auto picks: a login node without the nodes' GPUs), and with
    metrics=[loss, hessian] the curvature's cost ("" without)."""
    try:
        check_device(run.settings.device)
        device = None
    except UserError:
        device = pick_device("auto")
    evaluator = build_worker(run, device, cache_dir=cache_dir).evaluator
    coords = run.tiles[0].coords(run.grid)
    evaluator.evaluate(coords[:1])
    t0 = time.perf_counter()
    evaluator.evaluate(coords[:points])
    seconds = time.perf_counter() - t0
    h = run.settings.hessian
    cost = curvature.cost_line([evaluator.meta() | {"seconds": seconds}], h.hvps_per_point()) if h else ""
    return seconds / len(coords[:points]), str(evaluator.device), cost


def dry_run(cfg: dict[str, Any], overrides: list[str], launcher: Launcher) -> int:
    """`launcher.dry_run=true`: plan and calibrate without writing into run.dir; a new run is set up in a
    temporary folder, removed afterwards, so the next dry run may try other settings on the same run.dir."""
    with tempfile.TemporaryDirectory(prefix="landscape-dry-run-") as scratch:
        backend = launcher.backend
        run = prepare(cfg, overrides, workers_here=backend.workers_here, elsewhere=backend.elsewhere,
                      scratch=Path(scratch))
        print(describe(run, [t.id for t in run.missing()], launcher, Path(scratch) / "cache"))
    print("dry run: nothing written")
    return 0


def describe(run: RunDir, todo: list[int], launcher: Launcher, cache_dir: Path) -> str:
    """Tiles, arrays and chunks (where the backend submits arrays), time per tile and per task, total compute hours."""
    npoints = sum(run.tiles[i].npoints for i in todo)
    lines = [f"plan: {len(todo)} of {len(run.tiles)} tiles to compute, {npoints} points"]
    backend, per_task = launcher.backend, 1
    if backend.submits:
        plan = backend.plan(todo, launcher.settings)
        sizes, per_task = [len(tasks) for tasks in plan.arrays], plan.tiles_per_task
        lines.append(f"{backend.name}: {sum(sizes)} array tasks of {per_task} tile(s) in {len(sizes)} array(s) "
                     f"({', '.join(map(str, sizes)) or 'none'} tasks)"
                     + (f", at most {plan.parallelism} running" if plan.parallelism else ""))
    if todo:
        seconds, device, cost = calibrate(run, cache_dir)
        biggest = max(run.tiles[i].npoints for i in todo)
        lines.append(f"calibration on this machine ({device}): {seconds:.3f} s per point, "
                     f"{seconds * biggest:.1f} s per tile, {seconds * biggest * per_task / 60:.1f} min per task")
        if cost:
            lines.append(cost)
        lines.append(f"total: {seconds * npoints / 3600:.2f} {'GPU' if device.startswith('cuda') else 'CPU-worker'}"
                     f"-hours; ask for a task time above the per-task figure on the nodes' hardware")
        if device == "cpu" and run.settings.engine.compile == "auto" \
                and seconds * npoints > COMPILE_HINT_SECONDS:
            lines.append("hint: a run this long on CPUs may gain 1.15-1.23x with eval.compile=true "
                         "(measured here after 12-15 s of compiling per worker; BENCHMARKS.md)")
    return "\n".join(lines)
