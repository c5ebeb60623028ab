"""landscape-status and a worker list a run's data files once (an image folder's are found by listing its
images, which costs on a large folder)."""
import numpy as np
import torch

from jobs import inputs
from jobs.run import RunDir
from launch import config
from launch.prepare import prepare
from landscape import data
from landscape.models import mlp


def test_status_and_worker_checks_list_the_data_files_once(tmp_path, monkeypatch):
    torch.save(mlp(4, 3, [5]).state_dict(), tmp_path / "mlp.pt")
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 4), np.float32), y=np.arange(6) % 3)
    args = ["model=mlp", "model.hidden=[5]", "data=tensors", f"data.path={tmp_path / 'd.npz'}",
            f"checkpoint={tmp_path / 'mlp.pt'}", "grid.resolution=3", f"run.dir={tmp_path / 'run'}", "launcher=none"]
    run = prepare(config.load("surface", args), args, log=lambda *_: None)
    calls = []
    listed = data.files
    monkeypatch.setattr(data, "files", lambda spec: calls.append(spec) or listed(spec))
    assert inputs.stale(RunDir(run.path)) == [] and len(calls) == 1
    inputs.check_unchanged(RunDir(run.path), {})
    assert len(calls) == 2
