"""Small bugs a review found, each pinned by a test that failed before its fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from landscape import data, directions
from landscape.engine import Evaluator
from landscape.engine.curvature import Hessian, HessianOptions
from landscape.models import mlp
from landscape.train import RESUME
from launch import train

HESSIAN = HessianOptions(params="all", tol=1e-3, max_iter=8, trace_probes=0, split="train", samples=None,
                         batch_size=None)


class CountedHessian(Hessian):
    """The Hessian metric, counting the points it measured."""

    measured = 0

    def measure(self, forward):
        values = super().measure(forward)
        self.measured += len(values["max_eig"])
        return values


def test_an_overflow_recompute_leaves_the_fp32_curvature_alone():
    """fp16 logits past 65504 at a point: the loss is recomputed in fp32, the Hessian (always fp32) is not
    measured again: each point once, with the values of an fp32 run."""
    g = torch.Generator().manual_seed(0)
    split = data.Split(torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g))
    torch.manual_seed(0)
    model = mlp(8, 3, [16])
    with torch.no_grad():
        model[-1].weight.mul_(1e5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "none", 0)
    coords = np.array([[0.0, 0.0], [0.1, 0.1], [0.2, -0.1]])
    runs = {}
    for precision in ("fp32", "fp16"):
        hessian = CountedHessian(HESSIAN, "cross_entropy", True, names, 0)
        ev = Evaluator(mlp(8, 3, [16]), state, dirs, {"train": split}, 3, precision=precision, metrics=[hessian])
        runs[precision] = ev.evaluate(coords), ev.last_info, hessian.measured
    (ref, _, _), (out, info, measured) = runs["fp32"], runs["fp16"]
    assert info["recomputed_fp32"] >= 1
    assert measured == len(coords) and info["hessian_points"] == len(coords)
    np.testing.assert_allclose(out["train_loss"], ref["train_loss"], rtol=1e-3)
    np.testing.assert_array_equal(out["max_eig"], ref["max_eig"])


def test_continuing_a_training_reads_resume_pt_once(tmp_path, monkeypatch):
    """The optimizer state and history in resume.pt are read when the continuation is planned, and used."""
    tiny = ["model=digits_cnn", "data=digits", "eval.device=cpu", f"run.dir={tmp_path}"]
    assert train.main([*tiny, "train.epochs=1"]) == 0
    reads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: reads.append(Path(f).name) or load(f, *a, **kw))
    assert train.main([*tiny, "train.epochs=2"]) == 0
    assert reads.count(RESUME) == 1
