"""Curvature values are bitwise only within one device kind and, on a CPU, one thread count (it splits the
Hessian's backward reductions): a run whose tiles mix them says so where the user looks."""
from __future__ import annotations

import h5py

from conftest import cli

ARGS = ["model=digits_cnn", "data=digits", "metrics=[loss,hessian]", "grid.dims=1", "grid.resolution=3",
        "grid.tile=2", "hessian.samples=32", "hessian.max_iter=4", "launcher.workers=1"]


def test_a_resume_with_another_thread_count_says_the_tiles_differ(trained, tmp_path, monkeypatch):
    run = tmp_path / "T"
    args = [*ARGS, f"checkpoint={trained / 'last.pt'}", f"run.dir={run}"]
    monkeypatch.setenv("LANDSCAPE_THREADS", "1")
    assert "warning: tiles computed on" not in cli("landscape-surface", *args).stdout
    (run / "tiles" / "00001.h5").unlink()
    monkeypatch.setenv("LANDSCAPE_THREADS", "2")
    out = cli("landscape-surface", *args).stdout
    assert "warning: tiles computed on cpu (engine 2, 1 threads): 1 tiles; cpu (engine 2, 2 threads): 1 tiles: " \
           "values agree to rounding across these, not bitwise" in out, out
    assert "(engine 2, 2 threads): 1 tiles" in cli("landscape-status", str(run)).stdout
    with h5py.File(run / "surface.h5", "r") as f:
        assert "1 threads" in f.attrs["computed_on"] and "2 threads" in f.attrs["computed_on"]
