"""Values the engine must not get silently wrong, and its interfaces: NaN accuracy where the loss is not
finite, BatchNorm without running statistics refused, the bf16/fp16-on-CPU note, one home for the engine's
defaults, settings as one value, and a new metric as one new part."""
from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from landscape import data, directions
from landscape.engine import EngineOptions, Evaluator, check_model, precision_note
from landscape.engine.metrics import Forward
from landscape.errors import UserError
from landscape.models import digits_cnn, mlp

ROOT = Path(__file__).resolve().parents[1]
COORDS = np.array([[0.0, 0.0], [0.4, -0.3], [-0.5, 0.6]])
MLP = lambda: mlp(64, 10, [24])  # noqa: E731


@pytest.fixture(scope="module")
def digits():
    d = data.digits()
    return {"train": data.subset(d.train, 300, seed=1), "test": data.subset(d.test, 100, seed=1)}


def _setup(make, poison: bool = False):
    torch.manual_seed(0)
    model = make()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "none", 0)
    if poison:  # one NaN weight, as in a diverged checkpoint
        state[names[0]].view(-1)[0] = float("nan")
    return state, dirs


@pytest.mark.parametrize("kw", [{"mode": "loop"}, {"mode": "vmap", "points_per_batch": 2},
                                {"mode": "loop", "precision": "bf16"}], ids=["loop", "vmap", "bf16"])
def test_accuracy_is_nan_where_the_loss_is_not(digits, kw):
    """argmax of NaN logits reads as class 0 (32.9% on a real run): the accuracy must say NaN instead."""
    state, dirs = _setup(MLP, poison=True)
    out = Evaluator(MLP(), state, dirs, digits, 10, **kw).evaluate(COORDS)
    for split in digits:
        assert np.isnan(out[f"{split}_loss"]).all()
        assert np.isnan(out[f"{split}_acc"]).all()
    clean = Evaluator(MLP(), *_setup(MLP), digits, 10, **kw).evaluate(COORDS)
    assert np.isfinite(clean["train_acc"]).all() and (clean["train_acc"] > 0).all()


def test_batchnorm_without_running_statistics_is_refused(digits):
    """Such a layer normalises each batch by its own statistics: every value would depend on eval.batch_size."""
    def batch_stats():
        net = digits_cnn()
        net[1] = nn.BatchNorm2d(net[1].num_features, track_running_stats=False)
        return net
    check_model(digits_cnn())  # running statistics: fine
    with pytest.raises(UserError, match=r"layer 1 \(BatchNorm2d\) has track_running_stats=False.*eval.batch_size"):
        check_model(batch_stats())
    state, dirs = _setup(batch_stats)
    with pytest.raises(UserError, match="track_running_stats=False"):
        Evaluator(batch_stats(), state, dirs, digits, 10)


def test_low_precision_on_a_cpu_is_noted(digits, caplog):
    for precision in ("bf16", "fp16"):
        assert "slower and less exact than fp32" in precision_note(precision, "cpu")
        assert precision_note(precision, "cuda") is None
    assert precision_note("fp32", "cpu") is None and precision_note("tf32", "cpu") is None
    state, dirs = _setup(MLP)
    with caplog.at_level(logging.WARNING, logger="landscape.engine"):
        Evaluator(MLP(), state, dirs, digits, 10, precision="bf16", mode="loop")
    assert precision_note("bf16", "cpu") in caplog.messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="landscape.engine"):
        Evaluator(MLP(), state, dirs, digits, 10, mode="loop")
    assert not any("less exact" in m for m in caplog.messages)


def test_conf_defaults_are_the_engine_options_defaults():
    """`conf/surface.yaml`'s eval.* (less the device) and EngineOptions() are one set of defaults."""
    conf = yaml.safe_load((ROOT / "conf" / "surface.yaml").read_text())["eval"]
    conf.pop("device")
    assert set(conf) == {f.name for f in fields(EngineOptions)}
    parsed = EngineOptions.parse(conf)
    for f in fields(EngineOptions):
        assert getattr(parsed, f.name) == f.default, f.name


def test_options_as_one_value_or_as_keywords(digits):
    state, dirs = _setup(MLP)
    options = EngineOptions(mode="vmap", points_per_batch=3, batch_size=64)
    a = Evaluator(MLP(), state, dirs, digits, 10, options=options)
    b = Evaluator(MLP(), state, dirs, digits, 10, mode="vmap", points_per_batch=3, batch_size=64)
    assert a.options == b.options == options and a.choice == b.choice
    for k, v in a.evaluate(COORDS).items():
        assert np.array_equal(v, b.evaluate(COORDS)[k]), k
    with pytest.raises(TypeError, match="not both"):
        Evaluator(MLP(), state, dirs, digits, 10, mode="loop", options=options)


class Confidence:
    """A new metric, one part: the mean top softmax probability per point and split."""

    fp32 = False

    def reduce(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return out.float().softmax(-1).amax(-1).sum(1, keepdim=True)

    def measure(self, forward: Forward) -> dict[str, torch.Tensor]:
        sums = forward.sums(self.reduce)
        return {f"{s.name}_confidence": sums[:, i, 0] / s.samples for i, s in enumerate(forward.splits)}


@pytest.mark.parametrize("kw", [{"mode": "loop"}, {"mode": "vmap", "points_per_batch": 2}, {"stream": True}],
                         ids=["loop", "vmap", "streamed"])
def test_a_new_metric_is_one_part(digits, kw):
    """Passed to the Evaluator, a metric gets the forward at the points along the engine's own path."""
    state, dirs = _setup(MLP)
    ev = Evaluator(MLP(), state, dirs, digits, 10, metrics=[Confidence()], batch_size=128, **kw)
    out = ev.evaluate(COORDS)
    assert set(out) == {f"{s}_{k}" for s in digits for k in ("loss", "acc", "confidence")}
    model = MLP().eval()
    for i, (a, b) in enumerate(COORDS):
        model.load_state_dict({n: state[n] + a * dx + b * dy for n, dx, dy in zip(dirs.names, dirs.x, dirs.y)})
        with torch.no_grad():
            for name, split in digits.items():
                top = model(split.inputs(0, len(split))).softmax(1).amax(1).mean().item()
                np.testing.assert_allclose(out[f"{name}_confidence"][i], top, rtol=1e-5)


class GradientNorm:
    """A metric beyond sums of outputs (as curvature is): the norm of the train loss's gradient per point."""

    fp32 = True

    def measure(self, forward: Forward) -> dict[str, torch.Tensor]:
        params = list(forward.model.parameters())
        norms = []
        for _ in forward.each_point():
            with torch.inference_mode(False), torch.enable_grad():
                grads, n = [torch.zeros_like(p) for p in params], 0
                for x, y in forward.batches("train"):
                    loss = F.cross_entropy(forward.model(x.clone()), y.clone(), reduction="sum")
                    for g, d in zip(grads, torch.autograd.grad(loss, params)):
                        g += d
                    n += len(y)
                norms.append(torch.sqrt(sum((g / n).square().sum() for g in grads)).double())
        return {"train_gradient_norm": torch.stack(norms)}


@pytest.mark.parametrize("kw", [{"mode": "loop"}, {"mode": "vmap", "points_per_batch": 2}], ids=["loop", "vmap"])
def test_a_metric_may_move_the_model_itself(digits, kw):
    state, dirs = _setup(digits_cnn)
    ev = Evaluator(digits_cnn(), state, dirs, digits, 10, metrics=[GradientNorm()], batch_size=128, **kw)
    out = ev.evaluate(COORDS)
    model = digits_cnn().eval()
    for i, (a, b) in enumerate(COORDS):
        moved = dict(state) | {n: state[n] + a * dx + b * dy for n, dx, dy in zip(dirs.names, dirs.x, dirs.y)}
        model.load_state_dict(moved)
        split = digits["train"]
        loss = F.cross_entropy(model(split.inputs(0, len(split))), split.y)
        norm = torch.sqrt(sum(g.square().sum() for g in torch.autograd.grad(loss, list(model.parameters()))))
        np.testing.assert_allclose(out["train_gradient_norm"][i], norm.item(), rtol=1e-4)
    assert np.isfinite(out["train_loss"]).all()
