"""`landscape-train model=... data=... train.epochs=8 run.dir=R`: R/checkpoints/epoch_000.pt ... last.pt.

The same command again finds the finished training and trains nothing; with a larger train.epochs (nothing
else changed) it continues it from its last epoch, as does the same command after an interruption. A
run.dir holding checkpoints of another training is refused unless `train.overwrite=true`, so trajectories
never mix.
"""
from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml

from landscape import data
from landscape.engine import check_model
from landscape.errors import UserError
from landscape.hardware import check_device, pick_device
from landscape.spec import instantiate
from landscape.train import FRESH, RESUME, Resume, TrainConfig, check_data, resume_point, train

from jobs import inputs
from . import config
from .cli import user_errors

CHECKPOINT_GLOBS = ("epoch_*.pt", "last.pt", "history.json", RESUME, "*.tmp")  # what a training writes


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


def _saved(out: Path) -> dict[str, Any] | None:
    saved_file = out / "train.yaml"
    return yaml.safe_load(saved_file.read_text()) if saved_file.is_file() else None


def _differences(out: Path, cfg: dict[str, Any]) -> list[str] | None:
    """Value-changing settings that differ from the training saved in `out` (None: no train.yaml there)."""
    saved = _saved(out)
    if saved is None:
        return None
    saved.pop("data_files", None)  # the data's digests: compared by _data_changed
    return config.differences(saved, cfg)  # train.overwrite is volatile


def _data_changed(out: Path, cfg: dict[str, Any]) -> list[str]:
    """The data files whose contents differ from those the training in `out` was trained on, in words."""
    return inputs.changed((_saved(out) or {}).get("data_files") or {}, inputs.digests(data.files(cfg["data"]), {}))


def start_epoch(out: Path, cfg: dict[str, Any], epochs: int) -> Resume | None:
    """Where this training starts in `out`: None, it is finished there; FRESH, from the initial weights (what
    is there goes); after epoch k of the training there (the same settings but train.epochs, or the same
    training interrupted). A UserError if `out` holds checkpoints that this training cannot continue."""
    ckpts = out / "checkpoints"
    if cfg["train"].get("overwrite") or not _written(ckpts):
        return FRESH
    diffs = _differences(out, cfg)
    if diffs is None:
        _refuse(ckpts, "a training of unknown configuration (no train.yaml)")
    done = resume_point(ckpts)
    changed = _data_changed(out, cfg)
    if changed:  # continuing on other data would make one trajectory of two data sets (PCA)
        raise UserError(f"{'; '.join(changed)}: the checkpoints in {ckpts} were trained on the old contents; "
                        "train.overwrite=true trains anew, or choose another run.dir")
    if any(not d.startswith("train.epochs:") for d in diffs):
        _refuse(ckpts, f"another training ({'; '.join(diffs)}); only train.epochs may change to continue it")
    if diffs and done is None:
        _refuse(ckpts, f"another training ({'; '.join(diffs)}) without the optimizer state ({RESUME}) to continue it")
    if not diffs and (ckpts / "last.pt").is_file():
        return None
    if done is not None and done.epoch > epochs:
        raise UserError(f"{ckpts} holds {done.epoch} trained epochs, more than train.epochs={epochs}: use "
                        f"train.epochs={done.epoch} or more to continue it, train.overwrite=true to train anew, "
                        "or choose another run.dir")
    return done if done and done.epoch else FRESH  # without a complete epoch it starts again: nothing is lost


def _refuse(ckpts: Path, what: str) -> NoReturn:
    raise UserError(f"{ckpts} already holds checkpoints of {what}: train.overwrite=true replaces them, "
                    "or choose another run.dir")


def _start(out: Path, cfg: dict[str, Any], start: int) -> Path:
    """Remove what this training writes again (no stale epoch survives: from the initial weights, every
    checkpoint; continuing after epoch `start`, the later ones and last.pt) and save the config."""
    ckpts = out / "checkpoints"
    kept = {f"epoch_{e:03d}.pt" for e in range(start + 1)} | {RESUME} if start else set()
    for path in _written(ckpts):
        if path.name not in kept:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    record = {**cfg, "data_files": inputs.digests(data.files(cfg["data"]), {})}  # a continuation checks them
    (out / "train.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    return ckpts


def _schedule_note(out: Path, cfg: dict[str, Any], tc: TrainConfig) -> str:
    """Said when continuing to another train.epochs with train.anneal_epochs unset: the cosine schedule ends
    at train.epochs, so the rates change from here on and the weights differ from a training in one go."""
    if tc.anneal_epochs is not None or not _differences(out, cfg):
        return ""
    return (f"note: the cosine schedule now ends at epoch {tc.epochs}, so the weights will differ from "
            f"{tc.epochs} epochs in one go (train.anneal_epochs={tc.epochs} from the start makes them equal)\n")


@user_errors
def main(argv: list[str] | None = None) -> int:
    """Train once per configuration and run.dir; every check comes before anything is written."""
    cfg = config.load("train", list(sys.argv[1:] if argv is None else argv))
    if cfg["data"]["name"] == "imagefolder":  # training reads train/ and reports val/, whatever data.split
        cfg["data"]["split"] = "both"  # (the splits a surface evaluates; the only loader that reads fewer)
    tc = train_config(cfg)
    check_device(cfg["eval"]["device"])
    out = Path(cfg["run"]["dir"])
    data.ready(cfg["data"])  # an image folder's cache, before its digest is compared or recorded
    start = start_epoch(out, cfg, tc.epochs)
    if start is None:
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
    first = start.epoch
    note = _schedule_note(out, cfg, tc) if first else ""
    ckpts = _start(out, cfg, first)
    what = f"from {ckpts / f'epoch_{first:03d}.pt'} to epoch {tc.epochs}" if first else f"{tc.epochs} epochs"
    print(f"{note}training {cfg['model']['name']} {what} on {cfg['data']['name']} "
          f"({len(dataset.train)} samples) on {device}")
    last = train(model, dataset, tc, ckpts, device, start=start)[-1]
    result = (f"test accuracy {last['test_acc']:.1f}%" if dataset.num_classes > 0
              else f"test loss {last['test_loss']:.4g}")
    print(f"checkpoints {ckpts}: epoch_000.pt .. epoch_{tc.epochs:03d}.pt, last.pt ({result})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
