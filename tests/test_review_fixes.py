"""Small bugs a review found, each pinned by a test that failed before its fix."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, cli, one_error_line
from landscape import data, directions, figures, imagefolder
from landscape.engine import Evaluator
from landscape.engine.curvature import Hessian, HessianOptions
from landscape.errors import UserError
from landscape.figures import mean_std
from landscape.images import decode
from landscape.spec import local_imports
from landscape.models import mlp
from landscape.train import RESUME
from launch import backends, stats, surface, train
from test_imagefolder import BUILDER, SMALL, load, make_folder

HESSIAN = HessianOptions(params="all", tol=1e-3, max_iter=8, trace_probes=0, split="train", samples=None,
                         batch_size=None)


class CountedHessian(Hessian):
    """The Hessian metric, counting the points it measured."""

    measured = 0

    def measure(self, forward):
        values = super().measure(forward)
        self.measured += len(values["max_eig"])
        return values


def test_an_overflow_recompute_leaves_the_fp32_curvature_alone():
    """fp16 logits past 65504 at a point: the loss is recomputed in fp32, the Hessian (always fp32) is not
    measured again: each point once, with the values of an fp32 run."""
    g = torch.Generator().manual_seed(0)
    split = data.Split(torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g))
    torch.manual_seed(0)
    model = mlp(8, 3, [16])
    with torch.no_grad():
        model[-1].weight.mul_(1e5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "none", 0)
    coords = np.array([[0.0, 0.0], [0.1, 0.1], [0.2, -0.1]])
    runs = {}
    for precision in ("fp32", "fp16"):
        hessian = CountedHessian(HESSIAN, "cross_entropy", True, names, 0)
        ev = Evaluator(mlp(8, 3, [16]), state, dirs, {"train": split}, 3, precision=precision, metrics=[hessian])
        runs[precision] = ev.evaluate(coords), ev.last_info, hessian.measured
    (ref, _, _), (out, info, measured) = runs["fp32"], runs["fp16"]
    assert info["recomputed_fp32"] >= 1
    assert measured == len(coords) and info["hessian_points"] == len(coords)
    np.testing.assert_allclose(out["train_loss"], ref["train_loss"], rtol=1e-3)
    np.testing.assert_array_equal(out["max_eig"], ref["max_eig"])


def test_continuing_a_training_reads_resume_pt_once(tmp_path, monkeypatch):
    """The optimizer state and history in resume.pt are read when the continuation is planned, and used."""
    tiny = ["model=digits_cnn", "data=digits", "eval.device=cpu", f"run.dir={tmp_path}"]
    assert train.main([*tiny, "train.epochs=1"]) == 0
    reads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: reads.append(Path(f).name) or load(f, *a, **kw))
    assert train.main([*tiny, "train.epochs=2"]) == 0
    assert reads.count(RESUME) == 1


def _cache_leftovers(folder: Path) -> list[str]:
    return sorted(p.name.split(".npy")[-1] for p in (folder / ".landscape-cache").glob("*.npy.*"))


def test_a_failed_decode_leaves_no_partial_progress_nor_lock(tmp_path, monkeypatch):
    """A corrupt image stops the build after some rows were flushed: a partial of that listing could never be
    resumed (mending the image changes the cache's name), so nothing of the build is left but the error."""
    folder = make_folder(tmp_path / "images")
    (folder / "emu" / "zz.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # the last image
    monkeypatch.setattr(imagefolder, "CHUNK", 3)
    monkeypatch.setattr(imagefolder, "FLUSH_SECONDS", 0.0)
    with pytest.raises(UserError, match="zz.jpg cannot be decoded"):
        load(folder)
    assert (folder / ".landscape-cache").is_dir() and _cache_leftovers(folder) == []
    (folder / "emu" / "zz.jpg").unlink()
    assert len(load(folder).train) == 16 and _cache_leftovers(folder) == []


KILLED_HOLDER = textwrap.dedent("""
    import fcntl, os, sys
    lock = open(sys.argv[1], "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    open(sys.argv[2], "wb").write(b"half an array")
    os.kill(os.getpid(), 9)
""")


def test_a_builder_killed_while_holding_the_lock_blocks_no_later_build(tmp_path):
    """The lock is the kernel's (flock), released with its holder: its file left behind blocks nothing."""
    folder = make_folder(tmp_path / "images")
    cache = imagefolder.cached({"root": str(folder), **SMALL}, ("train",))[2]["train"]
    cache.parent.mkdir()
    lock, partial = (cache.with_name(cache.name + s) for s in (".lock", ".partial"))
    proc = subprocess.run([sys.executable, "-c", KILLED_HOLDER, str(lock), str(partial)])
    assert proc.returncode == -9 and lock.is_file() and partial.is_file()
    assert len(load(folder).train) == 16 and _cache_leftovers(folder) == []


def test_a_waiter_on_a_removed_lock_file_takes_the_new_one(tmp_path):
    """A builder removes the lock file as it leaves; one that waited on that file then holds a lock nobody
    else can see, so it takes the path's lock again (waiting once more while another holds the new file)."""
    folder = make_folder(tmp_path / "images")
    opts, lsts, caches = imagefolder.cached({"root": str(folder), **SMALL}, ("train",))
    cache = caches["train"]
    cache.parent.mkdir()
    lock = cache.with_name(cache.name + ".lock")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(lock, "a") as old:
        fcntl.flock(old, fcntl.LOCK_EX)
        proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(folder)], env=env, stderr=subprocess.PIPE,
                                text=True)
        assert "waiting for another process" in proc.stderr.readline()
        lock.unlink()  # as a finishing builder does, while holding it
        with open(lock, "a") as new:  # and a third process takes the path's new lock file
            fcntl.flock(new, fcntl.LOCK_EX)
            fcntl.flock(old, fcntl.LOCK_UN)
            assert "waiting for another process" in proc.stderr.readline()
            assert not cache.is_file()
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    fresh = np.stack([decode(str(folder / f), opts.transform) for f in lsts["train"].files])
    assert np.array_equal(np.load(cache), fresh) and _cache_leftovers(folder) == []


OWN_NET = '''from torch import nn

from zoo_review_blocks import WIDTH


def make_net(num_classes=10):
    return nn.Sequential(nn.Conv2d(1, WIDTH, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(WIDTH * 64, num_classes))
'''


def test_a_new_file_beside_a_factory_does_not_block_a_resume_an_edit_of_what_it_imports_does(tmp_path, monkeypatch):
    """The fingerprint covers the factory's module and the modules beside it that it imports, not the folder."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "zoo_review_net.py").write_text(OWN_NET)
    (proj / "zoo_review_blocks.py").write_text("WIDTH = 4\n")
    monkeypatch.chdir(proj)
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                   torch.nn.Linear(4 * 64, 10)).state_dict(), proj / "net.pt")
    args = ["model=custom", "model._target_=zoo_review_net.make_net", "checkpoint=net.pt", "data=digits",
            "grid.resolution=3", "grid.tile=9", "launcher.workers=1", "run.dir=run"]
    cli("landscape-surface", *args)
    inputs = yaml.safe_load((proj / "run" / "run.yaml").read_text())["inputs"]
    assert {str(proj / "zoo_review_net.py"), str(proj / "zoo_review_blocks.py")} <= set(inputs)
    (proj / "unrelated_notes.py").write_text("print('not imported by the model')\n")
    cli("landscape-surface", *args)
    for edited in ("zoo_review_blocks.py", "zoo_review_net.py"):
        (proj / edited).write_text((proj / edited).read_text() + "# edited\n")
        proc = cli("landscape-surface", *args, check=False)
        one_error_line(proc.returncode, proc.stderr, f"{proj / edited} changed")
        (proj / edited).write_text((proj / edited).read_text().removesuffix("# edited\n"))


def test_the_imports_beside_a_module_are_read_from_its_statements(tmp_path):
    """Absolute and relative, transitive, within the folder; a module of the folder it does not import, a
    package or a module elsewhere, is not among them."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "net.py").write_text("import os\nfrom .blocks import Block\nfrom pkg import heads\nimport pkg.init_w\n")
    (pkg / "blocks.py").write_text("from . import acts\n")
    for name in ("heads", "init_w", "acts", "unused"):
        (pkg / f"{name}.py").write_text("import torch\n")
    assert local_imports(pkg / "net.py", "pkg") == [pkg / f"{n}.py" for n in ("acts", "blocks", "heads", "init_w")]
    (tmp_path / "top.py").write_text("import helper, numpy\nfrom helper2 import x\n")
    (tmp_path / "helper.py").write_text("")
    (tmp_path / "helper2.py").write_text("")
    assert local_imports(tmp_path / "top.py", "") == [tmp_path / "helper.py", tmp_path / "helper2.py"]


def test_a_setting_of_another_kind_of_directions_says_so(tmp_path):
    """directions.planes exists, for directions=random: the message says that, not a near spelling."""
    args = ["directions=plane", "directions.points=[a.pt,b.pt]", "checkpoint=c.pt", f"run.dir={tmp_path / 'r'}"]
    proc = cli("landscape-surface", *args, "directions.planes=3", check=False)
    line = one_error_line(proc.returncode, proc.stderr, "directions.planes is a setting of directions=random, "
                          "not of directions=plane (which takes directions.points, directions.orthogonalize, "
                          "directions.norm, directions.ignore)")
    assert "did you mean" not in line
    proc = cli("landscape-surface", *args, "directions.pointz=3", check=False)
    one_error_line(proc.returncode, proc.stderr, "unknown setting directions.pointz (did you mean directions.points?)")


def test_comparing_a_run_with_itself_is_one_line_naming_it(tmp_path, monkeypatch):
    """Before anything is read: the same run twice, however spelled, is a slip, not a comparison."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "A").mkdir()
    for twice in (["A", "A"], ["A", "./A/", str(tmp_path / "B"), str(tmp_path / "A")]):
        proc = cli("landscape-plot", *twice, check=False)
        one_error_line(proc.returncode, proc.stderr, f"run {tmp_path / 'A'} is given twice: a comparison needs "
                       "different runs (landscape-plot A alone redraws its plots)")


@pytest.mark.parametrize("command, typo, meant", [("landscape-stats", "--jsn", "--json"),
                                                  ("landscape-surface", "--hlp", "--help"),
                                                  ("landscape-plot", "-help", "--help")])
def test_a_misspelled_option_is_one_line_with_the_option_meant(tmp_path, command, typo, meant):
    """Checked before any argument is read (the run directory need not exist)."""
    proc = cli(command, str(tmp_path / "A"), typo, check=False)
    one_error_line(proc.returncode, proc.stderr, f"unknown option {typo} (did you mean {meant}?)")


def test_the_backends_that_compute_elsewhere_are_the_schedulers():
    assert {n for n in backends.names() if backends.get(n).elsewhere} == {"slurm", "pbs"}


@pytest.mark.parametrize("launcher", ["slurm", "pbs"])
def test_a_dry_run_of_a_backend_computing_elsewhere_warns_of_a_node_local_run_dir(base_args, tmp_path, launcher,
                                                                                   monkeypatch, capsys):
    """One check in the driver, by capability: the dry run warns as the submission does, of the run directory
    the user named (not the dry run's scratch folder)."""
    monkeypatch.delenv("LANDSCAPE_SINGLE_NODE", raising=False)
    run = tmp_path / "R"
    args = [*base_args, "grid.resolution=3", f"launcher={launcher}", "launcher.max_array_size=10",
            "launcher.dry_run=true", f"run.dir={run}"]
    assert surface.main(args) == 0
    out = capsys.readouterr().out
    assert f"warning: {run.resolve()} looks node-local" in out and "dry run: nothing written" in out
    assert surface.main([*args[:3], "launcher=local", "launcher.dry_run=true", f"run.dir={run}"]) == 0
    assert "node-local" not in capsys.readouterr().out


def test_identical_values_over_planes_have_no_spread_and_their_own_mean():
    """Round-off made a spread of 1e-16 out of identical values (a centre loss, the same on every plane)."""
    for v in (0.1, 0.7, 2.3025850929940455):
        mean, std = mean_std(np.full((3, 2), v))
        assert (mean == v).all() and (std == 0).all()
    planes = np.array([[1.0, np.nan], [3.0, 2.0]])
    mean, std = mean_std(planes)
    assert mean[0] == 2.0 and std[0] == pytest.approx(np.sqrt(2)) and np.isnan(mean[1]) and np.isnan(std[1])


def test_one_planes_spread_is_undefined_not_zero(tmp_path, monkeypatch):
    """A sample standard deviation needs two planes: null in landscape-stats --json, NaN in the file."""
    x = np.linspace(-1, 1, 5)
    z = x[None, :] ** 2 + x[:, None] ** 2 + 0.1
    path = tmp_path / "surface.h5"
    with h5py.File(path, "w") as f:
        f["xcoordinates"], f["ycoordinates"], f["train_loss"] = x, x, z
        f["done"] = np.ones_like(z, dtype=bool)
    rows = figures.rows(path)
    assert rows and all(r["std"] is None and r["planes"] == 1 for r in rows)
    assert np.isnan(mean_std(np.ones((1, 3)))[1]).all()
    assert "+-" not in figures.table(rows)
    monkeypatch.setattr(stats, "run_rows", lambda run: figures.rows(path))  # a surface file without its run
    out = json.loads(cli("landscape-stats", "R", "--json").stdout, parse_constant=pytest.fail)  # no NaN: JSON
    centre = next(r for r in out if r["figure"] == "centre_loss")
    assert centre["std"] is None and centre["mean"] == pytest.approx(0.1)
