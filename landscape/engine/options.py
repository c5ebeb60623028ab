"""The engine's settings (`eval.*` in `conf/surface.yaml`, less `device`): one frozen value, checked once.

Defaults here equal `conf/surface.yaml`'s (tests/test_engine_trust.py keeps the two from drifting).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch

from ..errors import UserError, whole_number

PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("auto", "loop", "vmap")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")  # CUDA graphs are the engine's own (graphs.py)
BN_MODES = ("frozen", "recalibrate")
TRISTATES = ("compile", "cuda_graph", "fold_bn", "channels_last", "pad_linear", "stream")  # auto | true | false
# Options that never change a value, so a run's fingerprint leaves them out: stream, points_per_batch and
# cuda_graph are bitwise-neutral in fp32 (tests/test_engine.py; a captured pass replays the same kernels and
# is checked against the plain one); precision_check only adds a figure.
VALUE_NEUTRAL = ("stream", "points_per_batch", "precision_check", "cuda_graph")


@dataclass(frozen=True)
class EngineOptions:
    """How the engine may run; `auto` lets it choose (and measure). Built checked: a bad value is a UserError."""

    mode: str = "auto"
    points_per_batch: int | None = None
    batch_size: int | None = None
    compile: str = "auto"
    compile_mode: str = "default"
    cuda_graph: str = "auto"
    fold_bn: str = "auto"
    channels_last: str = "auto"
    pad_linear: str = "auto"
    stream: str = "auto"
    precision_check: int = 1
    bn: str = "frozen"
    bn_batches: int = 10
    bn_batch_size: int = 128

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"eval.mode '{self.mode}' is unknown: use one of {', '.join(MODES)}")
        for key in ("points_per_batch", "batch_size"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, whole_number(getattr(self, key), f"eval.{key}", 1, ", or null"))
        if self.compile_mode not in COMPILE_MODES:
            raise UserError(f"eval.compile_mode '{self.compile_mode}' is unknown: "
                            f"use one of {', '.join(COMPILE_MODES)}")
        for key in TRISTATES:
            object.__setattr__(self, key, _tristate(getattr(self, key), key))
        object.__setattr__(self, "precision_check", whole_number(self.precision_check, "eval.precision_check", 0))
        if self.bn not in BN_MODES:
            raise UserError(f"eval.bn '{self.bn}' is unknown: use frozen (the checkpoint's running statistics) or "
                            "recalibrate (re-estimated at each point from seeded training batches)")
        for key in ("bn_batches", "bn_batch_size"):
            object.__setattr__(self, key, whole_number(getattr(self, key), f"eval.{key}", 1))
        if self.bn == "recalibrate" and self.mode == "vmap":
            raise UserError("eval.bn=recalibrate re-estimates BatchNorm statistics per point, in loop mode: "
                            "use eval.mode=auto or loop")

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> EngineOptions:
        """From `eval.*` settings (YAML bools, None or strings for the switches); unknown keys are refused."""
        return cls(**known_keys(cls, values, "eval", "the engine's"))

    def on(self, key: str, auto: bool) -> bool:
        """A switch's value, `auto` deciding where it is left to the engine."""
        value = getattr(self, key)
        return auto if value == "auto" else value == "true"


def known_keys(cls: type, values: Mapping[str, Any], prefix: str, whose: str) -> Mapping[str, Any]:
    """`values` where each key is a field of the dataclass `cls`; else a UserError naming the first unknown one."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown setting {prefix}.{unknown[0]}: {whose} settings are "
                        f"{', '.join(f'{prefix}.{k}' for k in sorted(known))}")
    return values


def _tristate(value: Any, name: str) -> str:
    """auto | true | false from YAML (bools, None or strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "auto" if value is None else str(value).lower()
    if text not in ("auto", "true", "false"):
        raise UserError(f"eval.{name} is '{value}': use auto, true or false")
    return text


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"precision '{precision}' is unknown: use one of {', '.join(PRECISIONS)}")
