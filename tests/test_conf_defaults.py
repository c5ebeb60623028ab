"""The library's own defaults (for notebooks, and figures.rows without settings) are conf/'s: one set of values."""
from __future__ import annotations

from dataclasses import fields

import yaml

from conftest import REPO
from landscape.figures import FigureOptions, figure_options
from landscape.plot import PlotOptions


def _conf(path: str) -> dict:
    return yaml.safe_load((REPO / "conf" / path).read_text())


def test_figure_options_defaults_are_conf_surface_figures():
    conf = _conf("surface.yaml")["figures"]
    assert set(conf) == {f.name for f in fields(FigureOptions)}
    assert figure_options(conf) == FigureOptions()


def test_plot_options_defaults_are_conf_plot_default():
    conf = _conf("plot/default.yaml")
    defaults = {f.name: f.default for f in fields(PlotOptions)}
    assert set(conf) <= set(defaults)
    assert {k: defaults[k] for k in conf} == conf
