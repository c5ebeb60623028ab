"""`eval.bn=recalibrate`: BatchNorm running statistics re-estimated at every grid point, so that a surface of a
BN network is not drawn with statistics that belong to the centre (Li et al.'s issue 35).

At each move the running means and variances are reset and re-estimated as the plain average over a fixed,
seeded set of training batches (`momentum=None`: a cumulative average, as `torch.optim.swa_utils.update_bn`),
with BatchNorm alone in training mode; then the model is back in eval mode, and folded BatchNorm is refolded
from the new statistics. The same batches serve every point, so a point's value does not depend on its tile.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..data import Split, normalize

SEED = 0  # the batches are drawn by this seed: the same for every run, point and worker


class Recalibrator:
    """Re-estimates a model's BatchNorm running statistics at its current weights; a no-op without BatchNorm."""

    def __init__(self, model: nn.Module, split: Split, batches: int, batch_size: int, device: torch.device):
        self.model = model
        self.bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        n = min(len(split), batches * batch_size)
        idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(SEED))[:n]
        self.batches = [normalize(split.x[i].to(device), split.scale, None if split.mean is None else
                                  split.mean.to(device), None if split.std is None else split.std.to(device))
                        for i in idx.split(batch_size)] if self.bns else []

    def __call__(self) -> None:
        if not self.bns:
            return
        momenta = [m.momentum for m in self.bns]
        for m in self.bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        try:
            with torch.no_grad():
                for x in self.batches:
                    self.model(x)
        finally:
            for m, momentum in zip(self.bns, momenta):
                m.momentum = momentum
                m.eval()
