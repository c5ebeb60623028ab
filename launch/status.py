"""`landscape-status RUN_DIR`: tiles done / running / missing, points per second, time left."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from jobs import inputs
from jobs.reduce import nonfinite_line
from jobs.run import RunDir
from jobs.settings import RunSettings
from landscape import surface
from landscape.engine import curvature
from landscape.errors import UserError

from . import lock, stats
from .backends import arrays
from .cli import user_errors
from .plots import MERGE, anything_done
from .progress import clock_text


def scheduler_view(view: dict[int, tuple[dict, str, str]]) -> dict[int, tuple[str, str]]:
    """For missing tiles of submitted arrays (`arrays.task_view`): (scheduler state, log excerpt) of their latest
    task."""
    return {tid: (state, arrays.log_tail(entry, index) if state not in arrays.ACTIVE else "")
            for tid, (entry, index, state) in view.items()}


def _engine(m: dict) -> str:
    """What the engine chose for one tile, as the tile recorded it."""
    mode = "vmap x{}".format(int(m["engine_points_per_batch"])) if m["engine_mode"] == "vmap" else "loop"
    parts = [str(m.get("engine_device_name", m.get("device", "?"))), mode,
             f"batch {int(m['engine_batch_size'])}", "compiled" if m.get("engine_compile") else "eager"]
    parts += [label for key, label in (("engine_cuda_graph", "CUDA graph"), ("engine_fold_bn", "BatchNorm folded"),
                                       ("engine_channels_last", "channels_last"), ("engine_stream", "streamed"))
              if m.get(key)]
    if m.get("engine_padded_linear"):
        parts.append(f"{int(m['engine_padded_linear'])} linear layers padded")
    return ", ".join(parts)


def _writing(run: RunDir, driven: bool, sched: dict[int, tuple[str, str]]) -> set[int]:
    """Tiles a live process is computing or writing: on this host by pid; elsewhere while a driver or the
    scheduler says the run goes on. A killed worker's leftover files do not count."""
    out = set()
    for p, live in lock.writers(run.path):
        name = p.target.split(".")[0]
        if not name.isdigit():
            continue
        tid = int(name)
        if live or (live is None and (driven or sched.get(tid, ("",))[0] in arrays.ACTIVE)):
            out.add(tid)
    return out


def _hessian_line(settings: RunSettings, metas: list[dict]) -> str:
    """What curvature costs (once tiles are done) and over how many samples of which split it is measured."""
    h = settings.hessian
    used = [n for n in (h.samples, settings.data.subset) if n]
    over = f"over {min(used)} samples of the {h.split} split" if used else f"over the whole {h.split} split"
    over += f" (hessian.samples={h.samples})" if h.samples else ""
    cost = curvature.cost_line(metas, h.hvps_per_point())
    return f"{cost}, {over}" if cost else f"hessian: curvature {over}"


def _busy_seconds(metas: list[dict]) -> float:
    """Seconds during which some tile was computed: the union of the tiles' (start, finish) spans, so that idle time
    between sessions of a resumed run does not count."""
    total, end = 0.0, float("-inf")
    for start, finish in sorted((float(m["finished"]) - float(m["seconds"]), float(m["finished"])) for m in metas):
        if finish > end:
            total += finish - max(start, end)
            end = finish
    return total


def _unmerged(run: RunDir, done: dict[int, dict]) -> int:
    """How many finished tiles were written after surface.h5 (all of them where there is none)."""
    merged = run.surface_file.stat().st_mtime if run.surface_file.is_file() else float("-inf")
    return sum(run.tile_file(run.tiles[tid]).stat().st_mtime > merged for tid in done)


def _unreadable(run: RunDir) -> str:
    """What is wrong with surface.h5 and how to rebuild it; '' where it reads (or is not there)."""
    if not run.surface_file.is_file():
        return ""
    try:
        anything_done(run)
    except UserError as err:
        return str(err)
    return ""


def summary(run: RunDir) -> str:
    """A few lines a researcher can read at a glance."""
    settings = run.settings  # first: a clear error when this is no run directory
    tiles = run.tiles
    states = {t.id: run.tile_state(t) for t in tiles}  # attributes only: status reads no values
    reasons = {tid: s.why for tid, s in states.items() if not s.done}
    done = {tid: s.meta for tid, s in states.items() if s.done}
    metas = list(done.values())
    driver = lock.current_driver(run.path)
    view = arrays.task_view(run, set(reasons))
    sched = scheduler_view(view)
    writing = _writing(run, driver is not None, sched)
    queued = {t for t, v in sched.items() if v[0] == "PENDING" and t not in writing}
    running = {t for t in reasons if t in writing or sched.get(t, ("",))[0] in arrays.ACTIVE} - queued
    failed = {t: v for t, v in sched.items()
              if t not in running | queued and v[0] not in ("COMPLETED", "UNKNOWN")}
    done_points = sum(int(m["points"]) for m in metas)
    total_points = sum(t.npoints for t in tiles)
    lines = [f"run {run.path}  ({settings.model.name} on {settings.data.name}, "
             f"{settings.directions.kind} directions, grid {'x'.join(map(str, run.grid.shape[::-1]))})",
             f"tiles: {len(metas)} done, {len(running)} running, {len(queued)} queued, {len(failed)} failed, "
             f"{len(reasons) - len(running) - len(queued) - len(failed)} missing, {len(tiles)} total  "
             f"({done_points}/{total_points} points)"]
    subset = settings.data.subset
    if subset and (not metas or any(m.get("subset_leaves_out") for m in metas)):
        lines.append(f"data: every value from a seeded subset of {subset} samples per split (data.subset={subset}): "
                     "approximate")
    for tid, (state, log) in list(failed.items())[:10]:
        lines.append(f"  tile {tid}: {arrays.meaning(state)}" + (f"  log: {log}" if log else ""))
    for tid, why in [(t, w) for t, w in reasons.items() if w != "missing"][:10]:
        lines.append(f"  tile {tid}: {why} (will be recomputed)")
    if nonfinite := nonfinite_line(run, done):
        lines.append(nonfinite)
    if metas:
        per_worker = done_points / max(sum(float(m["seconds"]) for m in metas), 1e-9)
        busy = _busy_seconds(metas)
        overall = done_points / busy if busy > 0 else per_worker
        left = total_points - done_points
        lines.append(f"speed: {per_worker:.2f} points/s per worker, {overall:.2f} points/s overall (while computing)")
        if left and (driver or running or queued):  # a stopped run has no time left to estimate
            lines.append(f"time left: about {clock_text(left / overall)} at the overall rate")
    stale = inputs.stale(run)
    if stale:  # a resume would be refused: say so here, not "to finish"
        lines.append(f"inputs changed: {inputs.refusal(run.path, stale)}")
    held = arrays.held_line(run, view)
    unmerged = _unmerged(run, done) if not driver and (not reasons or held) else 0
    if unmerged:  # a run that returned after submitting (launcher.wait=false) merges only when asked
        lines.append(f"merge: {run.surface_file} lacks {unmerged} finished {'tile' if unmerged == 1 else 'tiles'}: "
                     f"merge them with {MERGE.format(run=run.path)}")
    if driver:
        lines.append(f"driver: {driver.describe()}")
    elif held:  # the array computes them: computing them here too would compute them twice
        lines.append(f"array: {held}")
    elif reasons and not running and not stale:
        lines.append(f"to finish: landscape-surface run.dir={run.path}  (computes only the missing tiles)")
    checks = [float(m["precision_check"]) for m in metas if "precision_check" in m]
    checks = [c for c in checks if c == c] or checks  # NaN only where fp32 itself was not finite
    if checks:
        lines.append(f"precision check: {settings.precision} vs fp32, largest relative loss difference "
                     f"{max(checks):.2e} over {len(checks)} tiles")
    if settings.hessian:
        lines.append(_hessian_line(settings, metas))
    engines = Counter(_engine(m) for m in metas if "engine_mode" in m)
    if engines:
        lines.append("engine: " + "; ".join(f"{k} ({n} tiles)" if len(engines) > 1 else k for k, n in engines.items()))
    made_by = surface.provenance(metas)
    if len(made_by) > 1:
        lines.append("computed on: " + surface.tile_counts(made_by)
                     + " (values agree to rounding across these, not bitwise)")
    unreadable = _unreadable(run)
    if unreadable:
        lines.append(f"surface: {unreadable}")
    elif run.surface_file.is_file():
        lines.append(f"surface: {run.surface_file}")
        lines += stats.figure_lines(run.path)  # once every point is computed (landscape-stats compares runs)
    return "\n".join(lines)


@user_errors
def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise UserError(f"landscape-status takes one run directory (landscape-status RUN_DIR), got {len(argv)} "
                        "arguments")
    print(summary(RunDir(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
