"""What a newcomer met: each refused in one line before anything is written, or reported as unknown
rather than as a number."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import cli, one_error_line
from landscape import checkpoint
from landscape.errors import UserError
from landscape.figures import FigureOptions, plane_figures
from landscape.images import Transform
from landscape.models import digits_cnn


def test_a_radius_under_the_grid_spacing_is_no_figure():
    x = y = np.linspace(-1, 1, 5)  # spacing 0.5
    z = np.add.outer(y**2, x**2)
    figs = plane_figures(x, y, z, FigureOptions(radii=(0.25, 0.5), delta=0.1, factor=None))
    assert math.isnan(figs["max_rise_r0.25"]) and math.isnan(figs["sharpness_r0.25"])
    assert figs["max_rise_r0.5"] == pytest.approx(0.25)


def test_a_crop_larger_than_the_resize_is_a_settings_error():
    with pytest.raises(UserError, match="data.crop 64 is larger than data.resize 40"):
        Transform.parse("imagenet", 40, 64)
    assert Transform.parse("imagenet", 40, 40).crop == 40


def test_model_weights_with_a_prefix_names_no_setting_it_lacks(tmp_path):
    """model.weights takes a plain state_dict: its refusal must not suggest checkpoint.strip_prefix."""
    model = digits_cnn(num_classes=10)
    torch.save({f"model.{k}": v for k, v in model.state_dict().items()}, tmp_path / "light.pt")
    with pytest.raises(UserError, match="starts with 'model.': save model.state_dict\\(\\) without it") as err:
        checkpoint.load_into(digits_cnn(num_classes=10), tmp_path / "light.pt", strip=None)
    assert "strip_prefix" not in str(err.value)
    with pytest.raises(UserError, match="checkpoint.strip_prefix=model. removes it"):
        checkpoint.load_into(digits_cnn(num_classes=10), tmp_path / "light.pt")


def test_more_hessian_samples_than_the_split_holds_is_refused(trained, tmp_path):
    proc = cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
               "metrics=[loss,hessian]", "hessian.samples=100000", "grid.resolution=3", f"run.dir={tmp_path / 'H'}",
               check=False)
    one_error_line(proc.returncode, proc.stderr, "hessian.samples is 100000 but the train split holds 1438")
    assert not (tmp_path / "H").exists()
