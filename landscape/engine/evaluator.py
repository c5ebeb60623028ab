"""`Evaluator`: the engine's parts composed for one model, one set of directions and splits, one device."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..checkpoint import StateDict
from ..data import Split
from ..directions import Directions
from ..errors import UserError
from ..hardware import backend_flags, device_name
from .bnfold import CONV_TYPES, bn_folder
from .bnrecal import Recalibrator
from .checks import check_model, precision_note
from .flat import FlatWeights
from .lowp import low_precision_net
from .metrics import LossAccuracy, Metric, check_data_fits, check_loss, measure
from .moves import Mover
from .options import PRECISIONS, EngineOptions, check_precision
from .precision import compare, compared, recompute_nonfinite
from .runner import Choice, Parts, Runner
from .steps import Steps
from .stream import head, place
from .tuning import ChoiceCache, cache_key, tune

log = logging.getLogger(__name__)

# Bumped whenever the fp32 arithmetic of a point changes (tiles record it; landscape-status flags a mix):
# 1 moved weights with add(alpha=a), 2 with addcmul on device coordinates (CUDA graphs replay them).
ENGINE_VERSION = 2


class Evaluator:
    """Evaluates a model along directions on device-resident (or streamed) splits; one per worker.

    The engine's settings come as `options` or as the loose keywords (`conf/surface.yaml` `eval.*`
    documents them; `EngineOptions` checks them), not both. `metrics`: more per-point values beside the
    loss and accuracy (`metrics.Metric`). `cache_dir`: where the runner's choice is cached per device name.
    """

    def __init__(self, model: nn.Module, origin: StateDict, directions: Directions,
                 splits: Mapping[str, Split], num_classes: int, loss: str = "cross_entropy",
                 precision: str = "fp32", batch_size: int | None = None,
                 device: str | torch.device = "cpu", *, mode: str = "auto",
                 points_per_batch: int | None = None, compile: Any = "auto", fold_bn: Any = "auto",
                 channels_last: Any = "auto", stream: Any = "auto", precision_check: int = 1,
                 cuda_graph: Any = "auto", compile_mode: str = "default", pad_linear: Any = "auto",
                 cache_dir: str | Path | None = None, options: EngineOptions | None = None,
                 metrics: Sequence[Metric] = (), bn_split: Split | None = None):
        loose = EngineOptions(mode=mode, points_per_batch=points_per_batch, batch_size=batch_size, compile=compile,
                              compile_mode=compile_mode, cuda_graph=cuda_graph, fold_bn=fold_bn,
                              channels_last=channels_last, pad_linear=pad_linear, stream=stream,
                              precision_check=precision_check)
        if options is not None and loose != EngineOptions():
            raise TypeError("Evaluator: pass the engine's settings as options=EngineOptions(...) or as keywords, "
                            "not both")
        check_loss(loss)
        check_precision(precision)
        t_setup = time.perf_counter()
        self.options, self.precision = recalibrating(options or loose), precision
        self.device = _device(device)
        self._place_model(model, origin)
        self.weights = FlatWeights(self.model, directions, self.device)
        self.folder = bn_folder(self.model, self.weights, self.options.fold_bn, self.device)
        self.net = self.folder.net if self.folder else self.model
        placed, streamed = place(splits, self.device, self.options.stream)
        self.bn_split = bn_split or splits.get("train")
        if self.options.bn == "recalibrate" and self.bn_split is None:
            raise UserError("eval.bn=recalibrate needs training data: pass bn_split (the command line passes the "
                            "data's train split)")
        for name, split in placed.items():
            check_data_fits(self.model, split, num_classes, loss, name)
        with torch.inference_mode():
            out_shape = tuple(self.model(head(next(iter(placed.values())), 1, self.device).inputs(0, 1)).shape[1:])
        self.info: dict[str, Any] = {}
        self.last_info: dict[str, Any] = {}
        self.metrics = (LossAccuracy(loss, num_classes > 0), *metrics)
        self.parts = self._parts(placed, streamed, out_shape)
        cache = ChoiceCache(cache_dir, cache_key(self.options, precision, splits, self.model), self.device) \
            if cache_dir else None
        has_conv = any(isinstance(m, CONV_TYPES) for m in self.model.modules())
        with torch.inference_mode(), backend_flags(precision):
            choice, decided = tune(self.parts, self.options, self.metrics[0].reduce, has_conv, cache)
        self.info.update(decided)
        self.choose(choice)
        self.info.update({"fold_bn": self.folder is not None, "channels_last": self.channels_last,
                          "stream": streamed, "setup_seconds": time.perf_counter() - t_setup})
        log.info("engine: %s", self.info)

    def _place_model(self, model: nn.Module, origin: StateDict) -> None:
        """The model checked, at the origin, in eval mode on the device; channels_last for 2D convnets
        (faster with cuDNN and with oneDNN on CPU alike, BENCHMARKS.md)."""
        check_model(model)
        note = precision_note(self.precision, self.device.type)
        if note:
            log.warning(note)
        model.load_state_dict(origin)
        self.model = model.eval().to(self.device)
        self.channels_last = self.options.on("channels_last", any(isinstance(m, nn.Conv2d) for m in model.modules()))
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _parts(self, splits: Mapping[str, Split], streamed: bool, out_shape: tuple[int, ...]) -> Parts:
        dtype = PRECISIONS[self.precision]
        pad = self.options.on("pad_linear", self.device.type == "cuda")
        self.lowp = low_precision_net(self.net, self.weights, self.folder, dtype, pad, self.device)
        if self.lowp is not None:
            self.info.update({"lowp_layers": self.lowp.cast, "padded_linear": self.lowp.npadded})
        recal = Recalibrator(self.model, self.bn_split, self.options.bn_batches, self.options.bn_batch_size,
                             self.device) if self.options.bn == "recalibrate" else None
        self.mover = Mover(self.weights, self.folder, self.lowp, recal)
        steps = Steps(self.net, self.lowp, self.channels_last, self.device, self.options.compile_mode, self.info)
        return Parts(self.model, self.mover, steps, splits, streamed, dtype, self.channels_last, out_shape, self.info)

    def choose(self, choice: Choice) -> None:
        """Run with `choice` from now on (a new runner: nothing of the old one's path is kept)."""
        self.choice, self.runner = choice, Runner(self.parts, choice)
        self.info.update({"version": ENGINE_VERSION, "device_name": device_name(self.device), "mode": choice.mode,
                          "points_per_batch": choice.points_per_batch, "batch_size": choice.batch_size,
                          "compile": choice.compile, "cuda_graph": choice.cuda_graph})

    def set_directions(self, directions: Directions) -> None:
        """Evaluate along another plane of the same shape from now on (random planes: directions.planes)."""
        self.weights.set_directions(directions)

    def evaluate(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Per point `{split}_loss` (mean over the split), `{split}_acc` (percent, classification) and
        the values of any further metrics."""
        coords = np.atleast_2d(np.asarray(coords, dtype=np.float64))
        k = min(self.options.precision_check, len(coords)) if self.parts.dtype is not None else 0
        lowp = [m for m in self.metrics if not m.fp32]  # in the run's precision: an overflow redoes these only
        with torch.inference_mode(), backend_flags(self.precision):
            forward = self.runner.forward(coords)
            values = measure(lowp, forward)
            lowp_keys = list(values)
            values |= measure([m for m in self.metrics if m.fp32], forward)
            check = compare(self.runner, self.metrics[0], coords[:k]) if k else None
            host = torch.stack([v.double() for v in values.values()]).cpu().numpy()  # the one host sync
            out = {key: host[i] for i, key in enumerate(values)}
            info = compared(check.cpu().numpy()) if check is not None else {}
            if self.parts.dtype is not None:
                redo = {key: out[key] for key in lowp_keys}
                info |= recompute_nonfinite(self.runner, lowp, coords, redo, self.precision)
        self.last_info = info | {k: v for m in self.metrics for k, v in getattr(m, "last_info", {}).items()}
        return out

    def meta(self) -> dict[str, Any]:
        """Scalars for a tile file's attributes: how the engine ran, and the last precision check."""
        m = {f"engine_{k}": v for k, v in self.info.items() if isinstance(v, (bool, int, float, str))}
        return m | self.last_info


def recalibrating(options: EngineOptions) -> EngineOptions:
    """eval.bn=recalibrate runs one point at a time (each point's statistics are its own): loop mode, no CUDA
    graph (a captured pass would replay the recalibration's kernels outside the check); EngineOptions refuses vmap."""
    return replace(options, mode="loop", cuda_graph="false") if options.bn == "recalibrate" else options


def _device(device: str | torch.device) -> torch.device:
    """A CUDA device with its index (the current one where none is named)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device
