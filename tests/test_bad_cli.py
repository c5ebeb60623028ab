"""Bad input, broken run directories, --help and Ctrl-C: one clear line, the right exit code, nothing written.

Most cases call the commands' main() in-process (Hydra composes again on every call); Ctrl-C runs for real.
"""
import os
import signal
import subprocess
import time

import pytest

from conftest import BIN, copy_run, one_error_line
from launch import plots, status, surface, train
from launch.backends.local import worker_count
from test_bad_input import _snapshot, existing_run  # noqa: F401 (a fixture: a finished 3x3 run, one tile)


def _one_error(capsys, rc, fragment):
    """Exactly one stderr line, `error: ...` holding `fragment`, and the exit code."""
    return one_error_line(rc, capsys.readouterr().err, fragment)


BAD = {
    "resolution not a number": (["grid.resolution=abc"], "grid.resolution along x is 'abc'"),
    "fractional resolution": (["grid.resolution=2.5"], "grid.resolution along x is 2.5"),
    "three resolutions": (["grid.resolution=[5,5,5]"], "a 2D grid takes one value, or 2"),
    "one point along x": (["grid.resolution=[1,5]"], "a 2D grid needs at least 2 points per axis; use grid.dims=1"),
    "one point along y": (["grid.resolution=[5,1]"], "at least 2 points per axis"),
    "one point in 2D": (["grid.resolution=1"], "at least 2 points per axis"),
    "range not a number": (["grid.range=abc"], "grid.range is 'abc'"),
    "range of three": (["grid.range=[1,2,3]"], "grid.range is [1, 2, 3]"),
    "one axis range in 2D": (["grid.range=[[0,1]]"], "grid.range is [[0, 1]]"),
    "three axis ranges": (["grid.range=[[0,1],[0,1],[0,1]]"], "grid.range is [[0, 1], [0, 1], [0, 1]]"),
    "tile not a number": (["grid.tile=abc"], "grid.tile is 'abc'"),
    "fractional tile": (["grid.tile=2.5"], "grid.tile is 2.5"),
    "seed not a number": (["seed=abc"], "seed is 'abc'"),
    "negative width": (["model.width=-1"], "cannot build model digits_cnn from model.*: Trying to create tensor"),
    "workers negative": (["launcher.workers=-1"], "launcher.workers is -1: use a whole number of 1 or more, or auto"),
    "workers zero": (["launcher.workers=0"], "launcher.workers is 0"),
    "workers fractional": (["launcher.workers=1.5"], "launcher.workers is 1.5"),
    "workers not a number": (["launcher.workers=abc"], "launcher.workers is 'abc'"),
    "clip not a number": (["plot.clip=abc"], "plot.clip is 'abc'"),
    "negative levels": (["plot.levels=-3"], "plot.levels is -3"),
    "log scale neither true nor false": (["plot.log_scale=maybe"], "plot.log_scale is 'maybe': use true or false"),
    "unknown plot option": (["+plot.colour=red"], "plot.colour is unknown"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_surface_setting_is_one_line(case, trained, existing_run, tmp_path, capsys):
    args, fragment = BAD[case]
    before = _snapshot(existing_run)
    for run_dir in (existing_run, tmp_path / "new"):
        rc = surface.main(["model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
                           "grid.resolution=3", *args, f"run.dir={run_dir}"])
        _one_error(capsys, rc, fragment)
    assert _snapshot(existing_run) == before
    assert not (tmp_path / "new").exists()


def test_run_dir_that_is_a_file(trained, tmp_path, capsys):
    (tmp_path / "f").write_text("not a folder")
    for run_dir in (tmp_path / "f", tmp_path / "f" / "sub"):
        rc = surface.main([f"checkpoint={trained / 'last.pt'}", "grid.resolution=3", f"run.dir={run_dir}"])
        _one_error(capsys, rc, f"{tmp_path / 'f'} is a file, not a folder")
    assert (tmp_path / "f").read_text() == "not a folder"


def test_workers_auto_null_or_a_whole_number():
    assert worker_count(None) is None and worker_count("auto") is None and worker_count(3) == 3


@pytest.mark.parametrize("arg,fragment", [("plot.clip=abc", "plot.clip is 'abc'"), ("plot.levels=-3", "plot.levels"),
                                          ("plot.log_scale=maybe", "plot.log_scale is 'maybe'")])
def test_bad_plot_option_on_replot(arg, fragment, existing_run, capsys):
    before = _snapshot(existing_run)
    _one_error(capsys, plots.main([str(existing_run), arg]), fragment)
    assert _snapshot(existing_run) == before


def test_dry_run_writes_nothing(trained, existing_run, tmp_path, capsys):
    """The README's dry run names run.dir: trying other settings on it must keep working, and an existing run
    keeps its run.yaml (and gets no engine cache) untouched."""
    common = [f"checkpoint={trained / 'last.pt'}", "launcher.dry_run=true"]
    for resolution in (5, 7):
        rc = surface.main([*common, f"grid.resolution={resolution}", f"run.dir={tmp_path / 'D'}"])
        out = capsys.readouterr().out
        assert rc == 0 and f"{resolution * resolution} points" in out and "dry run: nothing written" in out, out
        assert not (tmp_path / "D").exists()
    before = _snapshot(existing_run)
    rc = surface.main([*common, "grid.resolution=3", "launcher.workers=2", f"run.dir={existing_run}"])
    assert rc == 0 and "plan: 0 of 1 tiles" in capsys.readouterr().out
    assert _snapshot(existing_run) == before


@pytest.mark.parametrize("main,expect", [(surface.main, "surface.yaml"), (plots.main, "plot.yaml"),
                                         (train.main, "train.yaml"), (status.main, "landscape-status RUN_DIR")])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(main, expect, flag, capsys):
    assert main([flag]) == 0
    out, err = capsys.readouterr()
    assert expect in out and "README.md" in out and not err
    assert ("key=value" in out) == (main is not status.main)


BROKEN = {
    "garbage run.yaml": ("run.yaml", lambda p: p.write_text("a: [b\n: :"), "run.yaml is not readable YAML"),
    "empty run.yaml": ("run.yaml", lambda p: p.write_text(""), "run.yaml is empty or lacks its config"),
    "missing directions.h5": ("directions.h5", lambda p: p.unlink(), "directions.h5 is missing"),
    "truncated directions.h5": ("directions.h5", lambda p: p.write_bytes(p.read_bytes()[:1000]),
                                "directions.h5 is unreadable (Unable to synchronously open file (truncated"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_run_directory(case, existing_run, tmp_path, capsys):
    name, damage, fragment = BROKEN[case]
    run = copy_run(existing_run, tmp_path / "run")
    damage(run / name)
    before = _snapshot(run)
    line = _one_error(capsys, status.main([str(run)]), f"{run / name} {fragment.split(' ', 1)[1]}")
    assert line.endswith(f"restore it, or delete {run} and run landscape-surface again to start this run anew")
    _one_error(capsys, surface.main([f"run.dir={run}"]), fragment)
    assert _snapshot(run) == before


def test_truncated_surface_is_rebuilt_from_the_tiles(existing_run, tmp_path, capsys):
    run = copy_run(existing_run, tmp_path / "run")
    (run / "surface.h5").write_bytes((run / "surface.h5").read_bytes()[:2000])
    _one_error(capsys, plots.main([str(run)]), f"rebuild it from the tiles with landscape-surface run.dir={run} "
                                                "launcher=none")
    assert surface.main([f"run.dir={run}", "launcher=none"]) == 0  # as the message says
    assert "1/1 tiles" in capsys.readouterr().out
    assert plots.main([str(run)]) == 0 and "train_loss_contour.png" in capsys.readouterr().out


def test_status_needs_one_run_directory(capsys):
    _one_error(capsys, status.main([]), "landscape-status takes one run directory")


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_the_rest_resumes(trained, tmp_path):
    """Ctrl-C reaches the driver and both workers (the terminal's process group): one line, exit 130, finished
    tiles kept; the same command then computes only the rest."""
    run = tmp_path / "run"
    args = [str(BIN / "landscape-surface"), f"checkpoint={trained / 'last.pt'}", "grid.resolution=13",
            "grid.tile=2", "launcher.workers=2", f"run.dir={run}"]
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731 (a background shell ignores it)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint)
    deadline = time.time() + 120
    while not list(run.glob("tiles/*.h5")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert [line for line in lines if not line.startswith("surface:")] == [lines[-1]], err  # progress lines aside
    assert lines[-1].startswith("interrupted: ") and lines[-1].endswith(
        " tiles done; run the same command again to compute only the rest"), err
    done = int(lines[-1].split()[1].split("/")[0])
    assert 1 <= done < 49, f"the interrupt came after {done} of 49 tiles: too early or too late to test anything"
    assert len(list(run.glob("tiles/*.h5"))) == done  # the line counts the tile files that exist
    leftovers = list(run.glob("tiles/.*"))
    assert not leftovers, leftovers  # no temporary file or in-progress mark of a stopped worker
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, preexec_fn=default_sigint)
    assert out.returncode == 0 and f"{done}/49 tiles done, {49 - done} to compute" in out.stdout, out.stderr
    assert "surface" in out.stdout and "49/49 tiles" in out.stdout
