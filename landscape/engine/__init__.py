"""The evaluation engine: loss (and accuracy) at grid points `theta0 + a*d1 + b*d2`.

How a point is computed (see DESIGN.md, "The evaluation engine", and BENCHMARKS.md):
- every parameter, and every floating buffer, is a view into one flat device vector, each tensor
  aligned and laid out in its own memory format (so `channels_last` weights stay views); moving to a
  point is two fused in-place ops on that vector, never a rebuild from Python lists (`flat.py`,
  `moves.py`; CUDA bf16/fp16: one compiled kernel that also writes the low-precision copy, `lowp.move_and_cast`);
- two execution modes: `loop` runs one point at a time over large sample batches; `vmap` runs
  P points in one batched forward (`torch.func.functional_call` + `vmap`, parameters AND buffers
  passed, so eval-mode BatchNorm works). `auto` keeps convnets on `loop` (vmap turns convolutions
  into grouped convolutions: measured slower) and measures the two on one batch for other models;
- BatchNorm may be folded into the preceding conv/linear layer (`fold_bn`, auto: on): the
  folded weights are recomputed from the flat vectors after every move by a handful of
  gather/multiply ops, whatever the depth of the network (`bnfold.py`);
- `channels_last` for 2D convnets (auto: on, CPU and CUDA); `torch.compile` (auto: CUDA only, kept
  where it beats eager on a full batch, eager fallback on any compiler failure);
- on CUDA in loop mode, the batch size and whether a point's whole pass runs as one captured CUDA
  graph (`graphs.py`) are timed per sample once per run (`tuning.py`);
- the split stays on the device (uint8 images normalised per batch; on CPU normalised once) or is
  streamed through two device buffers filled on a side CUDA stream when it does not fit (each
  streamed batch then serves every point of the tile; `stream.py`);
- what is measured at a point is a metric (`metrics.py`): loss sums (fp64) and correct counts stay on the
  device, one host sync per `evaluate` call; a point whose loss is not finite has NaN accuracy;
- bf16/fp16 run under autocast with fp32 master weights (vmap: explicit casts, autocast does not
  reach inside vmap), logits go to fp32 before the loss, non-finite points are recomputed in fp32,
  and the first `precision_check` points of each call are also computed in fp32 (`precision.py`). Conv/linear
  weights are cast once per point, not per batch (`lowp.py`: autocast's values, bitwise), and on
  CUDA linear layers are zero-padded to tensor-core-aligned sizes (`pad_linear`, auto: CUDA).
Batch size, mode, compile and CUDA graph (`tuning.py`) are chosen once per worker, as one frozen `Choice`
that the forward runner (`runner.py`, one batch: `steps.py`) runs, and cached per device name in the
run directory (`cache/engine-<device>-<key>.json`, first writer wins): every worker of the same
device kind then makes the same choice, so fp32 values do not depend on which worker computed a
tile (and within one engine they are bitwise independent of tiling and points per batch).
"""
from .checks import check_model, precision_note
from .evaluator import ENGINE_VERSION, Evaluator
from .metrics import check_data_fits, check_loss
from .options import PRECISIONS, EngineOptions, check_precision

__all__ = ["ENGINE_VERSION", "PRECISIONS", "EngineOptions", "Evaluator", "check_data_fits", "check_loss",
           "check_model", "check_precision", "precision_note"]
