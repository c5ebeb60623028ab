"""Curvature at each grid point: the Hessian's extreme eigenvalues (Lanczos) and its trace (Hutchinson).

Hessian-vector products are forward-over-reverse passes (`jvp` of `grad` through `functional_call`), one per
batch, each batch's product summed into an fp64 vector; BatchNorm stays in eval mode (running statistics), as
the loss surface uses. Lanczos runs in fp64 on the device with full reorthogonalisation, from one seeded start
vector for every point (a warm start from the neighbour would make a point's value depend on its tile), and
stops when the residuals of both extreme Ritz pairs are at most `tol * max|theta|` and lambda_min's sign is
settled (the smallest Ritz value negative, or larger than its residual), or after `max_iter` products. One
Krylov space serves both ends: no shift and no second run on -H. A Ritz value with residual r is within r of
an eigenvalue of H (symmetric): of the extreme one unless another eigenvalue lies about that close to it (the
crowded negative end), so |min_eig / max_eig| is good to about `tol`. Where the cap comes before the sign,
`min_eig` is NaN (its residual is kept) and the point is counted (`sign_line`): a near-zero Ritz value of
either sign would otherwise call a saddle convex.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from ..data import Split, subset
from ..directions import Directions
from ..errors import UserError, real_number, whole_number
from .metrics import Forward, check_loss, loss_sum
from .options import known_keys

PARAMS = ("all", "directions")
MAX_BATCH = 1024  # default samples per double backward: it holds ~3x a forward's activations
HVP = Callable[[torch.Tensor], torch.Tensor]  # fp64 (n,) -> fp64 (n,)


@dataclass(frozen=True)
class HessianOptions:
    """`hessian.*` (metrics=[loss, hessian]): which parameters, Lanczos' tolerance and cap, trace probes,
    which samples (null: the whole split; N: a seeded subset of N, marked in the surface file) and the batch
    size of the products (null: the engine's)."""

    params: str
    tol: float
    max_iter: int
    trace_probes: int
    split: str
    samples: int | None
    batch_size: int | None

    def __post_init__(self) -> None:
        if self.params not in PARAMS:
            raise UserError(f"hessian.params '{self.params}' is unknown: use all or directions (the tensors the "
                            "directions move: biases and BatchNorm left out under directions.ignore=biasbn)")
        object.__setattr__(self, "tol", real_number(self.tol, "hessian.tol", 0.0, above=True))
        object.__setattr__(self, "max_iter", whole_number(self.max_iter, "hessian.max_iter", 2))
        object.__setattr__(self, "trace_probes", whole_number(self.trace_probes, "hessian.trace_probes", 0))
        if self.trace_probes == 1:
            raise UserError("hessian.trace_probes is 1: use 0 (no trace) or 2 or more (its standard error needs two)")
        for key in ("samples", "batch_size"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, whole_number(getattr(self, key), f"hessian.{key}", 1, ", or null"))

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> HessianOptions:
        """From `hessian.*` settings; unknown keys are refused."""
        return cls(**known_keys(cls, values, "hessian", "the Hessian's"))

    def hvps_per_point(self) -> int:
        """The most Hessian-vector products one point may take."""
        return self.max_iter + self.trace_probes


@dataclass(frozen=True)
class Extremes:
    """Lanczos' extreme Ritz values, their residual norms ||H y - theta y|| and the products it took."""

    max: float
    min: float
    max_residual: float
    min_residual: float
    iterations: int

    @property
    def signed(self) -> bool:
        """Whether lambda_min's sign is settled: a negative Ritz value bounds lambda_min from above (Ritz values
        lie inside the spectrum); a positive one counts once its residual keeps 0 out of reach."""
        return self.min < 0 or self.min_residual < self.min

    def converged(self, tol: float) -> bool:
        """Both residuals at most `tol * max|theta|`, and lambda_min's sign settled."""
        scale = max(abs(self.max), abs(self.min), np.finfo(np.float64).tiny)
        return max(self.max_residual, self.min_residual) <= tol * scale and self.signed


def lanczos(hvp: HVP, start: torch.Tensor, tol: float, max_iter: int) -> Extremes:
    """The largest and smallest eigenvalue of the symmetric operator `hvp` (fp64 on `start`'s device)."""
    n = start.numel()
    m = min(max_iter, n)
    basis = torch.empty(m, n, dtype=torch.float64, device=start.device)
    q, alphas, betas = start / start.norm(), [], []
    for j in range(m):
        basis[j] = q
        w = hvp(q)
        alpha = torch.dot(w, q)
        w = w - alpha * q - (betas[-1] * basis[j - 1] if j else 0.0)
        for _ in range(2):  # full reorthogonalisation, twice is enough (Parlett)
            w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
        beta = w.norm()
        alphas.append(alpha.item())
        betas.append(beta.item())
        if not np.isfinite(alphas[-1]) or not np.isfinite(betas[-1]):
            nan = float("nan")
            return Extremes(nan, nan, nan, nan, j + 1)
        theta, s = np.linalg.eigh(np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1))
        residual = np.abs(betas[-1] * s[-1, [0, -1]])
        e = Extremes(float(theta[-1]), float(theta[0]), float(residual[1]), float(residual[0]), j + 1)
        if e.converged(tol) or j + 1 == m:
            return e
        q = w / betas[-1]
    raise AssertionError("unreachable: the loop returns at j + 1 == m")


def hutchinson(hvp: HVP, n: int, probes: int, seed: int, device: torch.device) -> tuple[float, float]:
    """The trace's Hutchinson estimate over `probes` (2 or more) seeded Rademacher vectors, and its standard
    error."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(probes):
        z = (torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1).to(device)
        samples.append(torch.dot(z, hvp(z)).item())
    est = np.asarray(samples)
    return float(est.mean()), float(est.std(ddof=1) / np.sqrt(probes))


def hessian_vector_product(model: nn.Module, names: Sequence[str], batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                           loss: str, classify: bool) -> HVP:
    """v -> H v for the mean loss over `batches` w.r.t. the parameters `names` (flattened in that order) at
    the model's current weights: forward-over-reverse (`jvp` of `grad`) per batch in fp32, summed in fp64
    (on a CPU ~1.3x faster than a double backward, measured on the digits CNN)."""
    params = dict(model.named_parameters())
    with torch.no_grad():  # the loss is a mean over samples (cross_entropy) or over every output value
        per_sample = 1 if loss == "cross_entropy" else model(batches[0][0][:1]).numel()
    count = per_sample * sum(len(y) for _, y in batches)

    def batch_loss(chosen: dict[str, torch.Tensor], rest: dict[str, torch.Tensor], x: torch.Tensor,
                   y: torch.Tensor) -> torch.Tensor:
        return loss_sum(functional_call(model, {**rest, **chosen}, (x,)), y, loss, classify)[0] / count

    def hvp(v: torch.Tensor) -> torch.Tensor:
        rest = {k: p.detach() for k, p in params.items() if k not in names}
        chosen = {k: params[k].detach() for k in names}
        sizes = [chosen[k].numel() for k in names]
        tangent = {k: u.view(chosen[k].shape).float() for k, u in zip(names, torch.split(v, sizes))}
        out = torch.zeros_like(v)
        for x, y in batches:
            hv = jvp(lambda c: grad(batch_loss)(c, rest, x, y), (chosen,), (tangent,))[1]  # noqa: B023
            out += torch.cat([hv[k].reshape(-1) for k in names]).double()
        return out

    return hvp


def chosen_params(options: HessianOptions, names: Sequence[str], directions: Directions) -> list[str]:
    """`names` (hessian.params=all), or those some direction moves: a tensor every direction leaves at zero
    (biases and BatchNorm under ignore=biasbn) is fixed on the plane."""
    if options.params == "all":
        return list(names)
    ds = [directions.x] + ([directions.y] if directions.y is not None else [])
    return [n for i, n in enumerate(names) if any(bool(d[i].ne(0).any()) for d in ds)]


class Hessian:
    """The metric `hessian`: `max_eig`, `min_eig` (Li et al.'s names), their residuals, Lanczos' iterations,
    and with trace probes `trace` and `trace_stderr`, per point, over one split (or a seeded subset of it)."""

    fp32 = True  # products on the fp32 model whatever eval.precision: an overflow recompute leaves them

    def __init__(self, options: HessianOptions, loss: str, classify: bool, names: Sequence[str], seed: int):
        check_loss(loss)
        if not names:
            raise UserError("hessian.params=directions: the directions move no parameter; use hessian.params=all")
        self.options, self.loss, self.classify, self.names, self.seed = options, loss, classify, list(names), seed
        self.data: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.last_info: dict[str, float] = {}

    def samples(self, forward: Forward) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The split's normalised samples (the seeded subset where asked), batched, as plain (not inference)
        tensors: read once, the same for every point and tile."""
        if self.data is None:
            parts = list(forward.batches(self.options.split))
            split = Split(torch.cat([x for x, _ in parts]).clone(), torch.cat([y for _, y in parts]).clone())
            if self.options.samples:
                split = subset(split, self.options.samples, self.seed)
            size = self.options.batch_size or min(len(parts[0][1]), MAX_BATCH)
            self.data = [(split.x[i:i + size], split.y[i:i + size]) for i in range(0, len(split), size)]
        return self.data

    def measure(self, forward: Forward) -> dict[str, torch.Tensor]:
        o = self.options
        t0 = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad():
            batches = self.samples(forward)
            params = dict(forward.model.named_parameters())  # the same tensors at every point
            n = sum(params[k].numel() for k in self.names)
            device = params[self.names[0]].device
            start = torch.randn(n, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64).to(device)
            rows, unknown = [], 0
            for _ in forward.each_point():
                hvp = hessian_vector_product(forward.model, self.names, batches, self.loss, self.classify)
                e = lanczos(hvp, start.clone(), o.tol, o.max_iter)
                unknown += not e.signed and np.isfinite(e.max)  # the cap came first: no sign, no value
                row = [e.max, e.min if e.signed else float("nan"), e.max_residual, e.min_residual, e.iterations]
                if o.trace_probes:
                    row += hutchinson(hvp, n, o.trace_probes, self.seed + 1, device)
                rows.append(row)
        keys = ["max_eig", "min_eig", "max_eig_residual", "min_eig_residual", "lanczos_iterations"]
        keys += ["trace", "trace_stderr"] if o.trace_probes else []
        values = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(keys))
        self.last_info = {"hessian_hvps": float(values[:, 4].sum() + o.trace_probes * len(rows)),
                          "hessian_seconds": time.perf_counter() - t0, "hessian_points": len(rows),
                          "hessian_sign_unknown": unknown}
        device = next(forward.model.parameters()).device
        return {k: values[:, i].to(device) for i, k in enumerate(keys)}


def cost_line(metas: Sequence[Mapping[str, Any]], cap: int) -> str:
    """What curvature costs, from tile attributes (or one calibration's): Hessian-vector products per point
    (of at most `cap`), seconds per point, and how many times a point's loss and accuracy that is."""
    metas = [m for m in metas if "hessian_points" in m]
    if not metas:
        return ""
    points = sum(float(m["hessian_points"]) for m in metas)
    hvps, curv = sum(float(m["hessian_hvps"]) for m in metas), sum(float(m["hessian_seconds"]) for m in metas)
    loss = max(sum(float(m["seconds"]) for m in metas) - curv, 1e-9)
    line = (f"hessian: {hvps / points:.1f} Hessian-vector products per point (at most {cap}), "
            f"{curv / points:.3g} s per point, {curv / loss:.0f}x the loss and accuracy's time")
    return "; ".join(filter(None, (line, sign_line(metas))))


def sign_line(metas: Sequence[Mapping[str, Any]]) -> str:
    """`lambda_min's sign unknown at N of M points ...` from tile attributes; "" when every sign is known."""
    unknown = sum(int(m.get("hessian_sign_unknown", 0)) for m in metas)
    if not unknown:
        return ""
    points = sum(int(m["hessian_points"]) for m in metas if "hessian_points" in m)
    return (f"lambda_min's sign unknown at {unknown} of {points} points: hessian.max_iter came first "
            "(min_eig is NaN there; a larger hessian.max_iter settles more)")

