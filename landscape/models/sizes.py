"""The sizes a built-in model takes from the data: conf/model/*.yaml wires each argument to `data.<argument>`."""
from typing import Any

from ..errors import UserError, whole_number

MEANING = {"in_features": "input values per sample", "out_features": "outputs per sample",
           "num_classes": "classes", "in_channels": "input channels"}


def data_size(value: Any, key: str) -> int:
    """The model argument `key` as a whole number of 1 or more; unset, a UserError naming `data.<key>` (where the
    model's config takes it from) instead of a crash inside torch."""
    if value is None:
        raise UserError(f"data.{key} is not set, and the model needs it (the number of {MEANING[key]}): "
                        f"give data.{key}=N")
    return whole_number(value, f"data.{key}")


def classifier_sizes(num_classes: Any, in_channels: Any) -> tuple[int, int]:
    """An image classifier's `num_classes` and `in_channels`, checked as `data_size` does; 0 classes (what a tensors
    file of float targets resolves to) is regression, which a classifier cannot do."""
    if num_classes == 0 and not isinstance(num_classes, bool):
        raise UserError("data.num_classes is 0 (regression: the targets y are floats), but this model is a "
                        "classifier: store integer class labels 0 .. K-1 in y, or use model=mlp for regression")
    return data_size(num_classes, "num_classes"), data_size(in_channels, "in_channels")
