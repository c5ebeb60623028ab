"""Checks of what the engine is given that no run can fix later: a model whose values depend on the
batch size, and a precision that only costs on this device."""
from __future__ import annotations

from torch import nn

from ..errors import UserError


def check_model(model: nn.Module) -> None:
    """A UserError for BatchNorm without running statistics: it normalises each batch by that batch's own
    statistics even in eval mode, so every value would depend on `eval.batch_size`."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.track_running_stats:
            raise UserError(f"layer {name or '(the model)'} ({type(module).__name__}) has track_running_stats=False: "
                            "it normalises each batch by that batch's own statistics, so every loss would depend "
                            "on eval.batch_size; build the model with track_running_stats=True (and train it so)")


def precision_note(precision: str, device_type: str) -> str | None:
    """One line where bf16/fp16 only cost: on a CPU they run slower than fp32 and less exactly."""
    if precision in ("bf16", "fp16") and device_type == "cpu":
        return (f"precision {precision} on a CPU is slower and less exact than fp32 there "
                "(no fast low-precision kernels); precision=fp32 is the better choice on CPUs")
    return None
