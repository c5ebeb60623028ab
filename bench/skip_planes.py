"""Skip vs no skip, as numbers over random planes: `python -m bench.skip_planes --out /tmp/skip`.

Trains ResNet-20 with and without its skip connections (Li et al.'s "noskip") on the built-in digits upsampled
to 32x32 (the first `--samples`, a tensors file written here; sized for a shared 2-core CPU), computes `--planes` random filter-normalised planes around each
trained network, and prints the landscape figures side by side, mean +- std over the planes (the table
`landscape-stats` prints). Everything goes through the real commands; rerunning resumes and reuses what exists.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from launch import stats, surface, train


def digits32(path: Path, samples: int) -> Path:
    """The first `samples` digits as float32 (N, 1, 32, 32) images, bilinear from 8x8, standardised (a tensors
    file's x is fed as stored), with their labels; the loader keeps 80% for training."""
    if not path.is_file():
        from sklearn.datasets import load_digits

        raw = load_digits()
        images = torch.from_numpy(raw.images[:samples].astype(np.float32))[:, None]
        x = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=((x - x.mean()) / x.std()).numpy(), y=raw.target[:samples].astype(np.int64))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/skip-planes", help="folder for the data, trainings and surfaces")
    parser.add_argument("--planes", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=720, help="digits used (80%% train, 20%% test)")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--subset", type=int, default=128, help="training samples each point is evaluated on")
    parser.add_argument("--range", type=float, default=1.0, help="the grid spans [-R, R]^2 (grid units)")
    parser.add_argument("--radii", help="grid units; default R/3, 2R/3, R rounded up (7 points are R/3 apart)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out).absolute()
    r = args.range
    radii = args.radii or f"[{','.join(f'{np.ceil(100 * r * k / 3) / 100:g}' for k in (1, 2, 3))}]"
    tensors = ["data=tensors", f"data.path={digits32(out / f'digits32-{args.samples}.npz', args.samples)}"]
    runs = []
    for skip in ("true", "false"):
        name = "skip" if skip == "true" else "noskip"
        model = ["model=resnet20", f"model.skip={skip}", *tensors]
        rc = train.main([*model, f"train.epochs={args.epochs}", f"train.lr={args.lr}",
                         f"train.batch_size={args.batch}", f"run.dir={out / f'train-{name}'}"])
        rc = rc or surface.main([*model, f"checkpoint={out / f'train-{name}' / 'checkpoints' / 'last.pt'}",
                                 f"directions.planes={args.planes}", f"grid.resolution={args.resolution}",
                                 f"grid.range={r}", f"data.subset={args.subset}", f"figures.radii={radii}",
                                 f"launcher.workers={args.workers}", f"run.dir={out / f'{name}-range{r:g}'}"])
        if rc:
            return rc
        runs.append(str(out / f"{name}-range{r:g}"))
    print(f"\nResNet-20 on {args.samples} digits 32x32, {args.epochs} epochs; train loss on {args.subset} samples "
          f"per point, {args.planes} planes, grid {args.resolution}x{args.resolution} on [-{r:g}, {r:g}]^2:")
    return stats.main([*runs, *(["--json"] if args.json else [])])


if __name__ == "__main__":
    sys.exit(main())
