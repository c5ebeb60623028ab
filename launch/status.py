"""`landscape-status RUN_DIR`: tiles done / running / missing, points per second, time left."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobs.run import RunDir
from .cli import user_errors


def _fmt_seconds(s: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(s)) if s < 86400 else f"{s / 86400:.1f} days"


def summary(run: RunDir) -> str:
    """A few lines a researcher can read at a glance."""
    cfg = run.config  # first: a clear error when this is no run directory
    tiles, reasons, metas = run.tiles, {}, []
    for tile in tiles:
        values, why = run.read_tile(tile)
        if values is None:
            reasons[tile.id] = why
        else:
            metas.append(values["_meta"])
    running = {p.name.split(".")[1] for p in (run.path / "tiles").glob(".*.tmp")} if (run.path / "tiles").is_dir() else set()
    done_points = sum(int(m["points"]) for m in metas)
    total_points = sum(t.npoints for t in tiles)
    lines = [f"run {run.path}  ({cfg['model'].get('name')} on {cfg['data']['name']}, "
             f"{cfg['directions']['kind']} directions, grid {'x'.join(map(str, run.grid.shape[::-1]))})",
             f"tiles: {len(metas)} done, {len(running)} running, {len(reasons) - len(running)} missing, "
             f"{len(tiles)} total  ({done_points}/{total_points} points)"]
    broken = {tid: why for tid, why in reasons.items() if why != "missing"}
    for tid, why in list(broken.items())[:10]:
        lines.append(f"  tile {tid}: {why} (will be recomputed)")
    if metas:
        per_worker = done_points / max(sum(float(m["seconds"]) for m in metas), 1e-9)
        start = min(float(m["finished"]) - float(m["seconds"]) for m in metas)
        wall = max(float(m["finished"]) for m in metas) - start
        overall = done_points / wall if wall > 0 else per_worker
        left = total_points - done_points
        lines.append(f"speed: {per_worker:.2f} points/s per worker, {overall:.2f} points/s overall")
        if left:
            lines.append(f"time left: about {_fmt_seconds(left / overall)} at the overall rate")
    if run.surface_file.is_file():
        lines.append(f"surface: {run.surface_file}")
    return "\n".join(lines)


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="landscape-status", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    print(summary(RunDir(parser.parse_args(argv).run_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
