"""Skip vs no skip, as numbers over random planes: `python -m bench.skip_planes --out /tmp/skip`.

Trains ResNet-20 with and without its skip connections (Li et al.'s "noskip") on the built-in digits upsampled
to 32x32 (a tensors file written here), computes `--planes` random filter-normalised planes around each
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


def digits32(path: Path) -> Path:
    """The digits as uint8 (N, 1, 32, 32) images (bilinear from 8x8, 0..16 scaled to 0..255) with labels."""
    if not path.is_file():
        from sklearn.datasets import load_digits

        raw = load_digits()
        x = torch.from_numpy(raw.images.astype(np.float32))[:, None] * (255 / 16)
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=x.to(torch.uint8).numpy(), y=raw.target.astype(np.int64))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/skip-planes", help="folder for the data, trainings and surfaces")
    parser.add_argument("--planes", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=11)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--subset", type=int, default=512, help="training samples each point is evaluated on")
    parser.add_argument("--radii", default="[0.2,0.4,1.0]")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out).absolute()
    tensors = ["data=tensors", f"data.path={digits32(out / 'digits32.npz')}"]
    runs = []
    for skip in ("true", "false"):
        name = "skip" if skip == "true" else "noskip"
        model = ["model=resnet20", f"model.skip={skip}", *tensors]
        rc = train.main([*model, f"train.epochs={args.epochs}", f"run.dir={out / f'train-{name}'}"])
        rc = rc or surface.main([*model, f"checkpoint={out / f'train-{name}' / 'checkpoints' / 'last.pt'}",
                                 f"directions.planes={args.planes}", f"grid.resolution={args.resolution}",
                                 f"data.subset={args.subset}", f"figures.radii={args.radii}",
                                 f"launcher.workers={args.workers}", f"run.dir={out / name}"])
        if rc:
            return rc
        runs.append(str(out / name))
    print(f"\nResNet-20 on digits 32x32, {args.epochs} epochs; train loss on {args.subset} samples per point, "
          f"{args.planes} planes, grid {args.resolution}x{args.resolution} on [-1, 1]^2:")
    return stats.main([*runs, *(["--json"] if args.json else [])])


if __name__ == "__main__":
    sys.exit(main())
