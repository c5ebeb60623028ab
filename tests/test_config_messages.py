"""Bad settings on the command line: one clear line naming what is wrong, and nothing written."""
from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO, cli, one_error_line


@pytest.fixture(scope="module")
def one_d(trained, tmp_path_factory):
    """A finished 1D run (3 points) of the digits CNN."""
    run = tmp_path_factory.mktemp("one_d") / "S"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", "grid.dims=1",
        "grid.resolution=3", f"run.dir={run}")
    return run


def refused(tmp_path, command: str, *args: str, fragment: str) -> str:
    """Run `command` with `args` into a fresh run.dir: exit 2, one error line holding `fragment`, no run.dir."""
    run = tmp_path / "refused"
    r = cli(command, *args, f"run.dir={run}", check=False)
    assert not run.exists(), list(run.rglob("*"))
    return one_error_line(r.returncode, r.stderr, fragment)


def test_a_checkpoint_folder_is_named_a_folder(trained, tmp_path):
    refused(tmp_path, "landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained}",
            fragment=f"checkpoint {trained} is a directory, not a file")


def test_a_wrong_cifar_folder_reads_the_same_for_surface_and_train(trained, tmp_path):
    for command, extra in (("landscape-surface", [f"checkpoint={trained / 'last.pt'}"]), ("landscape-train", [])):
        refused(tmp_path, command, "model=resnet20", "data=cifar10", f"data.root={tmp_path}", *extra,
                fragment=f"CIFAR-10 folder {tmp_path} lacks data_batch_1")


def test_another_directions_kind_on_a_run_names_the_run_s_kind(trained, tmp_path):
    run = tmp_path / "L"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", "directions=line",
        f"directions.start={trained / 'epoch_000.pt'}", "grid.resolution=3", f"run.dir={run}")
    before = sorted(run.rglob("*"))
    r = cli("landscape-surface", "directions=plane", f"directions.points=[{trained / 'epoch_000.pt'},"
            f"{trained / 'epoch_004.pt'}]", f"run.dir={run}", check=False)
    one_error_line(r.returncode, r.stderr, f"{run} holds a directions=line run, not directions=plane: give a new "
                   "run.dir")
    assert sorted(run.rglob("*")) == before


def test_a_key_of_another_choice_names_the_choice_that_has_it(trained, tmp_path):
    args = ["model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}"]
    refused(tmp_path, "landscape-surface", *args, "launcher.partition=gpu",
            fragment="launcher.partition is a setting of launcher=slurm, not of launcher=local")
    refused(tmp_path, "landscape-surface", *args, "directions=pca", "directions.planes=3",
            fragment="directions.planes is a setting of directions=random, not of directions=pca")


def test_an_unknown_plot_metric_is_refused_with_the_names_the_surface_holds(one_d):
    r = cli("landscape-plot", str(one_d), "+plot.metrics=[trian_loss]", "plot.dir=" + str(one_d / "new"), check=False)
    one_error_line(r.returncode, r.stderr, f"plot.metrics: {one_d / 'surface.h5'} holds no trian_loss; it holds "
                   "train_acc, train_loss")
    assert not (one_d / "new").exists()


def test_an_interactive_page_of_a_1d_surface_is_refused_in_one_line(one_d):
    r = cli("landscape-plot", str(one_d), "plot.html=true", "plot.dir=" + str(one_d / "page"), check=False)
    one_error_line(r.returncode, r.stderr, f"plot.html=true: {one_d} is a 1D surface")
    assert not (one_d / "page").exists()


def test_landscape_surface_refuses_a_1d_page_first_and_warns_of_an_unknown_metric_after(trained, tmp_path):
    """plot.html on a 1D run is known from the settings: refused before anything is written. A plot.metrics name
    is known only once the surface is computed: a warning line then, the surface kept."""
    base = ["model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", "grid.dims=1", "grid.resolution=3"]
    refused(tmp_path, "landscape-surface", *base, "plot.html=true", fragment="plot.html=true: this run is a 1D surface")
    run = tmp_path / "kept"
    r = cli("landscape-surface", *base, "+plot.metrics=[trian_loss]", f"run.dir={run}")
    assert (run / "surface.h5").is_file()
    line = f"warning: plot.metrics: {run / 'surface.h5'} holds no trian_loss; it holds train_acc, train_loss"
    assert line in r.stdout, r.stdout


def test_a_list_without_brackets_says_how_to_write_it(trained, tmp_path):
    refused(tmp_path, "landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
            "metrics=loss,hessian",
            fragment="metrics=loss,hessian: a list is written in brackets and quoted in the shell: "
                     "'metrics=[loss,hessian]'")


def test_the_readme_grid_defaults_are_conf_s_and_typed_as_such(trained, tmp_path):
    conf = yaml.safe_load((REPO / "conf" / "surface.yaml").read_text())["grid"]
    rows = re.findall(r"^\| `grid\.(\w+)` \| ([^|]+) \|", (REPO / "README.md").read_text(), re.M)
    assert {k for k, _ in rows} == set(conf)
    for key, default in rows:
        assert yaml.safe_load(default.strip().strip("`")) == conf[key], key
    refused(tmp_path, "landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
            "grid.range=auto", fragment="or null for the default")
