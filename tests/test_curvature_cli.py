"""metrics=[loss, hessian] and eval.bn=recalibrate through the commands: the surface file (Li et al.'s max_eig /
min_eig, shaped like train_loss), plots, landscape-status, the dry run, and independence of the tiling."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml

from conftest import cli, one_error_line, read_surface

QUICK = ["metrics=[loss,hessian]", "grid.resolution=3", "hessian.samples=64", "hessian.max_iter=12",
         "hessian.trace_probes=2", "launcher.workers=1"]
CURVATURE = ("max_eig", "min_eig", "max_eig_residual", "min_eig_residual", "lanczos_iterations", "trace",
             "trace_stderr")


@pytest.fixture(scope="module")
def curvature_run(trained, tmp_path_factory):
    run = tmp_path_factory.mktemp("curvature") / "H"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *QUICK,
        "grid.tile=2", f"run.dir={run}")
    return run


def test_the_surface_holds_curvature_maps_shaped_like_the_loss(curvature_run):
    s = read_surface(curvature_run / "surface.h5")
    for key in CURVATURE:
        assert s[key].shape == s["train_loss"].shape == (3, 3), key
        assert np.isfinite(s[key]).all(), key
    assert (s["max_eig"] >= s["min_eig"]).all() and (s["lanczos_iterations"] <= 12).all()
    with h5py.File(curvature_run / "surface.h5", "r") as f:
        assert f.attrs["hessian_samples"] == 64 and f.attrs["hessian_tol"] == 1e-3 and f.attrs["bn"] == "frozen"
    plots = {p.name for p in (curvature_run / "plots").iterdir()}
    assert {"convexity_heatmap.png", "max_eig_heatmap.png", "min_eig_heatmap.png", "trace_heatmap.png"} <= plots


def test_status_shows_the_cost(curvature_run):
    out = cli("landscape-status", str(curvature_run)).stdout
    assert "Hessian-vector products per point (at most 14)" in out and "the loss and accuracy's time" in out, out


def test_the_map_does_not_depend_on_the_tiling(curvature_run, trained, tmp_path):
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *QUICK,
        "grid.tile=3", f"run.dir={tmp_path / 'one-tile'}")
    a, b = read_surface(curvature_run / "surface.h5"), read_surface(tmp_path / "one-tile" / "surface.h5")
    for key in CURVATURE:  # fp32 products, one start vector and one set of probes for every point: bitwise
        assert np.array_equal(a[key], b[key]), key


def test_dry_run_prints_products_per_point(trained, tmp_path):
    out = cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *QUICK,
              "launcher.dry_run=true", f"run.dir={tmp_path / 'dry'}").stdout
    assert "Hessian-vector products per point" in out and not (tmp_path / "dry").exists(), out


def test_recalibrated_batchnorm_is_recorded(trained, tmp_path):
    run = tmp_path / "bn"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
        "grid.resolution=3", "eval.bn=recalibrate", "eval.bn_batches=2", f"run.dir={run}")
    with h5py.File(run / "surface.h5", "r") as f:
        assert f.attrs["bn"] == "recalibrate (2 batches of 128)"
    assert yaml.safe_load((run / "run.yaml").read_text())["config"]["eval"]["bn"] == "recalibrate"


@pytest.mark.parametrize("args, fragment", [
    (["metrics=[hessian]"], "use [loss] or [loss, hessian]"),
    (["metrics=[loss,curvature]"], "use [loss] or [loss, hessian]"),
    (["metrics=[loss,hessian]", "hessian.split=test"], "hessian.split=test is not evaluated"),
    (["metrics=[loss,hessian]", "hessian.tolerance=1"], "unknown setting hessian.tolerance"),
    (["eval.bn=batch"], "eval.bn 'batch' is unknown"),
])
def test_bad_settings_are_one_line(trained, tmp_path, args, fragment):
    r = cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *args,
            f"run.dir={tmp_path / 'bad'}", check=False)
    one_error_line(r.returncode, r.stderr, fragment)
