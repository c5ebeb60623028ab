"""lambda_min's sign: Lanczos goes on while a near-zero smallest Ritz value could still be either sign, and where
its cap comes first min_eig is NaN and the points are counted (driver warning, landscape-status, the plots)."""
from __future__ import annotations

import numpy as np
import torch

from conftest import cli, read_surface
from landscape.engine.curvature import lanczos

# A Hessian-like spectrum: a few large eigenvalues, a bulk just above zero, one small negative eigenvalue.
SPECTRUM = torch.cat([torch.tensor([24.0, 10.0, 5.0]), torch.linspace(0, 1e-3, 196), torch.tensor([-0.05])]).double()


def test_a_saddle_is_not_called_convex():
    e = lanczos(lambda v: SPECTRUM * v, torch.ones(len(SPECTRUM), dtype=torch.float64), 1e-3, 100)
    assert e.signed and e.min < 0 and abs(e.min - (-0.05)) <= e.min_residual, e


def test_the_cap_before_the_sign_leaves_it_unknown():
    e = lanczos(lambda v: SPECTRUM * v, torch.ones(len(SPECTRUM), dtype=torch.float64), 1e-3, 3)
    assert e.iterations == 3 and not e.signed, e


def test_unknown_signs_are_nan_and_counted_where_the_user_looks(trained, tmp_path):
    run = tmp_path / "H"
    out = cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
              "metrics=[loss,hessian]", "grid.dims=1", "grid.resolution=3", "hessian.samples=64",
              "hessian.max_iter=3", f"run.dir={run}").stdout
    s = read_surface(run / "surface.h5")
    unknown = int(np.isnan(s["min_eig"]).sum())
    assert unknown and np.isfinite(s["max_eig"]).all() and (s["lanczos_iterations"] == 3).all(), s
    line = f"lambda_min's sign unknown at {unknown} of 3 points"
    assert f"warning: {line}" in out, out
    status = cli("landscape-status", str(run)).stdout
    assert any(x.startswith("hessian: ") and line in x for x in status.splitlines()), status
    assert (run / "plots" / "1d_curvature.png").is_file()
