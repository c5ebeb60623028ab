"""`landscape-train model=... data=... train.epochs=8 run.dir=R`: R/checkpoints/epoch_000.pt ... last.pt."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from landscape import data
from landscape.spec import instantiate
from landscape.train import TrainConfig, train

from jobs.tile import pick_device
from . import config
from .cli import user_errors


@user_errors
def main(argv: list[str] | None = None) -> int:
    cfg = config.load("train", list(sys.argv[1:] if argv is None else argv))
    out = Path(cfg["run"]["dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    dataset = data.load(cfg["data"])
    model = instantiate(cfg["model"])
    device = pick_device(cfg["eval"]["device"])
    tc = TrainConfig(**cfg["train"], loss=cfg["loss"], seed=cfg["seed"])
    print(f"training {cfg['model']['name']} on {cfg['data']['name']} ({len(dataset.train)} samples) on {device}")
    history = train(model, dataset, tc, out / "checkpoints", device)
    print(f"checkpoints {out / 'checkpoints'}: epoch_000.pt .. epoch_{tc.epochs:03d}.pt, last.pt "
          f"(test accuracy {history[-1]['test_acc']:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
