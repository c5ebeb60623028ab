"""`make demo`: train the digits CNN, then three surfaces computed on this machine, plots included.

Each step is the real command a user would type; rerunning resumes: the finished training is reused
(`already trained`), so the surfaces find the same checkpoints and compute nothing.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from . import surface, train


def main(argv: list[str] | None = None) -> int:
    root = Path((sys.argv[1:] if argv is None else argv or ["runs/demo"])[0])
    ckpts = root / "train" / "checkpoints"
    common = ["model=digits_cnn", "data=digits", f"checkpoint={ckpts / 'last.pt'}", "launcher.workers=2"]
    steps = [
        ("train the digits CNN, one checkpoint per epoch", train.main,
         ["model=digits_cnn", "data=digits", "train.epochs=8", f"run.dir={root / 'train'}"]),
        ("2D surface, random filter-normalized directions", surface.main,
         common + ["directions=random", "grid.resolution=41", f"run.dir={root / 'random'}"]),
        ("2D surface in the PCA plane of the training trajectory", surface.main,
         common + ["directions=pca", f"directions.checkpoints={ckpts}", "grid.resolution=41",
                   f"run.dir={root / 'pca'}"]),
        ("1D line from the initial to the final weights", surface.main,
         common + ["directions=line", "data.split=both", f"directions.start={ckpts / 'epoch_000.pt'}", "grid.resolution=41",
                   f"run.dir={root / 'line'}"]),
    ]
    t0 = time.perf_counter()
    for title, command, args in steps:
        print(f"\n== {title}\n$ {command.__module__.replace('launch.', 'landscape-')} {' '.join(args)}", flush=True)
        if command(args) != 0:
            return 1
    print(f"\ndemo done in {time.perf_counter() - t0:.0f} s. Surfaces and plots:")
    for name in ("random", "pca", "line"):
        print(f"  {root / name / 'surface.h5'}   {root / name / 'plots'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
