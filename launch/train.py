"""`landscape-train model=... data=... train.epochs=8 run.dir=R`: R/checkpoints/epoch_000.pt ... last.pt.

The same command again finds the finished training and trains nothing (an interrupted one starts again);
a run.dir holding checkpoints of another training is refused unless `train.overwrite=true`, so
trajectories never mix.
"""
from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import yaml

from landscape import data
from landscape.engine import check_model
from landscape.errors import UserError
from landscape.hardware import check_device, pick_device
from landscape.spec import instantiate
from landscape.train import TrainConfig, check_data, train

from . import config
from .cli import user_errors

CHECKPOINT_GLOBS = ("epoch_*.pt", "last.pt", "history.json", "*.tmp")  # what a training writes


def train_config(cfg: dict[str, Any]) -> TrainConfig:
    """The checked `train.*`, `loss` and `seed` settings (a UserError naming the bad key)."""
    keys = {k: v for k, v in cfg["train"].items() if k != "overwrite"}
    unknown = sorted(set(keys) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise UserError(f"unknown setting: {', '.join('train.' + k for k in unknown)}")
    if not isinstance(cfg["train"].get("overwrite", False), bool):
        raise UserError(f"train.overwrite is {cfg['train']['overwrite']!r}: use true or false")
    return TrainConfig(**keys, loss=cfg["loss"], seed=cfg["seed"])


def _written(ckpts: Path) -> list[Path]:
    return sorted(p for pattern in CHECKPOINT_GLOBS for p in ckpts.glob(pattern))


def _differences(out: Path, cfg: dict[str, Any]) -> list[str] | None:
    """Value-changing settings that differ from the training saved in `out` (None: no train.yaml there)."""
    saved_file = out / "train.yaml"
    if not saved_file.is_file():
        return None
    return config.differences(yaml.safe_load(saved_file.read_text()), cfg)  # train.overwrite is volatile


def already_trained(out: Path, cfg: dict[str, Any]) -> bool:
    """True if `out` holds a finished training of this configuration; a UserError if it holds checkpoints
    of another one (unless train.overwrite=true: they will be replaced)."""
    ckpts = out / "checkpoints"
    if cfg["train"].get("overwrite") or not _written(ckpts):
        return False
    diffs = _differences(out, cfg)
    if diffs == []:  # this training: finished, or interrupted (then started again: nothing finished is lost)
        return (ckpts / "last.pt").is_file()
    what = f"another training ({'; '.join(diffs)})" if diffs else "a training of unknown configuration (no train.yaml)"
    raise UserError(f"{ckpts} already holds checkpoints of {what}: train.overwrite=true replaces them, "
                    "or choose another run.dir")


def _start(out: Path, cfg: dict[str, Any]) -> Path:
    """Remove the checkpoints of an earlier training (no stale epoch survives) and save the config."""
    ckpts = out / "checkpoints"
    for path in _written(ckpts):
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ckpts


@user_errors
def main(argv: list[str] | None = None) -> int:
    """Train once per configuration and run.dir; every check comes before anything is written."""
    cfg = config.load("train", list(sys.argv[1:] if argv is None else argv))
    tc = train_config(cfg)
    check_device(cfg["eval"]["device"])
    out = Path(cfg["run"]["dir"])
    if already_trained(out, cfg):
        print(f"already trained: {out / 'checkpoints' / 'last.pt'}; train.overwrite=true to train again")
        return 0
    dataset = data.load(cfg["data"])
    torch.manual_seed(tc.seed)  # the initial weights (epoch_000.pt) follow the seed too
    model = instantiate(cfg["model"])
    try:  # such a model trains, but no surface of it can be trusted: say so now, not after training
        check_model(model)
    except UserError as err:
        print(f"warning: {err}; landscape-surface refuses such a model")
    device = pick_device(cfg["eval"]["device"])
    check_data(model, dataset, tc)
    ckpts = _start(out, cfg)
    print(f"training {cfg['model']['name']} on {cfg['data']['name']} ({len(dataset.train)} samples) on {device}")
    last = train(model, dataset, tc, ckpts, device)[-1]
    result = (f"test accuracy {last['test_acc']:.1f}%" if dataset.num_classes > 0
              else f"test loss {last['test_loss']:.4g}")
    print(f"checkpoints {ckpts}: epoch_000.pt .. epoch_{tc.epochs:03d}.pt, last.pt ({result})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
