"""Directions in weight space: random (filter/layer/model-normalised), PCA of a trajectory, or a line.

Tensors are kept as lists in `model.parameters()` order, the order Li et al.'s files use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import torch

from .checkpoint import Layout, StateDict, load_state
from .errors import UserError, whole_number

NORMS = ("filter", "layer", "model", "none")
IGNORES = ("biasbn", "none")


@dataclass
class Directions:
    """One or two directions over the named parameters, plus what the run needs to place them."""

    names: list[str]
    x: list[torch.Tensor]
    y: list[torch.Tensor] | None = None
    x_buffers: dict[str, torch.Tensor] | None = None  # line only: buffers move with the weights
    attrs: dict[str, Any] = field(default_factory=dict)
    explained_variance_ratio: np.ndarray | None = None
    trajectory: np.ndarray | None = None  # (n, 2) projected checkpoints
    trajectory_epochs: np.ndarray | None = None

    @property
    def dims(self) -> int:
        return 1 if self.y is None else 2


def check_normalization(norm: str, ignore: str) -> None:
    """directions.norm and directions.ignore: one of the known values each, else a UserError naming the key."""
    if norm not in NORMS:
        raise UserError(f"directions.norm '{norm}' is unknown: use one of {', '.join(NORMS)}")
    if ignore not in IGNORES:
        raise UserError(f"directions.ignore '{ignore}' is unknown: use one of {', '.join(IGNORES)}")


def normalize_(d: torch.Tensor, w: torch.Tensor, norm: str, ignore: str) -> torch.Tensor:
    """Scale one direction tensor in place to the weights' norm (Li et al. 2018, section 4)."""
    if d.dim() <= 1 and ignore == "biasbn":
        return d.zero_()
    if norm == "filter":
        if d.dim() <= 1:  # Li et al.: a bias or BN vector direction is the weights themselves
            return d.copy_(w)
        dn = d.flatten(1).norm(dim=1)
        wn = w.flatten(1).norm(dim=1)
        return d.mul_((wn / (dn + 1e-10)).view(-1, *([1] * (d.dim() - 1))))
    if norm == "layer":
        return d.mul_(w.norm() / (d.norm() + 1e-10))
    return d


def random_direction(weights: Sequence[torch.Tensor], norm: str, ignore: str,
                     generator: torch.Generator) -> list[torch.Tensor]:
    """Gaussian per tensor, then normalised; `model` norm scales the whole vector to |theta|."""
    check_normalization(norm, ignore)
    dirs = [torch.randn(w.shape, generator=generator, dtype=torch.float32) for w in weights]
    for d, w in zip(dirs, weights):
        normalize_(d, w.float(), norm if norm != "model" else "none", ignore)
    if norm == "model":
        kept = [(d, w) for d, w in zip(dirs, weights) if not (d.dim() <= 1 and ignore == "biasbn")]
        dn = torch.sqrt(sum((d.double() ** 2).sum() for d, _ in kept))
        wn = torch.sqrt(sum((w.double() ** 2).sum() for _, w in kept))
        for d in dirs:
            d.mul_(float(wn / (dn + 1e-10)))
    return dirs


def random_directions(names: list[str], weights: Sequence[torch.Tensor], dims: int, norm: str = "filter",
                      ignore: str = "biasbn", seed: int = 0) -> Directions:
    """`dims` independent random directions from one seeded generator (x first, then y)."""
    seed = whole_number(seed, "seed", 0)
    g = torch.Generator().manual_seed(seed)
    x = random_direction(weights, norm, ignore, g)
    y = random_direction(weights, norm, ignore, g) if dims == 2 else None
    return Directions(names, x, y, attrs={"kind": "random", "norm": norm, "ignore": ignore, "seed": seed})


def line_direction(names: list[str], start: StateDict, end: StateDict, buffer_names: list[str]) -> Directions:
    """`theta(a) = start + a (end - start)`: a=0 is `start`, a=1 is `end`; float buffers move too."""
    x = [(end[n].float() - start[n].float()) for n in names]
    buffers = {b: end[b].float() - start[b].float() for b in buffer_names if start[b].is_floating_point()}
    return Directions(names, x, None, buffers, attrs={"kind": "line"})


def negative_variances(start: StateDict, buffers: dict[str, torch.Tensor], xs: np.ndarray) -> np.ndarray:
    """The coordinates among `xs` where a BatchNorm running variance on the line `start + a * step` is below 0.

    Past the line's ends (a < 0 or a > 1) the variances are extrapolated, and BatchNorm of a negative variance
    is NaN: the loss there is not the network's, so the driver warns.
    """
    bad = np.zeros(len(xs), dtype=bool)
    for name, step in buffers.items():
        if name.endswith("running_var") and name in start:
            v0, dv = start[name].double().reshape(-1).numpy(), step.double().reshape(-1).numpy()
            bad |= ((v0[None, :] + np.asarray(xs, dtype=np.float64)[:, None] * dv[None, :]) < 0).any(1)
    return np.asarray(xs)[bad]


def _streamed_columns(states: list[StateDict], final: StateDict, names: list[str], ignore: str, chunk: int):
    """Yield (name, slice, M) with M the (n, c) float64 block of `theta_i - theta_final`."""
    for name in names:
        if final[name].dim() <= 1 and ignore == "biasbn":
            continue
        ref = final[name].reshape(-1)
        for lo in range(0, ref.numel(), chunk):
            hi = min(lo + chunk, ref.numel())
            block = torch.stack([s[name].reshape(-1)[lo:hi] for s in states]).double()
            yield name, slice(lo, hi), block - ref[lo:hi].double()


def check_trajectory(paths: Sequence[str | Path], source: object = None) -> None:
    """PCA needs at least 3 checkpoints of one training (2 give one direction only)."""
    if len(paths) < 3:
        raise UserError(f"PCA directions need at least 3 checkpoints, got {len(paths)}"
                        f"{f' from {source}' if source is not None else ''}: save one per epoch "
                        "(landscape-train does) and point directions.checkpoints at that folder, or at a pattern "
                        "of your files ('traj/step_*.pt')")


def pca_directions(paths: Sequence[str | Path], final: StateDict, names: list[str], ignore: str = "biasbn",
                   chunk_bytes: int = 64 << 20, layout: Layout = Layout()) -> Directions:
    """Top two principal components of `theta_i - theta_final` over the checkpoints, rows centred.

    Streams over parameter chunks through the n x n Gram matrix, so memory is O(n^2 + P): 150
    checkpoints of 200M parameters never sit in memory together (checkpoints are memory-mapped).
    """
    check_normalization("none", ignore)
    check_trajectory(paths)
    states = [load_state(p, mmap=True, layout=layout) for p in paths]
    for p, s in zip(paths, states):
        absent = [n for n in names if n not in s or s[n].shape != final[n].shape]
        if absent:
            raise UserError(f"checkpoint {p} does not match the model: {', '.join(absent[:4])}")
    n = len(states)
    chunk = max(1, chunk_bytes // (8 * n))
    gram = torch.zeros(n, n, dtype=torch.float64)
    for _, _, block in _streamed_columns(states, final, names, ignore, chunk):
        gram += block @ block.T
    centre = torch.eye(n, dtype=torch.float64) - 1.0 / n
    gram_c = centre @ gram @ centre
    evals, evecs = torch.linalg.eigh(gram_c)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    if evals[1] <= 1e-12 * max(float(evals[0]), 1e-300):
        raise UserError("the checkpoints span fewer than two directions (are they all the same?)")
    u = evecs[:, :2] / evals[:2].sqrt()  # v_k = M_c^T u_k / s_k = M^T u_k / s_k, as u_k is orthogonal to 1
    out = {k: [torch.zeros_like(final[nm], dtype=torch.float32) for nm in names] for k in (0, 1)}
    index = {nm: i for i, nm in enumerate(names)}
    proj = torch.zeros(n, 2, dtype=torch.float64)
    for name, sl, block in _streamed_columns(states, final, names, ignore, chunk):
        v = block.T @ u  # (c, 2)
        proj += block @ v
        for k in (0, 1):
            out[k][index[name]].view(-1)[sl] = v[:, k].float()
    gram2 = torch.tensor([[sum(float((a.double() * b.double()).sum()) for a, b in zip(out[i], out[j]))
                           for j in (0, 1)] for i in (0, 1)], dtype=torch.float64)
    coords = torch.linalg.solve(gram2, proj.T).T.numpy()  # least squares onto the plane
    ratio = (evals[:2] / evals.sum()).numpy()
    return Directions(names, out[0], out[1], attrs={"kind": "pca", "ignore": ignore},
                      explained_variance_ratio=ratio, trajectory=coords)


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One contiguous float32 vector, the layout the evaluation engine works in."""
    return torch.cat([t.reshape(-1).float() for t in tensors])


def _write_group(f: h5py.File, name: str, tensors: Sequence[torch.Tensor] | dict[str, torch.Tensor]) -> None:
    group = f.create_group(name)
    items = tensors.items() if isinstance(tensors, dict) else ((str(i), t) for i, t in enumerate(tensors))
    for key, t in items:
        group.create_dataset(key, data=t.detach().cpu().numpy())


def save(path: str | Path, d: Directions, extra: dict[str, np.ndarray] | None = None) -> None:
    """Li et al.'s layout: groups `xdirection` / `ydirection` with datasets "0", "1", ...; atomic."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w", locking=False) as f:
        _write_group(f, "xdirection", d.x)
        if d.y is not None:
            _write_group(f, "ydirection", d.y)
        if d.x_buffers:
            _write_group(f, "xdirection_buffers", d.x_buffers)
        f.create_dataset("parameter_names", data=np.array(d.names, dtype=object), dtype=h5py.string_dtype())
        if d.explained_variance_ratio is not None:
            f.create_dataset("explained_variance_ratio_", data=d.explained_variance_ratio)
        if d.trajectory is not None:
            f.create_dataset("trajectory", data=d.trajectory)
        if d.trajectory_epochs is not None:
            f.create_dataset("trajectory_epochs", data=d.trajectory_epochs)
        for key, value in (extra or {}).items():
            f.create_dataset(key, data=value)
        for key, value in d.attrs.items():
            f.attrs[key] = value
    tmp.replace(path)


def load(path: str | Path, names: list[str] | None = None, tensors: bool = True) -> Directions:
    """Read a directions file; with `names`, check it was made for the same parameters. `tensors=False`: its
    attributes, trajectory and variance ratios only (the reducer's labels), no direction tensors read."""
    path = Path(path)
    with h5py.File(path, "r", locking=False) as f:
        read = lambda g: [torch.from_numpy(f[g][str(i)][()]) for i in range(len(f[g]))] if tensors else []  # noqa: E731
        stored = [s.decode() if isinstance(s, bytes) else s for s in f["parameter_names"][()]]
        if names is not None and stored != list(names):
            raise UserError(f"directions file {path} was made for other parameters "
                            f"(first difference near {next((a for a, b in zip(stored, names) if a != b), '?')})")
        get = lambda k: f[k][()] if k in f else None  # noqa: E731
        return Directions(
            stored, read("xdirection"), read("ydirection") if "ydirection" in f else None,
            {k: torch.from_numpy(v[()]) for k, v in f["xdirection_buffers"].items()}
            if "xdirection_buffers" in f and tensors else None,
            dict(f.attrs), get("explained_variance_ratio_"), get("trajectory"), get("trajectory_epochs"))
