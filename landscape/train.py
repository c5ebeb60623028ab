"""A plain training loop on device-resident data that saves a checkpoint per epoch (PCA needs them)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .data import Data, Split
from .errors import real_number, whole_number
from .engine.metrics import check_data_fits, check_loss, loss_sum


@dataclass
class TrainConfig:
    """Plain SGD with momentum and a cosine schedule: what Li et al. used, minus augmentation."""

    epochs: int = 8
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
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


def check_data(model: nn.Module, data: Data, cfg: TrainConfig) -> None:
    """A UserError when the data do not fit the model or the loss (cross_entropy on regression), before training."""
    check_loss(cfg.loss, data.num_classes > 0)
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


def _save(model: nn.Module, path: Path, epoch: int, metrics: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": model.state_dict(), "epoch": epoch, "metrics": metrics}, tmp)
    tmp.replace(path)


def train(model: nn.Module, data: Data, cfg: TrainConfig, out_dir: str | Path,
          device: str | torch.device = "cpu", log=print) -> list[dict]:
    """Train and write `epoch_000.pt` (initial weights) ... `epoch_{E:03d}.pt` and `last.pt`."""
    check_data(model, data, cfg)
    torch.manual_seed(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    model.to(device)
    train_split, test_split = data.train.to(device), data.test.to(device)
    classify = data.num_classes > 0
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps = max(1, cfg.epochs * -(-len(train_split) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    history = []
    for epoch in range(cfg.epochs + 1):
        if epoch > 0:
            model.train()
            order = torch.randperm(len(train_split), generator=gen).to(device)
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                x = Split(train_split.x[idx], train_split.y[idx], train_split.scale,
                          train_split.mean, train_split.std)
                s, n = loss_sum(model(x.inputs(0, len(idx))), x.y, cfg.loss, classify)
                opt.zero_grad(set_to_none=True)
                (s / n).backward()
                opt.step()
                sched.step()
        tr_loss, tr_acc = evaluate_split(model, train_split, cfg.loss, classify)
        te_loss, te_acc = evaluate_split(model, test_split, cfg.loss, classify)
        # no wall-clock time: the same training must give the same checkpoint files (surfaces fingerprint them)
        row = {"epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss, "test_acc": te_acc}
        history.append(row)
        _save(model, out_dir / f"epoch_{epoch:03d}.pt", epoch, row)
        log(f"epoch {epoch:3d}  train loss {tr_loss:.4f} acc {tr_acc:5.1f}%  "
            f"test loss {te_loss:.4f} acc {te_acc:5.1f}%")
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    _save(model, out_dir / "last.pt", cfg.epochs, history[-1])  # last: its presence means training finished
    return history
