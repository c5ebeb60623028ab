"""A plain training loop on device-resident data that saves a checkpoint per epoch (PCA needs them) and can
continue: after each epoch `resume.pt` holds the optimizer state, and each epoch's batch order and
learning rates depend on the seed and the epoch alone."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import load_state
from .data import Data, Split
from .errors import UserError, first_line, real_number, whole_number
from .engine.metrics import check_data_fits, check_loss, loss_sum

RESUME = "resume.pt"  # beside the epoch files: the optimizer state and history after the last complete epoch


@dataclass
class TrainConfig:
    """Plain SGD with momentum and a cosine schedule: what Li et al. used, minus augmentation."""

    epochs: int = 8
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    anneal_epochs: int | None = None  # the cosine reaches 0 at the end of this epoch; None: at `epochs`
    loss: str = "cross_entropy"
    seed: int = 0

    def __post_init__(self) -> None:
        """Bad values are a UserError naming the key (`train.lr`, `loss`), raised before anything trains."""
        check_loss(self.loss)
        whole_number(self.seed, "seed", None)
        whole_number(self.epochs, "train.epochs", 0)
        whole_number(self.batch_size, "train.batch_size", 1)
        real_number(self.lr, "train.lr", 0, above=True)
        real_number(self.momentum, "train.momentum", 0)
        real_number(self.weight_decay, "train.weight_decay", 0)
        if self.anneal_epochs is not None:
            whole_number(self.anneal_epochs, "train.anneal_epochs", 1, ", or null (train.epochs)")
            if self.anneal_epochs < self.epochs:
                raise UserError(f"train.anneal_epochs is {self.anneal_epochs}, below train.epochs {self.epochs}: "
                                f"the learning rate would be 0 after epoch {self.anneal_epochs}; use "
                                f"{self.epochs} or more, or null (the schedule ends at train.epochs)")

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate of a step counted from the first: cosine from `lr` to 0 over `anneal_epochs`.
        A closed form of the step and the schedule's end, so a continued training takes the rates that a
        training in one go with the same end takes."""
        total = max(1, (self.anneal_epochs or self.epochs) * steps_per_epoch)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))


def check_data(model: nn.Module, data: Data, cfg: TrainConfig) -> None:
    """A UserError when the data do not fit the model or the loss (cross_entropy on regression), before training."""
    check_loss(cfg.loss, data.num_classes > 0)
    if data.train is None or data.test is None:  # an image folder loads only the splits asked for
        raise UserError("training needs a train and a test split (an image folder: a root with train/ and val/)")
    check_data_fits(model, data.train, data.num_classes)


def evaluate_split(model: nn.Module, split: Split, loss: str, classify: bool, batch: int = 1024) -> tuple[float, float]:
    """(mean loss, accuracy percent) of `model` in eval mode over a split."""
    model.eval()
    total, count, correct = 0.0, 0, 0
    with torch.inference_mode():
        for start in range(0, len(split), batch):
            out = model(split.inputs(start, start + batch))
            y = split.y[start:start + batch]
            s, n = loss_sum(out, y, loss, classify)
            total, count = total + float(s), count + n
            correct += int((out.argmax(1) == y).sum()) if classify else 0
    return total / count, 100.0 * correct / len(split)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's batch order and random layers (dropout), from (seed, epoch) alone: epoch 9
    draws the same whether the training ran in one go or continued after epoch 8."""
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class Resume:
    """Where a training starts: after epoch `epoch` with the optimizer state and history of `resume.pt`, or
    (FRESH) from the model's own weights."""

    epoch: int
    optimizer: dict[str, Any] | None
    history: tuple[dict, ...]


FRESH = Resume(0, None, ())


def resume_point(out_dir: str | Path) -> Resume | None:
    """The last complete epoch a training in `out_dir` can continue from (its checkpoint and `resume.pt`
    both saved), read once, or None."""
    out_dir = Path(out_dir)
    if not (out_dir / RESUME).is_file():
        return None
    try:
        saved = torch.load(out_dir / RESUME, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise UserError(f"{out_dir / RESUME} cannot be read ({first_line(err, 200)}): "
                        "train.overwrite=true trains again") from err
    epoch = saved["epoch"]
    done = (out_dir / f"epoch_{epoch:03d}.pt").is_file()
    return Resume(epoch, saved["optimizer"], tuple(saved["history"])) if done else None


def _save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _train_epoch(model: nn.Module, opt: torch.optim.Optimizer, split: Split, cfg: TrainConfig, epoch: int,
                 classify: bool) -> None:
    """One pass over `split` in the batch order of (seed, epoch), each step at the schedule's rate."""
    model.train()
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    order = torch.randperm(len(split)).to(split.x.device)
    per_epoch = -(-len(split) // cfg.batch_size)
    for i, start in enumerate(range(0, len(order), cfg.batch_size)):
        idx = order[start:start + cfg.batch_size]
        batch = replace(split, x=split.x[idx], y=split.y[idx])
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at((epoch - 1) * per_epoch + i, per_epoch)
        s, n = loss_sum(model(batch.inputs(0, len(idx))), batch.y, cfg.loss, classify)
        opt.zero_grad(set_to_none=True)
        (s / n).backward()
        opt.step()


def train(model: nn.Module, data: Data, cfg: TrainConfig, out_dir: str | Path,
          device: str | torch.device = "cpu", log=print, start: Resume = FRESH) -> list[dict]:
    """Train and write `epoch_000.pt` (initial weights) ... `epoch_{E:03d}.pt` and `last.pt` (its presence
    means finished); `start` after an epoch > 0 (a `resume_point`) continues from that epoch's checkpoint
    and its optimizer state instead of from `model`'s weights. Returns the history of every epoch."""
    check_data(model, data, cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.device(device))
    train_split, test_split = data.train.to(device), data.test.to(device)
    classify = data.num_classes > 0
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    history = list(start.history)
    if start.epoch:
        model.load_state_dict(load_state(out_dir / f"epoch_{start.epoch:03d}.pt"))
        opt.load_state_dict(start.optimizer)
    for epoch in range(start.epoch + 1 if start.epoch else 0, cfg.epochs + 1):
        if epoch > 0:
            _train_epoch(model, opt, train_split, cfg, epoch, classify)
        tr_loss, tr_acc = evaluate_split(model, train_split, cfg.loss, classify)
        te_loss, te_acc = evaluate_split(model, test_split, cfg.loss, classify)
        # no wall-clock time: the same training must give the same checkpoint files (surfaces fingerprint them)
        row = {"epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss, "test_acc": te_acc}
        history.append(row)
        _save({"state_dict": model.state_dict(), "epoch": epoch, "metrics": row}, out_dir / f"epoch_{epoch:03d}.pt")
        _save({"epoch": epoch, "optimizer": opt.state_dict(), "history": history}, out_dir / RESUME)
        log(f"epoch {epoch:3d}  train loss {tr_loss:.4f} acc {tr_acc:5.1f}%  "
            f"test loss {te_loss:.4f} acc {te_acc:5.1f}%")
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    _save({"state_dict": model.state_dict(), "epoch": cfg.epochs, "metrics": history[-1]}, out_dir / "last.pt")
    return history
