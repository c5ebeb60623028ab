"""The curvature row of `make bench` (also `python -m bench.curvature`): seconds per point for lambda_max and
lambda_min (metrics=[loss, hessian], default tolerance and cap), Hessian-vector products per point, and the
ratio of a point's curvature time to its loss-and-accuracy time on the same samples, on CPU.

Models: the digits CNN on the built-in train split and ResNet-20 on 128 synthetic CIFAR-shaped images (a
whole CIFAR split would take minutes per point here); both at their centre and one point off it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from landscape import data
from landscape.engine import Evaluator
from landscape.engine.curvature import Hessian, HessianOptions
from landscape.models import digits_cnn, resnet20

from .common import calibrated_plane, table

CPU = torch.device("cpu")
OPTIONS = HessianOptions.parse(yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "surface.yaml")
                                               .read_text())["hessian"])  # the defaults, from their one home
COORDS = np.array([[0.0, 0.0], [0.5, 0.25]])


def curvature_case(name: str, make, split: data.Split, log, device: torch.device = CPU,
                   options: HessianOptions = OPTIONS, engine: dict | None = None) -> dict:
    """Loss-only and loss+Hessian evaluators on the same split and points; seconds from their own clocks.
    `engine`: Evaluator keywords for both (the GPU benchmark fixes batch, compile and graph: no tuning)."""
    state, names, dirs = calibrated_plane(make, split, device)
    engine = {"device": device, **(engine or {})}
    loss_ev = Evaluator(make(), state, dirs, {"train": split}, 10, **engine)
    loss_ev.evaluate(COORDS[:1])
    t0 = time.perf_counter()
    loss_ev.evaluate(COORDS)
    loss_s = (time.perf_counter() - t0) / len(COORDS)
    ev = Evaluator(make(), state, dirs, {"train": split}, 10,
                   metrics=[Hessian(options, "cross_entropy", True, names, 0)], **engine)
    out = ev.evaluate(COORDS)
    meta = ev.meta()
    curv_s = meta["hessian_seconds"] / len(COORDS)
    row = {"model": name, "samples": len(split), "params": sum(state[n].numel() for n in names),
           "hvps": meta["hessian_hvps"] / len(COORDS), "point_s": curv_s, "hvp_s": curv_s * len(COORDS)
           / meta["hessian_hvps"], "loss_s": loss_s, "ratio": curv_s / loss_s, "setup_s": ev.info["setup_seconds"],
           "max_eig": out["max_eig"].tolist(), "min_eig": out["min_eig"].tolist()}
    log(f"  {name}: {row['hvps']:.0f} HVPs per point, {curv_s:.2f} s per point, {row['ratio']:.0f}x a loss point")
    return row


def curvature_projection(row: dict, hessian_samples: int, loss_samples: int, points: int = 51 * 51,
                         workers: int = 32) -> dict:
    """PROJECTED time of a curvature map from one `curvature_case` row: per point, the curvature over
    `hessian_samples` and the loss over `loss_samples`, each scaled per sample from the row's (HVPs per point
    as measured); one worker's setup as measured, then its share of the points, on 1 worker and on `workers`."""
    point = (row["point_s"] * hessian_samples + row["loss_s"] * loss_samples) / row["samples"]
    hours = lambda n: (row["setup_s"] + -(-points // n) * point) / 3600  # noqa: E731
    return {"hessian_samples": hessian_samples, "loss_samples": loss_samples, "points": points,
            "per_point_s": point, "one_h": hours(1), "workers": workers, "array_h": hours(workers)}


def curvature_rows(log) -> list[dict]:
    cifar = data.subset(data.synthetic((3, 32, 32), n_train=512, n_test=1, num_classes=10, seed=0).train, 128, 0)
    return [curvature_case("digits_cnn", digits_cnn, data.digits().train, log),
            curvature_case("resnet20", resnet20, cifar, log)]


def curvature_table(rows: list[dict]) -> str:
    return table(rows, [("model", "model", "s"), ("samples", "samples", "d"), ("params", "params", "d"),
                        ("hvps", "HVPs/point", ".1f"), ("hvp_s", "s/HVP", ".3f"), ("point_s", "s/point", ".2f"),
                        ("loss_s", "loss s/point", ".4f"), ("ratio", "curvature/loss", ".0f")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    torch.set_num_threads(parser.parse_args(argv).threads)
    print(curvature_table(curvature_rows(lambda s: print(s, flush=True))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
