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
    y_buffers: dict[str, torch.Tensor] | None = None  # plane through checkpoints: buffers move along y too
    more_planes: list[Directions] = field(default_factory=list)  # planes 1..K-1 (random, directions.planes=K)
    marks: np.ndarray | None = None  # (n, 2) or (n, 1) coordinates of the checkpoints a plane passes through

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
    return normalize_all_(dirs, weights, norm, ignore)


def normalize_all_(dirs: list[torch.Tensor], weights: Sequence[torch.Tensor], norm: str,
                   ignore: str) -> list[torch.Tensor]:
    """Each tensor normalised in place (`normalize_`); `model` norm scales the whole vector to |theta|."""
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


def random_planes(names: list[str], weights: Sequence[torch.Tensor], dims: int, norm: str, ignore: str,
                  seeds: Sequence[int]) -> Directions:
    """One random plane (or line) per seed, each exactly the one a single run with that seed draws; plane 0
    leads, the others ride in `more_planes`."""
    planes = [random_directions(names, weights, dims, norm, ignore, s) for s in seeds]
    first = planes[0]
    first.attrs["seeds"] = np.array([int(s) for s in seeds])
    first.more_planes = planes[1:]
    return first


def checkpoint_plane(names: list[str], origin: StateDict, points: Sequence[StateDict], buffer_names: list[str],
                     orthogonalize: bool = False, norm: str = "none", ignore: str = "none") -> Directions:
    """The plane through three checkpoints: origin w0, d1 = w1 - w0, d2 = w2 - w0 (mode connectivity).

    `orthogonalize`: Gram-Schmidt, d2 minus its part along d1, scaled to |d1| (the picture keeps its angles).
    Float buffers (BatchNorm statistics) move with the same coefficients, so each checkpoint's point is that
    network exactly. `norm` other than `none` rescales the weights' directions as Li et al. do: the plane then
    only nears w1 and w2 (their marks are projections) and the buffers stay at w0's.
    """
    check_normalization(norm, ignore)
    steps = [[p[n].double() - origin[n].double() for n in names] for p in points]
    bsteps = [{b: p[b].double() - origin[b].double() for b in buffer_names if origin[b].is_floating_point()}
              for p in points]
    d1, d2, b1, b2 = steps[0], steps[1], bsteps[0], bsteps[1]
    dot = lambda u, v: sum(float((a * b).sum()) for a, b in zip(u, v))  # noqa: E731
    n1 = dot(d1, d1)
    if n1 == 0:
        raise UserError("directions.points: the first checkpoint has the centre checkpoint's weights; no plane")
    k = dot(d2, d1) / n1
    r = [a - k * b for a, b in zip(d2, d1)]
    nr = dot(r, r)
    if nr <= 1e-12 * n1:
        raise UserError("directions.points: the three checkpoints lie on one line; no plane through them")
    if orthogonalize:
        scale = (n1 / nr) ** 0.5
        d2 = [t * scale for t in r]
        b2 = {key: (b2[key] - k * b1[key]) * scale for key in b2}
    weights = [origin[n] for n in names]
    x = normalize_all_([t.float() for t in d1], weights, norm, ignore)
    y = normalize_all_([t.float() for t in d2], weights, norm, ignore)
    if norm != "none":  # the buffers' steps no longer match the weights'
        b1 = b2 = {}
    marks = np.vstack([np.zeros(2), *(_plane_coords(x, y, step) for step in steps)])
    return Directions(names, x, y, {k: v.float() for k, v in b1.items()} or None,
                      attrs={"kind": "plane", "norm": norm, "ignore": ignore, "orthogonalize": bool(orthogonalize),
                             "isometric": _isometric(x, y)},
                      y_buffers={k: v.float() for k, v in b2.items()} or None, marks=marks)


def _isometric(x: Sequence[torch.Tensor], y: Sequence[torch.Tensor]) -> bool:
    """Whether x and y are orthogonal and of one length (to float32 rounding): a picture of the plane drawn to
    equal scale on both axes then shows true lengths and angles. Orthogonalized planes are, unless a norm or
    ignore=biasbn rescales the directions after."""
    u, v = flat(x).double(), flat(y).double()
    nu, nv = float(u.norm()), float(v.norm())
    return abs(float(u @ v)) <= 1e-5 * nu * nv and abs(nu - nv) <= 1e-5 * nu


def _plane_coords(x: Sequence[torch.Tensor], y: Sequence[torch.Tensor], step: Sequence[torch.Tensor]) -> np.ndarray:
    """Least-squares coordinates (a, b) of `step` in the plane spanned by x and y (exact when it lies in it)."""
    vecs = [torch.cat([t.reshape(-1).double() for t in v]) for v in (x, y, step)]
    basis = torch.stack(vecs[:2], 1)
    return torch.linalg.lstsq(basis, vecs[2][:, None]).solution[:, 0].numpy()


def line_direction(names: list[str], start: StateDict, end: StateDict, buffer_names: list[str]) -> Directions:
    """`theta(a) = start + a (end - start)`: a=0 is `start`, a=1 is `end`; float buffers move too. Refused where
    `start` has `end`'s weights: a line of length 0, every point the same network."""
    x = [(end[n].float() - start[n].float()) for n in names]
    if not any(bool(d.ne(0).any()) for d in x):
        raise UserError("directions.start has the centre checkpoint's weights: the line has length 0; "
                        "give another checkpoint as directions.start")
    buffers = {b: end[b].float() - start[b].float() for b in buffer_names if start[b].is_floating_point()}
    return Directions(names, x, None, buffers, attrs={"kind": "line"})


def negative_variances(start: StateDict, steps: Sequence[dict[str, torch.Tensor] | None],
                       coords: np.ndarray) -> np.ndarray:
    """Which of the points `coords` (n, D) have a BatchNorm running variance `start + sum_k c_k step_k` below 0.

    Past the checkpoints (a line's ends, a plane's triangle) the variances are extrapolated, and BatchNorm of a
    negative variance is NaN: the loss there is not the network's, so the driver warns.
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
    bad = np.zeros(len(coords), dtype=bool)
    for name in (steps[0] or {}):
        if name.endswith("running_var") and name in start:
            v = start[name].double().reshape(1, -1).numpy().repeat(len(coords), 0)
            for k, step in enumerate(s for s in steps if s):
                v = v + coords[:, k:k + 1] * step[name].double().reshape(1, -1).numpy()
            bad |= (v < 0).any(1)
    return bad


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
        if d.y_buffers:
            _write_group(f, "ydirection_buffers", d.y_buffers)
        for k, plane in enumerate(d.more_planes, start=1):  # plane 0 stays at the root, where Li et al. read it
            _write_group(f, f"planes/{k}/xdirection", plane.x)
            if plane.y is not None:
                _write_group(f, f"planes/{k}/ydirection", plane.y)
        if d.marks is not None:
            f.create_dataset("marks", data=d.marks)
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


def load(path: str | Path, names: list[str] | None = None, tensors: bool = True, plane: int = 0) -> Directions:
    """Read a directions file (plane `plane` of several); with `names`, check it was made for the same
    parameters. `tensors=False`: its attributes, trajectory and variance ratios only (the reducer's labels), no
    direction tensors read."""
    path = Path(path)
    with h5py.File(path, "r", locking=False) as f:
        at = f"planes/{plane}/" if plane else ""
        read = lambda g: [torch.from_numpy(f[at + g][str(i)][()]) for i in range(len(f[at + g]))] \
            if tensors else []  # noqa: E731
        buffers = lambda g: {k: torch.from_numpy(v[()]) for k, v in f[g].items()} \
            if g in f and tensors else None  # noqa: E731
        stored = [s.decode() if isinstance(s, bytes) else s for s in f["parameter_names"][()]]
        if names is not None and stored != list(names):
            raise UserError(f"directions file {path} was made for other parameters "
                            f"(first difference near {next((a for a, b in zip(stored, names) if a != b), '?')})")
        get = lambda k: f[k][()] if k in f else None  # noqa: E731
        return Directions(
            stored, read("xdirection"), read("ydirection") if "ydirection" in f else None,
            buffers("xdirection_buffers"), dict(f.attrs), get("explained_variance_ratio_"), get("trajectory"),
            get("trajectory_epochs"), buffers("ydirection_buffers"), marks=get("marks"))


def write_projection(dir_file: str | Path, coords: np.ndarray) -> Path:
    """Li et al.'s projection file beside `dir_file` (`<dir_file>_proj_cos.h5`, `proj_xcoord`, `proj_ycoord`),
    as their `project_trajectory` writes it: their `plot_contour_trajectory` draws our PCA trajectory. Our PCA
    directions are orthonormal, so the least-squares coordinates are their `cos` projections."""
    path = Path(f"{dir_file}_proj_cos.h5")
    with h5py.File(path, "w", locking=False) as f:
        f["proj_xcoord"] = np.asarray(coords[:, 0], dtype=np.float64)
        f["proj_ycoord"] = np.asarray(coords[:, 1], dtype=np.float64)
    return path
