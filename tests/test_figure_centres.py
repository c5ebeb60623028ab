"""The landscape figures are taken at the checkpoint, wherever each kind of directions places it, and say which
grid point stood in for it."""
import json
import re

import numpy as np
import pytest

from conftest import cli
from landscape import checkpoint, data
from landscape.figures import FigureOptions, plane_figures
from landscape.models import digits_cnn
from landscape.train import evaluate_split


def _own_loss(path) -> float:
    model = digits_cnn()
    checkpoint.load_into(model, path)
    return evaluate_split(model, data.digits().train, "cross_entropy", True)[0]


def _stats(run) -> dict[str, dict]:
    return {r["figure"]: r for r in json.loads(cli("landscape-stats", run, "--json").stdout)
            if r["loss"] == "train_loss"}


@pytest.fixture(scope="module")
def line_run(trained, tmp_path_factory):
    """The line from epoch_000 (a=0) to last (a=1), as `make demo` draws it."""
    run = tmp_path_factory.mktemp("line") / "run"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
        "directions=line", f"directions.start={trained / 'epoch_000.pt'}", "grid.resolution=5", f"run.dir={run}")
    return run


def test_a_lines_figures_are_taken_at_the_checkpoint_a_1():
    a = np.linspace(0, 1, 11)
    f = plane_figures(a, None, 2.3 - 2.2 * a, FigureOptions(radii=(0.2,)), "line")
    assert f["centre_loss"] == pytest.approx(0.1)
    assert f["max_rise_r0.2"] == pytest.approx(0.44)  # towards the start, the only side the grid holds


def test_line_run_centre_loss_is_the_checkpoints_loss(line_run, trained):
    figs = _stats(line_run)
    assert figs["centre_loss"]["mean"] == pytest.approx(_own_loss(trained / "last.pt"), rel=1e-4)
    status = cli("landscape-status", line_run).stdout
    assert re.search(rf"train_loss centre_loss +{figs['centre_loss']['mean']:.4g}\n", status)
