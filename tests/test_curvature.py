"""Curvature: Lanczos' extreme eigenvalues and Hutchinson's trace against a dense Hessian
(`torch.autograd.functional.hessian` in fp64) on tiny models, and the metric through the engine.

Stated tolerance: with hessian.tol=1e-6 each extreme eigenvalue is within 1e-4 * max|lambda| of the dense one
(the products are fp32, the reference fp64). With the default tol=1e-3 each value is within its residual
(<= 1e-3 * max|lambda|) of an eigenvalue of H, and within 1e-2 * max|lambda| of the extreme one: where another
eigenvalue lies that close to the extreme, Lanczos may stop on it (seen at the clustered negative end).
"""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import hessian
from torch.func import functional_call

from landscape import data, directions
from landscape.engine import Evaluator
from landscape.engine.curvature import (Hessian, HessianOptions, hessian_vector_product, hutchinson, lanczos,
                                        chosen_params)
from landscape.errors import UserError

TIGHT = 1e-4  # relative to max|lambda|, at hessian.tol=1e-6
OPTS = HessianOptions("all", 1e-6, 300, 0, "train", None, 64)


def _data(shape, classes=3, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def _logistic():
    torch.manual_seed(0)
    return nn.Linear(5, 3), _data((5,))


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), _data((4,))


def _cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    g = torch.Generator().manual_seed(1)
    bn = model[1]
    bn.running_mean.copy_(0.1 * torch.randn(3, generator=g))
    bn.running_var.copy_(0.5 + torch.rand(3, generator=g))
    return model.eval(), _data((1, 6, 6))


MODELS = {"logistic": _logistic, "mlp": _mlp, "cnn_bn_eval": _cnn}


def dense(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str]) -> torch.Tensor:
    """The fp64 Hessian of the mean cross-entropy w.r.t. `names`, flattened in that order."""
    m64 = copy.deepcopy(model).double().eval()
    params = dict(m64.named_parameters())
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss(v):
        chunks, out = torch.split(v, [int(np.prod(s)) for s in shapes]), {}
        for n, s, c in zip(names, shapes, chunks):
            out[n] = c.view(s)
        return F.cross_entropy(functional_call(m64, {**params, **out}, (x.double(),)), y)

    return hessian(loss, flat)


def _start(n, seed=0):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kind", list(MODELS))
def test_extremes_and_trace_match_the_dense_hessian(kind):
    model, (x, y) = MODELS[kind]()
    names = [n for n, _ in model.named_parameters()]
    h = dense(model, x, y, names)
    eig = torch.linalg.eigvalsh(h)
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]  # two batches: the products are summed over them
    hvp = hessian_vector_product(model, names, batches, "cross_entropy", True)
    v = _start(h.shape[0], 3)
    assert torch.allclose(hvp(v), h @ v, rtol=0, atol=1e-5 * eig.abs().max())
    scale = eig.abs().max().item()
    for tol, bound in ((1e-6, TIGHT), (1e-3, 1e-2)):
        e = lanczos(hvp, _start(h.shape[0]), tol, 200)
        assert abs(e.max - eig[-1].item()) <= bound * scale
        assert abs(e.min - eig[0].item()) <= bound * scale
        assert max(e.max_residual, e.min_residual) <= tol * scale
        for value, residual in ((e.max, e.max_residual), (e.min, e.min_residual)):  # Kahan's bound
            assert (eig - value).abs().min() <= residual + TIGHT * scale
    trace, stderr = hutchinson(hvp, h.shape[0], 400, 0, torch.device("cpu"))
    assert abs(trace - torch.trace(h).item()) <= 4 * stderr
    if kind != "logistic":  # a point off any minimum: the Hessian there has a negative eigenvalue
        assert eig[0] < -1e-3 * scale and e.min < 0


def test_logistic_regression_is_convex():
    model, (x, y) = _logistic()
    names = [n for n, _ in model.named_parameters()]
    e = lanczos(hessian_vector_product(model, names, [(x, y)], "cross_entropy", True), _start(18), 1e-6, 100)
    assert e.min >= -TIGHT * e.max  # softmax regression: positive semidefinite


def test_stops_early_at_the_tolerance():
    """An operator with a known spectrum: iterations stop at the tolerance, under the cap, with the bound met."""
    eig = torch.cat([torch.tensor([-2.0]), torch.linspace(0.0, 1.0, 300, dtype=torch.float64), torch.tensor([50.0])])
    q, _ = torch.linalg.qr(torch.randn(302, 302, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    h = q @ torch.diag(eig) @ q.T
    e = lanczos(lambda v: h @ v, _start(302), 1e-3, 300)
    assert e.iterations < 300
    assert abs(e.max - 50.0) <= 1e-3 * 50 and abs(e.min + 2.0) <= 1e-3 * 50
    capped = lanczos(lambda v: h @ v, _start(302), 1e-12, 5)
    assert capped.iterations == 5 and capped.min_residual > 1e-12 * 50


def test_directions_subset_leaves_out_biases_and_batchnorm():
    model, _ = _cnn()
    names = [n for n, _ in model.named_parameters()]
    state = model.state_dict()
    d = directions.random_directions(names, [state[n] for n in names], 2, "filter", "biasbn", 0)
    assert chosen_params(replace(OPTS, params="directions"), names, d) == ["0.weight", "4.weight"]


def test_bad_options_are_one_line():
    good = dict(params="all", tol=1e-3, max_iter=50, trace_probes=0, split="train", samples=None, batch_size=None)
    for key, bad, fragment in (("params", "some", "hessian.params"), ("tol", 0, "hessian.tol"),
                               ("max_iter", 1, "hessian.max_iter"), ("samples", 0, "hessian.samples"),
                               ("trace_probes", 1, "hessian.trace_probes is 1")):
        with pytest.raises(UserError, match=fragment):
            HessianOptions(**{**good, key: bad})


@pytest.fixture(scope="module")
def digits_small():
    d = data.digits()
    return {"train": data.subset(d.train, 120, seed=1)}


def _cnn_digits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(8, 10))
    model[1].running_var.fill_(0.7)
    return model


def _evaluator(digits_small, options, fold_bn=False, seed=0):
    model = _cnn_digits()
    names = [n for n, _ in model.named_parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    d = directions.random_directions(names, [state[n] for n in names], 2, "filter", "none", seed)
    metric = Hessian(options, "cross_entropy", True, chosen_params(options, names, d), seed)
    ev = Evaluator(model, state, d, digits_small, 10, fold_bn=fold_bn, channels_last=False, metrics=[metric])
    return ev, model, state, d, names




def test_metric_at_a_grid_point_matches_the_dense_hessian(digits_small):
    """Through the engine (BatchNorm folded for the loss, unfolded and in eval mode for the Hessian)."""
    ev, model, state, d, names = _evaluator(digits_small, OPTS, fold_bn=True)
    point = np.array([0.4, -0.3])
    out = ev.evaluate(point[None])
    moved = {n: state[n] + point[0] * d.x[i] + point[1] * d.y[i] for i, n in enumerate(names)}
    ref = _cnn_digits()
    ref.load_state_dict({**state, **moved})
    split = digits_small["train"]
    x = data.normalize(split.x, split.scale, split.mean, split.std)
    eig = torch.linalg.eigvalsh(dense(ref, x, split.y, names))
    scale = eig.abs().max().item()
    assert abs(out["max_eig"][0] - eig[-1].item()) <= TIGHT * scale
    assert abs(out["min_eig"][0] - eig[0].item()) <= TIGHT * scale
    assert out["lanczos_iterations"][0] >= 2 and ev.meta()["hessian_hvps"] == out["lanczos_iterations"][0]


def test_subset_and_trace_are_seeded_and_tiling_independent(digits_small):
    """The same point gives bitwise the same curvature alone or among others (fp32 products, one start vector)."""
    opts = HessianOptions("directions", 1e-3, 40, 3, "train", 50, 32)
    ev = _evaluator(digits_small, opts)[0]
    coords = np.array([[0.0, 0.0], [0.5, 0.5], [-0.5, 0.25]])
    together = ev.evaluate(coords)
    alone = ev.evaluate(coords[2:])
    for key in ("max_eig", "min_eig", "trace", "trace_stderr", "lanczos_iterations"):
        assert together[key][2] == alone[key][0], key
    assert np.isfinite(together["trace"]).all() and (together["max_eig"] > 0).all()
