"""A surface with points still to compute has no figures anywhere: landscape-stats refuses it, landscape-status
and a comparison's figures.txt say why they hold its figures back."""
import shutil

import pytest

from conftest import cli, one_error_line


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    """A finished 4x4 run in 2x2 tiles, and a copy with one tile lost, merged as it stands (launcher=none)."""
    root = tmp_path_factory.mktemp("partial")
    full, part = root / "full", root / "part"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
        "grid.resolution=5", "grid.tile=3", f"run.dir={full}")
    shutil.copytree(full, part)
    (part / "tiles" / "00000.h5").unlink()  # the 3x3 corner around (-1, -1)
    cli("landscape-surface", f"run.dir={part}", "launcher=none")
    return full, part


def test_stats_refuses_a_partial_surface(runs):
    full, part = runs
    proc = cli("landscape-stats", full, part, check=False)
    line = one_error_line(proc.returncode, proc.stderr, f"{part} is not finished, 9 of 25 points are not computed")
    assert f"landscape-surface run.dir={part} computes the rest" in line
    assert "centre_loss" in cli("landscape-stats", full).stdout


def test_status_and_comparison_hold_the_partial_figures_back(runs, tmp_path):
    full, part = runs
    status = cli("landscape-status", part).stdout
    assert f"figures: {part} is not finished, 9 of 25 points" in status and "centre_loss" not in status
    out = cli("landscape-plot", full, part, f"plot.dir={tmp_path / 'cmp'}").stdout
    table = (tmp_path / "cmp" / "figures.txt").read_text()
    assert table.splitlines()[0].split()[1:] == ["full", "(1", "plane)"]  # the finished run's column only
    assert f"{part} is not finished, 9 of 25 points" in table and table.rstrip() in out
