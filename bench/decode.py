"""`python -m bench.decode`: how fast `data=imagefolder` decodes a folder into its uint8 cache, and what the
cache saves on the next run.

A folder of N JPEGs of ImageNet's typical size (500x375, smooth content plus noise, quality 90; two classes) is
made in a temporary folder, unless `--folder` names one. With the `imagenet` transform (short side 256,
centre 224):
  1. one decode process: images/s, i.e. per core;
  2. all processes (`--workers`, default every core): images/s in total and per process;
  3. the next run: `data.load` finding the cache and memory-mapping it, then every row read once (the page
     cache is warm here, as on a node that just built it), against the decode it replaces.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from landscape import data


def make_folder(root: Path, n: int, size: tuple[int, int] = (500, 375)) -> Path:
    """N JPEGs in two class folders: low-frequency colour fields plus noise (noise alone decodes slower than
    photographs, flat colour faster)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def spec(folder: Path, cache: Path, workers: int) -> dict:
    return {"name": "imagefolder", "root": str(folder), "split": "train", "transform": "imagenet",
            "cache_dir": str(cache), "workers": workers}


def decode_seconds(folder: Path, cache: Path, workers: int) -> float:
    """Wall seconds of decoding `folder` into a new cache at `cache` with `workers` processes."""
    t0 = time.perf_counter()
    data.ready(spec(folder, cache, workers))
    return time.perf_counter() - t0


def decode_rate(images: int, workers: int) -> dict:
    """Images per second decoding `images` generated JPEGs with `workers` processes (the GPU benchmark's
    decode term: the cores of the node it runs on)."""
    with tempfile.TemporaryDirectory(prefix="landscape-bench-decode-") as tmp:
        folder = make_folder(Path(tmp) / "images", images)
        seconds = decode_seconds(folder, Path(tmp) / "cache", workers)
    return {"images": images, "workers": workers, "seconds": seconds, "images_per_s": images / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="images to generate (default 512)")
    parser.add_argument("--folder", type=Path, help="an image folder to decode instead of generated images")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="landscape-bench-decode-") as tmp:
        tmp = Path(tmp)
        folder = args.folder or make_folder(tmp / "images", args.images)
        times = {}
        for workers in (1, args.workers):
            times[workers] = decode_seconds(folder, tmp / f"cache{workers}", workers)
        t0 = time.perf_counter()
        split = data.load(spec(folder, tmp / f"cache{args.workers}", args.workers)).train
        mapped = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(split), 256):
            split.x[i:i + 256].clone()
        read = time.perf_counter() - t0
    n = len(split)
    print(f"decode into the cache ({n} images -> {'x'.join(map(str, split.x.shape[1:]))} uint8, "
          f"{split.x[0].numel()} bytes per image, imagenet transform):")
    print(f"  1 process:  {n / times[1]:7.1f} images/s (per core)")
    print(f"  {args.workers} processes: {n / times[args.workers]:7.1f} images/s, "
          f"{n / times[args.workers] / args.workers:.1f} per process")
    print(f"next run, cache found: {mapped:.3f} s to map it, {read:.3f} s to read every row "
          f"({n / (mapped + read):.0f} images/s, {times[args.workers] / (mapped + read):.0f}x faster than "
          f"decoding with {args.workers} processes)")


if __name__ == "__main__":
    main()
