"""Bad input stops before any compute with one clear line (exit 2) and leaves existing runs alone."""
import numpy as np
import pytest
import torch

from conftest import cli, one_error_line
from landscape.errors import UserError
from landscape.models import resnet20
from launch import config


@pytest.fixture(scope="module")
def existing_run(trained, tmp_path_factory):
    run = tmp_path_factory.mktemp("existing") / "run"
    cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
        "grid.resolution=3", f"run.dir={run}")
    return run


def _snapshot(run):
    return sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*"))


def _resnet_checkpoint(path):
    torch.save({"state_dict": resnet20(num_classes=10, in_channels=1).state_dict()}, path)
    return path


CASES = {
    "zero resolution": (["grid.resolution=0"], "grid.resolution along x is 0"),
    "negative resolution": (["grid.resolution=[5,-2]"], "grid.resolution along y is -2"),
    "empty range": (["grid.range=[1,1]"], "is empty"),
    "missing checkpoint": (["checkpoint=/nonexistent/last.pt"], "checkpoint /nonexistent/last.pt does not exist"),
    "unknown model": (["model=resnet9000"], "resnet9000"),
    "unknown data": (["data=imagenet22k"], "imagenet22k"),
    "data of the wrong shape": (["model=mlp", "model.in_features=100", "model.out_features=10"], "does not fit"),
    "pca with two checkpoints": (["directions=pca", "directions.checkpoints=[{a},{b}]"], "at least 3 checkpoints"),
    "checkpoint of another architecture": (["checkpoint={resnet}"], "does not fit digits_cnn"),
    "missing required setting": (["directions=line"], "directions.start"),
    "unknown engine mode": (["eval.mode=fast"], "eval.mode 'fast' is unknown"),
    "engine switch neither true nor false": (["eval.cuda_graph=maybe"], "eval.cuda_graph is 'maybe'"),
    "subset that is not a count": (["data.subset=abc"], "data.subset is 'abc': use a number of samples"),
    "one point on an axis of a 2D grid": (["grid.resolution=[1,5]"], "a 2D grid needs at least 2 points per axis"),
    "no workers": (["launcher.workers=-1"], "launcher.workers is -1"),
    "model that cannot be built": (["model.width=-1"], "cannot build model digits_cnn from model.*"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(case, trained, existing_run, tmp_path):
    args, message = CASES[case]
    resnet = _resnet_checkpoint(tmp_path / "resnet.pt")
    args = [a.format(a=trained / "epoch_000.pt", b=trained / "last.pt", resnet=resnet) for a in args]
    before = _snapshot(existing_run)
    for run_dir in (existing_run, tmp_path / "new"):
        out = cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}",
                  "grid.resolution=3", *args, f"run.dir={run_dir}", check=False)
        one_error_line(out.returncode, out.stderr, message)
    assert _snapshot(existing_run) == before
    assert not (tmp_path / "new" / "run.yaml").exists()


def test_checkpoint_mismatch_names_keys_and_shapes(trained, tmp_path):
    state = torch.load(trained / "last.pt", weights_only=True)["state_dict"]
    state["extra.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(8, 1, 3, 3)
    del state["8.bias"]
    torch.save(state, tmp_path / "odd.pt")  # a plain state_dict is accepted too
    out = cli("landscape-surface", "model=digits_cnn", "data=digits", f"checkpoint={tmp_path / 'odd.pt'}",
              f"run.dir={tmp_path / 'r'}", check=False)
    assert out.returncode == 2
    for piece in ("missing keys: 8.bias", "unexpected keys: extra.weight", "0.weight (8, 1, 3, 3) vs (16, 1, 3, 3)"):
        assert piece in out.stderr


@pytest.mark.parametrize("kind", ["garbage", "empty"])
def test_corrupt_checkpoint(tmp_path, kind):
    data = np.arange(100, dtype=np.uint8).tobytes() if kind == "garbage" else b""
    (tmp_path / "bad.pt").write_bytes(data)
    out = cli("landscape-surface", f"checkpoint={tmp_path / 'bad.pt'}", f"run.dir={tmp_path / 'r'}", check=False)
    lines = out.stderr.strip().splitlines()
    expected = "is not a PyTorch checkpoint" if kind == "garbage" else "is empty (0 bytes)"
    assert out.returncode == 2 and len(lines) == 1 and expected in lines[0], out.stderr
    assert not (tmp_path / "r").exists()


def test_plot_of_missing_run(tmp_path):
    """The console script itself, once: its exit code and its one line, through the installed entry point."""
    out = cli("landscape-plot", tmp_path / "nothing", check=False, process=True)
    assert out.returncode == 2 and "landscape-surface first" in out.stderr
    out = cli("landscape-status", tmp_path / "nothing", check=False)
    assert out.returncode == 2 and "not a run directory" in out.stderr


@pytest.mark.parametrize("overrides, hint", [
    (["grid.tlie=3"], "unknown setting grid.tlie (did you mean grid.tile?)"),
    (["modle=resnet20"], "unknown setting modle (did you mean model?)"),
    (["model=mlp", "model.hiden=[3]"], "unknown setting model.hiden (did you mean model.hidden?)"),
])
def test_mistyped_key_names_the_closest_known_one(overrides, hint):
    with pytest.raises(UserError) as err:
        config.load("surface", overrides)
    assert str(err.value).startswith(hint) and "conf/surface.yaml" in str(err.value)
