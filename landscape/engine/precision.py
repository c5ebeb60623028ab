"""bf16/fp16 checked against fp32: the first points of each `evaluate` call over the first samples
(`eval.precision_check`), and any point that is not finite recomputed in fp32 (an overflow)."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from .metrics import Metric, measure
from .runner import Pass, Runner

log = logging.getLogger(__name__)

# The mean loss over the first samples of a split. 1024, not 4096: fp32 GEMMs run at ~1/15 of bf16's
# rate, so on the 3x9000 MLP 4096 fp32 samples cost ~2% of a 64-point tile (estimated).
CHECK_SAMPLES = 1024


def compare(runner: Runner, metric: Metric, coords: np.ndarray) -> torch.Tensor:
    """(2, points, splits) device losses of `coords` in the run's precision and in fp32, eager, in the
    run's mode, over the first CHECK_SAMPLES samples of each split."""
    how = replace(runner.run_pass, fast=False, limit=CHECK_SAMPLES, stream=False)
    run = metric.measure(runner.forward(coords, how))
    ref = metric.measure(runner.forward(coords, replace(how, dtype=None)))
    keys = [k for k in run if k.endswith("_loss")]
    return torch.stack([torch.stack([run[k] for k in keys], 1), torch.stack([ref[k] for k in keys], 1)])


def compared(losses: np.ndarray) -> dict[str, Any]:
    """The largest relative difference from fp32 (inf where only fp32 is finite), for the tile's attributes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(losses[0] - losses[1]) / np.maximum(np.abs(losses[1]), 1e-30)
    rel[~np.isfinite(losses[0]) & np.isfinite(losses[1])] = np.inf
    finite = np.isfinite(losses[1]).any()
    return {"precision_check": float(np.nanmax(rel)) if finite else float("nan"),
            "precision_check_points": int(losses.shape[1])}


def recompute_nonfinite(runner: Runner, metrics: Sequence[Metric], coords: np.ndarray,
                        values: dict[str, np.ndarray], precision: str) -> dict[str, Any]:
    """Points where a value of `metrics` (those run in bf16/fp16: `values` holds theirs) is not finite, an
    overflow, computed again in fp32 by those metrics, in place."""
    bad = ~np.all([np.isfinite(v) for v in values.values()], axis=0)
    if not bad.any():
        return {}
    idx = np.flatnonzero(bad)
    how = Pass("loop", 1, None, fast=False, stream=runner.parts.stream)
    for key, redone in measure(metrics, runner.forward(coords[idx], how)).items():
        values[key][idx] = redone.cpu().numpy()
    log.warning("%d point(s) overflowed in %s and were recomputed in fp32", len(idx), precision)
    return {"recomputed_fp32": int(len(idx))}
