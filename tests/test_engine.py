"""The evaluation engine: every fast path against the plain fp32 loop (and the loop against a
from-scratch computation), determinism, precision handling, caching, subsets. CPU unless marked."""
from __future__ import annotations

import ctypes.util
import json
import sys
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape import data, directions
from landscape.engine import EngineOptions, Evaluator
from landscape.engine import evaluator as evaluator_module
from landscape.engine import runner as runner_module
from landscape.engine.graphs import PointGraph
from landscape.engine.lowp import CAST_TYPES, _PaddedLinear, move_and_cast
from landscape.engine.metrics import point_sums
from landscape.engine.tuning import Tuner
from landscape.hardware import tune_cpu_malloc
from landscape.models import digits_cnn, mlp

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
RTOL = 2e-5  # fp32 tolerance for a mean loss computed by other kernels (observed differences: ~1e-7)


@pytest.fixture(scope="module")
def digits():
    d = data.digits()
    return {"train": data.subset(d.train, 400, seed=1), "test": data.subset(d.test, 200, seed=1)}


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so folding and buffers matter."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + 1.5 * torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model


def _setup(make, seed: int = 0, ignore: str = "none"):
    """(state, 2D random directions); ignore=none moves BatchNorm weights too."""
    torch.manual_seed(seed)
    model = _randomised(make(), seed)
    names = [n for n, _ in model.named_parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return state, directions.random_directions(names, [state[n] for n in names], 2, "filter", ignore, seed)


PLAIN = {"mode": "loop", "fold_bn": False, "channels_last": False, "compile": False}  # the reference path
COORDS = np.array([[0.0, 0.0], [0.3, -0.2], [-0.6, 0.5], [1.0, 1.0], [0.15, 0.9], [-1.0, -0.4], [0.5, 0.0]])
CNN = digits_cnn
MLP = lambda: mlp(64, 10, [48, 32])  # noqa: E731


def _close(a: dict, b: dict, samples: int = 200) -> None:
    """Losses to fp32 tolerance; accuracies may differ by one sample flipping at a tie."""
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith("_loss"):
            np.testing.assert_allclose(a[k], b[k], rtol=RTOL, err_msg=k)
        else:
            np.testing.assert_allclose(a[k], b[k], atol=100.0 / samples + 1e-9, err_msg=k)


def _equal(a: dict, b: dict) -> None:
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs: {a[k] - b[k]}"


def _eval(make, state, dirs, splits, coords=COORDS, **kw):
    ev = Evaluator(make(), state, dirs, splits, 10, **kw)
    return ev.evaluate(coords), ev


def _autocast_per_batch(monkeypatch, *args, **kw) -> Evaluator:
    """An Evaluator whose bf16/fp16 weights autocast casts on every call, as before `lowp.py`."""
    with monkeypatch.context() as m:
        m.setattr(evaluator_module, "low_precision_net", lambda *a: None)
        return Evaluator(*args, **kw)


def test_loop_matches_a_from_scratch_computation(digits):
    """The engine against the definition: load theta0 + a d1 + b d2, mean loss, accuracy."""
    state, dirs = _setup(CNN)
    got, ev = _eval(CNN, state, dirs, digits)  # every option on auto: the path a CPU worker takes
    assert ev.info["mode"] == "loop" and ev.folder is not None and ev.channels_last
    names = dirs.names
    for i, (a, b) in enumerate(COORDS):
        model = CNN().eval()
        moved = dict(state)
        for n, dx, dy in zip(names, dirs.x, dirs.y):
            moved[n] = state[n] + a * dx + b * dy
        model.load_state_dict(moved)
        with torch.no_grad():
            for name, split in digits.items():
                out = model(split.inputs(0, len(split)))
                np.testing.assert_allclose(got[f"{name}_loss"][i], F.cross_entropy(out, split.y).item(), rtol=RTOL)
                acc = 100.0 * (out.argmax(1) == split.y).float().mean().item()
                np.testing.assert_allclose(got[f"{name}_acc"][i], acc, atol=100.0 / len(split) + 1e-6)


def test_public_contract_positional_arguments(digits):
    state, dirs = _setup(MLP)
    ev = Evaluator(MLP(), state, dirs, digits, 10, "cross_entropy", "fp32", 256, "cpu")
    out = ev.evaluate(COORDS[:2])
    assert set(out) == {"train_loss", "train_acc", "test_loss", "test_acc"} and out["train_loss"].shape == (2,)
    assert ev.choice.batch_size == 256
    assert all(p.data_ptr() % 64 == 0 for p in ev.model.parameters())  # aligned views into the flat vector


@pytest.mark.parametrize("make", [CNN, MLP], ids=["cnn_bn", "mlp"])
def test_vmap_matches_loop(digits, make):
    state, dirs = _setup(make)
    loop, _ = _eval(make, state, dirs, digits, **PLAIN)
    vm, ev = _eval(make, state, dirs, digits, mode="vmap", points_per_batch=3, fold_bn=False)
    assert ev.choice.mode == "vmap" and ev.choice.points_per_batch == 3
    _close(vm, loop)


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_vmap_matches_loop_other_losses(digits, loss):
    state, dirs = _setup(CNN)
    loop, _ = _eval(CNN, state, dirs, digits, loss=loss, **PLAIN)
    vm, _ = _eval(CNN, state, dirs, digits, loss=loss, mode="vmap", points_per_batch=4, fold_bn=False)
    _close(vm, loop)


def test_regression_vmap_matches_loop():
    g = torch.Generator().manual_seed(0)
    split = data.Split(torch.randn(300, 5, generator=g), torch.randn(300, 1, generator=g))
    make = lambda: mlp(5, 1, [16])  # noqa: E731
    torch.manual_seed(0)
    model = make()
    names = [n for n, _ in model.named_parameters()]
    state = model.state_dict()
    dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "none", 0)
    a = Evaluator(make(), state, dirs, {"train": split}, 0, loss="mse", mode="loop").evaluate(COORDS)
    b = Evaluator(make(), state, dirs, {"train": split}, 0, loss="mse", mode="vmap",
                  points_per_batch=2).evaluate(COORDS)
    assert set(a) == {"train_loss"}
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=RTOL)
    with torch.no_grad():  # and the definition at the origin: mean over all output elements
        model.load_state_dict(state)
        np.testing.assert_allclose(a["train_loss"][0], F.mse_loss(model(split.x), split.y).item(), rtol=RTOL)


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_fold_bn_matches_unfolded(digits, mode):
    state, dirs = _setup(CNN)
    plain, _ = _eval(CNN, state, dirs, digits, **PLAIN)
    folded, ev = _eval(CNN, state, dirs, digits, mode=mode, points_per_batch=3, fold_bn=True)
    assert ev.folder is not None and ev.folder.pairs == 2  # both conv -> BN pairs folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ev.net.modules())
    _close(folded, plain)


def test_fold_bn_and_vmap_with_moving_buffers(digits):
    """A line between two networks moves the BatchNorm statistics too: folding must follow them."""
    m0, m1 = _randomised(CNN(), 1), _randomised(CNN(), 2)
    s0 = {k: v.clone() for k, v in m0.state_dict().items()}
    s1 = {k: v.clone() for k, v in m1.state_dict().items()}
    names = [n for n, _ in m0.named_parameters()]
    d = directions.line_direction(names, s0, s1, [n for n, _ in m0.named_buffers()])
    coords = np.linspace(-0.2, 1.2, 6)[:, None]
    ref = Evaluator(CNN(), s0, d, digits, 10, **PLAIN).evaluate(coords)
    for kw in ({"mode": "vmap", "points_per_batch": 4, "fold_bn": False}, {"mode": "loop", "fold_bn": True},
               {"mode": "vmap", "points_per_batch": 4, "fold_bn": True}):
        _close(Evaluator(CNN(), s0, d, digits, 10, **kw).evaluate(coords), ref)
    # a=1 is the end network itself, buffers included
    end = CNN().eval()
    end.load_state_dict(s1)
    with torch.no_grad():
        loss = F.cross_entropy(end(digits["train"].inputs(0, 400)), digits["train"].y).item()
    np.testing.assert_allclose(Evaluator(CNN(), s0, d, digits, 10).evaluate([[1.0]])["train_loss"][0], loss,
                               rtol=RTOL)


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_streaming_matches_resident(digits, mode):
    """Forced on CPU, the streaming path (two alternating buffers, data-outer order) runs as on CUDA."""
    state, dirs = _setup(CNN)
    resident, ev_r = _eval(CNN, state, dirs, digits, mode=mode, points_per_batch=3, batch_size=256)
    streamed, ev_s = _eval(CNN, state, dirs, digits, mode=mode, points_per_batch=3, batch_size=256, stream=True)
    assert ev_s.parts.stream and not ev_r.parts.stream
    assert ev_s.parts.splits["train"].x is digits["train"].x  # x stayed on the host
    _equal(streamed, resident)  # same batches, same per-point order of sums: bitwise


def test_channels_last_matches_plain(digits):
    state, dirs = _setup(CNN)
    plain, _ = _eval(CNN, state, dirs, digits, **PLAIN)
    cl, ev = _eval(CNN, state, dirs, digits, mode="loop", channels_last=True, fold_bn=True)
    assert ev.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert ev.model[0].weight.data_ptr() >= ev.weights.flat.data_ptr()  # still a view into the flat vector
    _close(cl, plain)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inductor's import
def test_compiled_matches_eager(digits):
    state, dirs = _setup(MLP)
    eager, _ = _eval(MLP, state, dirs, digits, COORDS[:3], mode="loop", compile=False)
    compiled, ev = _eval(MLP, state, dirs, digits, COORDS[:3], mode="loop", compile=True)
    assert ev.choice.compile and "fallback" not in ev.info, ev.info  # really compiled, no silent fallback
    _close(compiled, eager)


def test_fp32_bitwise_independent_of_tiling_and_points_per_batch(digits):
    state, dirs = _setup(CNN)
    train = {"train": digits["train"]}
    coords = np.random.default_rng(0).uniform(-1, 1, (5, 2))
    for mode in ("loop", "vmap"):
        ev = Evaluator(CNN(), state, dirs, train, 10, mode=mode, points_per_batch=4, batch_size=256)
        whole = ev.evaluate(coords)
        for size in (1, 3):  # tiles of other sizes: a short vmap chunk is padded, never re-shaped
            parts = [ev.evaluate(coords[i:i + size]) for i in range(0, len(coords), size)]
            _equal({k: np.concatenate([p[k] for p in parts]) for k in whole}, whole)
        shuffled = ev.evaluate(coords[::-1])
        _equal({k: v[::-1] for k, v in shuffled.items()}, whole)
    ref = Evaluator(CNN(), state, dirs, train, 10, mode="vmap", points_per_batch=1, batch_size=256).evaluate(coords)
    for p in (3, 5):
        _equal(Evaluator(CNN(), state, dirs, train, 10, mode="vmap", points_per_batch=p,
                         batch_size=256).evaluate(coords), ref)


def test_auto_mode_choice_is_recorded_and_cached(digits, tmp_path):
    state, dirs = _setup(CNN)
    ev = Evaluator(CNN(), state, dirs, digits, 10, cache_dir=tmp_path)
    assert ev.choice.mode == "loop" and ev.info["mode_decision"] == "convolutions: loop"
    state, dirs = _setup(MLP)
    ev = Evaluator(MLP(), state, dirs, digits, 10, cache_dir=tmp_path)
    decision = ev.info["mode_decision"]
    assert "loop" in decision and any(k.startswith("vmap") for k in decision)
    files = sorted(tmp_path.glob("engine-cpu-*.json"))
    assert len(files) == 2
    # another worker finds the file and takes its choice, whatever it would measure
    mine = next(f for f in files if json.loads(f.read_text())["decision"] == decision)
    record = json.loads(mine.read_text()) | {"mode": "vmap", "points_per_batch": 3, "batch_size": 128}
    mine.write_text(json.dumps(record))
    other = Evaluator(MLP(), state, dirs, digits, 10, cache_dir=tmp_path)
    assert (other.choice.mode, other.choice.points_per_batch, other.choice.batch_size) == ("vmap", 3, 128)
    _close(other.evaluate(COORDS), ev.evaluate(COORDS))


def test_bf16_precision_check(digits):
    state, dirs = _setup(CNN)
    ev = Evaluator(CNN(), state, dirs, digits, 10, precision="bf16", precision_check=2)
    out = ev.evaluate(COORDS[:3])
    ref = Evaluator(CNN(), state, dirs, digits, 10).evaluate(COORDS[:3])
    check = ev.last_info["precision_check"]
    assert ev.last_info["precision_check_points"] == 2
    assert 0 < check < 0.05  # bf16 differs from fp32, but not by much
    assert ev.meta()["precision_check"] == check
    np.testing.assert_allclose(out["train_loss"], ref["train_loss"], rtol=0.05)
    off = Evaluator(CNN(), state, dirs, digits, 10, precision="bf16", precision_check=0)
    off.evaluate(COORDS[:1])
    assert "precision_check" not in off.last_info
    fp32 = Evaluator(CNN(), state, dirs, digits, 10)
    fp32.evaluate(COORDS[:1])
    assert "precision_check" not in fp32.meta()


ODD_MLP = lambda: mlp(64, 10, [30, 33])  # noqa: E731 - no width a multiple of 8: every layer padded


@pytest.mark.parametrize("make,kw", [(CNN, {}), (CNN, PLAIN), (MLP, {"mode": "loop"}),
                                     (ODD_MLP, {"mode": "loop", "pad_linear": True})],
                         ids=["cnn_folded", "cnn_plain", "mlp", "mlp_padded"])
def test_bf16_weights_cast_once_per_point_equal_autocast(digits, monkeypatch, make, kw):
    """Conv/linear weights cast to bf16 once per point (`lowp.py`) give autocast's per-batch values
    bitwise, zero-padded linear layers included; and they are really used, and recast at every point."""
    state, dirs = _setup(make)
    kw = dict(kw, precision="bf16", batch_size=128)  # 400 + 200 samples: 6 batches per point
    per_batch = _autocast_per_batch(monkeypatch, make(), state, dirs, digits, 10, **kw)
    ev = Evaluator(make(), state, dirs, digits, 10, **kw)
    assert ev.info["lowp_layers"] == 3 and ev.info["padded_linear"] == (3 if make is ODD_MLP else 0)
    layers = [m for m in ev.lowp.net.modules() if isinstance(m, CAST_TYPES + (_PaddedLinear,))]
    assert len(layers) == 3 and all(m.weight.dtype == torch.bfloat16 for m in layers)
    refreshes = []
    real = type(ev.lowp).recast
    monkeypatch.setattr(type(ev.lowp), "recast", lambda self, **kw: (refreshes.append(1), real(self, **kw)))
    _equal(ev.evaluate(COORDS), per_batch.evaluate(COORDS))
    assert len(refreshes) == len(COORDS) + 1  # once per point (and once for the precision check's point)
    monkeypatch.setattr(type(ev.lowp), "recast", lambda self, **kw: None)  # never recast: the weights stay put
    stale = ev.evaluate(COORDS[1:])
    assert np.abs(stale["train_loss"] - per_batch.evaluate(COORDS[1:])["train_loss"]).max() > 1e-3


@pytest.mark.parametrize("make,compiled", [(MLP, False), (CNN, True)], ids=["mlp_eager", "cnn_folded_compiled"])
def test_fused_move_and_cast_equals_the_plain_ops(digits, make, compiled):
    """CUDA's one-kernel move (`move_and_cast`, compiled there), forced on CPU: the weights and
    surface of the two addcmuls and the cast, bitwise; the cast copy really written by it."""
    state, dirs = _setup(make)
    kw = {"precision": "bf16", "batch_size": 128, "mode": "loop"}
    plain = Evaluator(make(), state, dirs, digits, 10, **kw)
    assert plain.lowp.mover is None  # CPU: plain ops
    ev = Evaluator(make(), state, dirs, digits, 10, **kw)
    ev.lowp.mover = torch.compile(move_and_cast, dynamic=False) if compiled else move_and_cast
    _equal(ev.evaluate(COORDS), plain.evaluate(COORDS))
    assert ev.lowp.mover is not None and ev.lowp.flat_cast_at == ev.mover.moves  # no fallback to the plain ops
    assert torch.equal(ev.weights.flat, plain.weights.flat)
    assert torch.equal(ev.lowp.vectors[0][1], ev.weights.flat.to(torch.bfloat16))


def test_tied_weights_stay_fp32_under_autocast(digits, monkeypatch):
    """A tensor two layers share is not cast once: autocast keeps casting it per call, as before."""
    def tied():
        net = mlp(64, 10, [64, 64])
        net[3].weight = net[1].weight  # 64x64 hidden layers share one weight
        return net
    state, dirs = _setup(tied)
    ev = Evaluator(tied(), state, dirs, digits, 10, precision="bf16", mode="loop")
    assert ev.info["lowp_layers"] == 1  # the head only
    ref = _autocast_per_batch(monkeypatch, tied(), state, dirs, digits, 10, precision="bf16", mode="loop")
    _equal(ev.evaluate(COORDS[:3]), ref.evaluate(COORDS[:3]))


@pytest.mark.parametrize("make", [CNN, MLP], ids=["cnn_bn", "mlp"])
def test_bf16_vmap_really_runs_in_bf16(digits, make):
    """Autocast does not reach inside vmap: the vmap path casts explicitly, and must not silently be fp32."""
    state, dirs = _setup(make)
    fp32, _ = _eval(make, state, dirs, digits, COORDS[:3], mode="vmap", points_per_batch=2)
    loop, _ = _eval(make, state, dirs, digits, COORDS[:3], mode="loop", precision="bf16")
    vm, ev = _eval(make, state, dirs, digits, COORDS[:3], mode="vmap", points_per_batch=2, precision="bf16",
                   fold_bn=make is CNN)
    assert np.abs(vm["train_loss"] - fp32["train_loss"]).max() > 0
    np.testing.assert_allclose(vm["train_loss"], fp32["train_loss"], rtol=0.05)
    np.testing.assert_allclose(vm["train_loss"], loop["train_loss"], rtol=0.05)
    assert 0 < ev.last_info["precision_check"] < 0.05


def test_fp16_overflow_is_recomputed_in_fp32():
    """Logits past fp16's largest value (65504): the point comes back finite, from fp32."""
    g = torch.Generator().manual_seed(0)
    split = data.Split(torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g))
    make = lambda: mlp(8, 3, [16])  # noqa: E731
    torch.manual_seed(0)
    model = make()
    with torch.no_grad():
        model[-1].weight.mul_(1e5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "none", 0)
    coords = np.array([[0.0, 0.0], [0.1, 0.1]])
    ref = Evaluator(make(), state, dirs, {"train": split}, 3).evaluate(coords)
    ev = Evaluator(make(), state, dirs, {"train": split}, 3, precision="fp16")
    out = ev.evaluate(coords)
    assert np.isfinite(ref["train_loss"]).all() and ref["train_loss"].max() > 1e3
    assert ev.last_info["recomputed_fp32"] >= 1
    assert ev.last_info["precision_check"] == np.inf  # the check saw the overflow
    np.testing.assert_allclose(out["train_loss"], ref["train_loss"], rtol=1e-3)


def test_point_sums_matches_torch_losses():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(3, 50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    s = point_sums(out, y, "cross_entropy", True)
    for p in range(3):
        np.testing.assert_allclose(s[p, 0].item(), F.cross_entropy(out[p], y, reduction="sum").item(), rtol=1e-5)
        assert s[p, 1].item() == (out[p].argmax(1) == y).sum().item()
    s = point_sums(out, y, "mse", True)
    np.testing.assert_allclose(s[1, 0].item(), ((out[1].softmax(1) - F.one_hot(y, 7)) ** 2).sum().item(), rtol=1e-5)


def test_subset_is_fixed_seeded_and_ordered(digits):
    full = data.digits().train
    a, b, c = data.subset(full, 100, 0), data.subset(full, 100, 0), data.subset(full, 100, 1)
    assert len(a) == 100 and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    rows = {bytes(full.x[i].numpy()) : i for i in range(len(full))}
    idx = [rows[bytes(a.x[i].numpy())] for i in range(100)]
    assert idx == sorted(idx)  # kept in the split's order
    assert data.subset(full, 10**9, 0) is full
    with pytest.raises(Exception, match="subset"):
        data.subset(full, 0, 0)


def test_subset_and_precision_check_reach_the_surface_file(tmp_path):
    """Through the real run directory: tile meta -> surface.h5 attrs -> landscape-status."""
    from jobs.reduce import reduce
    from jobs.run import RunDir
    from jobs.tile import run_tiles
    from launch import config, status
    from launch.prepare import prepare

    ckpt = tmp_path / "cnn.pt"
    torch.save(_randomised(CNN()).state_dict(), ckpt)
    cfg = config.load("surface", ["model=digits_cnn", "data=digits", f"checkpoint={ckpt}", "grid.resolution=3",
                                  "grid.tile=2", "precision=bf16", "data.subset=200", f"run.dir={tmp_path / 'run'}"])
    run = prepare(cfg, [], log=lambda *_: None)
    run_tiles(str(run.path), range(len(run.tiles)))
    reduce(run.path)
    with h5py.File(run.surface_file, "r", locking=False) as f:
        assert f.attrs["approximate_subset"] == 200
        assert 0 < f.attrs["precision_check"] < 0.05 and f.attrs["precision_check_tiles"] == len(run.tiles)
        assert np.isfinite(f["train_loss"][()]).all()
    with h5py.File(run.tile_file(run.tiles[0]), "r", locking=False) as f:
        assert f.attrs["engine_mode"] == "loop" and f.attrs["engine_batch_size"] == 200
    assert "precision check: bf16 vs fp32" in status.summary(RunDir(run.path))
    assert list((run.path / "cache").glob("engine-cpu-*.json"))


_FAULTS = """
import ctypes, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
n = 48 << 20  # above glibc's 32 MB ceiling for its dynamic mmap threshold: mmap + munmap every time
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    p = libc.malloc(ctypes.c_size_t(n))
    ctypes.memset(p, 1, n)
    libc.free(ctypes.c_void_p(p))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc only")
def test_cpu_malloc_keeps_large_blocks():
    """Tuned, a freed 48 MB block is reused without page faults; untuned it is unmapped and re-faulted."""
    import subprocess
    default = int(subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True,
                                 check=True).stdout.split()[-1])
    assert tune_cpu_malloc()  # here, in this process, as a worker does at start
    scope: dict = {}
    exec(compile(_FAULTS.replace("print(", "scope['faults'] = ("), "faults", "exec"), {"scope": scope})
    assert default > 3 * 12288 * 0.9, default  # 12288 pages per 48 MB, faulted in again every time
    assert scope["faults"] < 12288 * 1.5, scope  # the first touch only


def test_cuda_graph_and_batch_timing_stay_off_on_cpu(digits, tmp_path):
    state, dirs = _setup(CNN)
    ref, _ = _eval(CNN, state, dirs, digits, **PLAIN)
    out, ev = _eval(CNN, state, dirs, digits, cuda_graph=True, cache_dir=tmp_path, **PLAIN)
    assert not ev.choice.cuda_graph and "batch_decision" not in ev.info and ev.choice.batch_size == 400
    _equal(out, ref)


class _Rerun(PointGraph):
    """A CPU stand-in for the three CUDA calls of PointGraph only: a 'capture' keeps the pass, a 'replay'
    reruns it. Everything else (coordinates read at replay, sums added, the check) is the real code."""

    def _warm_up(self, body, device):
        body()

    def _capture(self, body, device):
        self.body = body

    def _replay(self):
        self.body()


class _Baked(_Rerun):
    """A broken graph: it replays the coordinate it was captured at, whatever the current one."""

    def _capture(self, body, device):
        self.body, self.at = body, self.coord.clone()

    def _replay(self):
        now = self.coord.clone()
        self.coord.copy_(self.at)
        self.body()
        self.coord.copy_(now)


class _Empty(_Rerun):
    """A broken graph that captured nothing: a replay runs no kernel at all."""

    def _replay(self):
        pass


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("stand_in", [_Rerun, _Baked, _Empty])
def test_graph_plumbing_on_cpu(digits, monkeypatch, stand_in, precision):
    """The engine's graph path (one pass per point, sums added per replay, the capture check and the
    fallback), with the CUDA calls replaced: equal to the plain pass, and a baked graph is refused.
    In bf16 the pass also recasts the weights (`lowp.py`) once per point."""
    state, dirs = _setup(CNN)
    kw = dict(PLAIN, batch_size=128, precision=precision)  # 400 samples: 3 full batches and 1 partial
    plain, _ = _eval(CNN, state, dirs, digits, **kw)
    monkeypatch.setattr(runner_module, "PointGraph", stand_in)
    ev = Evaluator(CNN(), state, dirs, digits, 10, **kw)
    ev.choose(replace(ev.choice, cuda_graph=True))  # CPU: the option is off; here the stand-in plays the GPU
    out = ev.evaluate(COORDS)
    _equal(out, plain)
    (graph,) = ev.runner.graphs.values()
    if stand_in is _Rerun:
        assert ev.info["graph_check"] == 0.0 and isinstance(graph, _Rerun)
    else:  # the check saw the broken replay; the run went on with the plain pass
        assert graph is None and "differs from the launched pass" in ev.info["graph_fallback"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batch_and_graph_timing_on_cpu(monkeypatch, precision):
    """The GPU's batch/graph timing, run on CPU with the graph's CUDA calls stood in: every candidate
    timed both ways, the fastest kept, and the surface it then computes equal to the plain one
    (in bf16: to bf16's tolerance, with the weights cast once per point inside the stood-in graph)."""
    monkeypatch.setattr(runner_module, "PointGraph", _Rerun)
    state, dirs = _setup(CNN)
    splits = {"train": data.digits().train}  # 1438 samples: candidates 512, 1024 and the whole split
    plain, _ = _eval(CNN, state, dirs, splits, **PLAIN)
    ev = Evaluator(CNN(), state, dirs, splits, 10, **PLAIN, precision=precision)
    assert ev.choice.batch_size == 1024 and "batch_decision" not in ev.info  # the CPU rule
    tuner = Tuner(ev.parts, ev.options, ev.metrics[0].reduce)
    choice = tuner.time_candidates(replace(ev.choice, batch_size=1438), "auto")  # as the GPU's memory probe
    times = tuner.info["batch_decision"]  # would find: the whole split fits
    assert set(times) == {"512", "512g", "1024", "1024g", "1438", "1438g"} and all(t > 0 for t in times.values())
    best = min(times, key=times.get)
    assert (choice.batch_size, choice.cuda_graph) == (int(best.rstrip("g")), best.endswith("g"))
    ev.choose(choice)
    out = ev.evaluate(COORDS)
    if precision == "fp32":
        _close(out, plain)  # another batch size: equal to fp32 rounding, not bitwise
    else:
        assert ev.lowp is not None and 0 < ev.last_info["precision_check"] < 0.05
        np.testing.assert_allclose(out["train_loss"], plain["train_loss"], rtol=0.05)


def test_graphs_asked_for_but_not_capturable_fall_back_to_launching(monkeypatch):
    class Uncapturable(_Rerun):
        def _capture(self, body, device):
            raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(runner_module, "PointGraph", Uncapturable)
    state, dirs = _setup(CNN)
    ev = Evaluator(CNN(), state, dirs, {"train": data.digits().train}, 10, **PLAIN)
    tuner = Tuner(ev.parts, ev.options, ev.metrics[0].reduce)
    choice = tuner.time_candidates(replace(ev.choice, batch_size=1438), "true")
    assert set(tuner.info["batch_decision"]) == {"512", "1024", "1438"} and not choice.cuda_graph


def test_bad_engine_options_name_the_key(digits):
    from landscape.errors import UserError
    assert EngineOptions.parse({"cuda_graph": True}).cuda_graph == "true"
    assert EngineOptions.parse({"stream": None, "fold_bn": False}) == EngineOptions(fold_bn="false")
    for kw, words in [({"mode": "fast"}, "eval.mode 'fast'"), ({"cuda_graph": "maybe"}, "eval.cuda_graph is"),
                      ({"batch_size": 0}, "eval.batch_size is 0"), ({"batch_size": 2.5}, "eval.batch_size is 2.5"),
                      ({"compile_mode": "reduce-overhead"}, "eval.compile_mode"),
                      ({"precision_check": -1}, "eval.precision_check is -1"),
                      ({"device": "cpu"}, "unknown setting eval.device"), ({"speed": 3}, "unknown setting eval.speed")]:
        with pytest.raises(UserError, match=words):
            EngineOptions.parse(kw)
    state, dirs = _setup(MLP)
    with pytest.raises(UserError, match="fp8"):
        Evaluator(MLP(), state, dirs, digits, 10, precision="fp8")


# ----------------------------------------------------------------------------- GPU only

@cuda
def test_gpu_fast_paths_match_fp32_loop(digits):
    state, dirs = _setup(CNN)
    ref, _ = _eval(CNN, state, dirs, digits, device="cpu", **PLAIN)
    plain, ev = _eval(CNN, state, dirs, digits, device="cuda", **PLAIN)
    assert ev.folder is None  # PLAIN: unfolded
    _close(plain, ref)
    fast, ev = _eval(CNN, state, dirs, digits, device="cuda", mode="loop", compile=True, fold_bn=True)
    assert ev.channels_last and ev.choice.compile
    _close(fast, ref)
    vm, _ = _eval(CNN, state, dirs, digits, device="cuda", mode="vmap", points_per_batch=4, compile=False)
    _close(vm, ref)


@cuda
def test_gpu_streaming_matches_resident(digits):
    state, dirs = _setup(CNN)
    resident, _ = _eval(CNN, state, dirs, digits, device="cuda", batch_size=128, compile=False)
    streamed, ev = _eval(CNN, state, dirs, digits, device="cuda", batch_size=128, compile=False, stream=True)
    assert ev.parts.stream and ev.parts.splits["train"].x.device.type == "cpu"
    _equal(streamed, resident)


@cuda
def test_gpu_batch_size_and_graph_are_timed_and_cached(digits, tmp_path):
    state, dirs = _setup(CNN)
    splits = {"train": data.digits().train}  # 1438 samples: candidates 512, 1024 and the whole split
    ev = Evaluator(CNN(), state, dirs, splits, 10, device="cuda", compile=False, cache_dir=tmp_path)
    assert set(ev.info["batch_decision"]) == {"512", "512g", "1024", "1024g", "1438", "1438g"}
    assert all(t > 0 for t in ev.info["batch_decision"].values())
    assert ev.choice.batch_size in (512, 1438)
    (cached,) = tmp_path.glob("engine-*.json")
    record = json.loads(cached.read_text())
    assert (record["batch_size"], record["cuda_graph"]) == (ev.choice.batch_size, ev.choice.cuda_graph)
    again = Evaluator(CNN(), state, dirs, splits, 10, device="cuda", compile=False, cache_dir=tmp_path)
    assert again.choice == ev.choice
    assert "batch_decision" not in again.info  # read from the cache, not timed again


@cuda
@pytest.mark.parametrize("compiled", [False, True])
def test_gpu_cuda_graph_replays_the_plain_pass(digits, compiled):
    """One captured pass per point, replayed at every point: the same values as launching it."""
    state, dirs = _setup(CNN)
    kw = {"device": "cuda", "batch_size": 128, "compile": compiled}  # 400 samples: 3 full batches, 1 partial
    plain, _ = _eval(CNN, state, dirs, digits, cuda_graph=False, **kw)
    graphed, ev = _eval(CNN, state, dirs, digits, cuda_graph=True, **kw)
    assert ev.choice.cuda_graph and "graph_fallback" not in ev.info and any(ev.runner.graphs.values())
    _equal(graphed, plain)
    bf, ev = _eval(CNN, state, dirs, digits, cuda_graph=True, precision="bf16", **kw)
    assert ev.choice.cuda_graph and "graph_fallback" not in ev.info and ev.lowp is not None  # recast in the graph
    np.testing.assert_allclose(bf["train_loss"], plain["train_loss"], rtol=0.05)
    launched, _ = _eval(CNN, state, dirs, digits, cuda_graph=False, precision="bf16", **kw)
    _close(bf, launched)


@cuda
def test_gpu_bf16_cast_once_and_padded_linear(digits, monkeypatch):
    """On CUDA: weights moved and cast once per point (one compiled kernel) give autocast's per-batch
    values; auto pads odd linear layers."""
    state, dirs = _setup(CNN)
    kw = {"device": "cuda", "batch_size": 128, "compile": False, "precision": "bf16", "cuda_graph": False}
    per_batch = _autocast_per_batch(monkeypatch, CNN(), state, dirs, digits, 10, **kw)  # and two addcmuls move
    once, ev = _eval(CNN, state, dirs, digits, **kw)
    assert ev.info["lowp_layers"] == 3 and ev.lowp.mover is not None and ev.lowp.flat_cast_at == ev.mover.moves
    _close(once, per_batch.evaluate(COORDS))
    state, dirs = _setup(ODD_MLP)
    padded, ev = _eval(ODD_MLP, state, dirs, digits, mode="loop", **kw)
    assert ev.info["padded_linear"] == 3  # pad_linear auto: on for CUDA
    unpadded, ev = _eval(ODD_MLP, state, dirs, digits, mode="loop", pad_linear=False, **kw)
    assert ev.info["padded_linear"] == 0
    np.testing.assert_allclose(padded["train_loss"], unpadded["train_loss"], rtol=1e-3)


@cuda
def test_gpu_bf16_close_to_fp32(digits):
    state, dirs = _setup(CNN)
    ref, _ = _eval(CNN, state, dirs, digits, device="cuda", compile=False)
    bf, ev = _eval(CNN, state, dirs, digits, device="cuda", precision="bf16", compile=False)
    np.testing.assert_allclose(bf["train_loss"], ref["train_loss"], rtol=0.05)
    assert 0 <= ev.last_info["precision_check"] < 0.05
