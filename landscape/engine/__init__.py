# TEMPORARY STUB (integrator): replaced by the engine branch; never commit
from dataclasses import dataclass, fields
from typing import Any, Mapping
from landscape.evaluate import Evaluator, ENGINE_VERSION, PRECISIONS, check_options
from landscape.sums import check_loss, check_fits as check_data_fits
from landscape.errors import UserError


def check_model(model):
    return None


def precision_note(precision, device_type):
    return None


@dataclass(frozen=True)
class EngineOptions:
    mode: str = "auto"
    points_per_batch: Any = None
    batch_size: Any = None
    compile: str = "auto"
    compile_mode: str = "default"
    cuda_graph: str = "auto"
    fold_bn: str = "auto"
    channels_last: str = "auto"
    pad_linear: str = "auto"
    stream: str = "auto"
    precision_check: int = 1

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> "EngineOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown setting eval.{unknown[0]}")
        v = dict(values)
        pc = v.pop("precision_check", 1)
        o = check_options(**v)
        o.pop("precision")
        return cls(**o, precision_check=pc)

from dataclasses import asdict as _asdict
_Old = Evaluator
class Evaluator(_Old):
    def __init__(self, *a, options=None, **kw):
        if options is not None:
            kw |= _asdict(options)
        super().__init__(*a, **kw)
