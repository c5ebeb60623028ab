"""Shared by the CPU and GPU benchmarks: the reference loop, timers, the table, the JSON record."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from landscape import directions
from landscape.data import Split


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall seconds of fn() with the device drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def bare_forward(model: nn.Module, split: Split, batch: int, device: torch.device,
                 dtype: torch.dtype | None = None, channels_last: bool = False) -> Callable[[], None]:
    """One forward pass over the split and nothing else: inputs normalised once, beforehand."""
    xs = [split.inputs(i, min(i + batch, len(split))).to(device) for i in range(0, len(split), batch)]
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]

    def run() -> None:
        with torch.inference_mode(), (torch.autocast(device.type, dtype=dtype) if dtype else _null()):
            for x in xs:
                model(x)
    return run


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class LiDataset(torch.utils.data.Dataset):
    """Per-sample access with the normalisation done per image, like torchvision's transforms."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.split.inputs(i, i + 1)[0], self.split.y[i]


def reference_loop(make: Callable[[], nn.Module], state: dict, dx: Sequence[torch.Tensor],
                   dy: Sequence[torch.Tensor], split: Split, coords: np.ndarray, device: torch.device,
                   batch: int = 128, workers: int = 0) -> list[tuple[float, float]]:
    """Li et al.'s loss-landscape code, as written (net_plotter.set_weights + evaluation.eval_loss):
    weights rebuilt from Python lists per point (direction steps computed on the host, then copied),
    a DataLoader at batch 128, `.item()` twice per batch, fp32. The per-point rewrite of the surface
    file is left out (it would only make the reference slower)."""
    net = make()
    net.load_state_dict(state)
    net = net.to(device).eval()
    weights = [p.data.clone() for p in net.parameters()]
    loader = torch.utils.data.DataLoader(LiDataset(split), batch_size=batch, shuffle=False, num_workers=workers)
    criterion = nn.CrossEntropyLoss()
    results = []
    for step in coords:
        changes = [d0 * float(step[0]) + d1 * float(step[1]) for d0, d1 in zip(dx, dy)]
        for p, w, d in zip(net.parameters(), weights, changes):
            p.data = w + torch.Tensor(d).to(device)
        correct, total_loss, total = 0, 0.0, 0
        with torch.no_grad():
            for inputs, targets in loader:
                batch_size = inputs.size(0)
                total += batch_size
                inputs, targets = inputs.to(device), targets.to(device)
                outputs = net(inputs)
                loss = criterion(outputs, targets)
                total_loss += loss.item() * batch_size
                _, predicted = torch.max(outputs.data, 1)
                correct += predicted.eq(targets).sum().item()
        results.append((total_loss / total, 100.0 * correct / total))
    return results


def calibrate_bn(model: nn.Module, split: Split, device: torch.device, samples: int = 2048) -> None:
    """BatchNorm running statistics of the data (cumulative average), so activations are realistic."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, min(samples, len(split)), 512):
            model(split.inputs(i, min(i + 512, len(split), samples)).to(device))
    for m in bns:
        m.momentum = 0.1
    model.eval()


def calibrated_plane(make: Callable[[], nn.Module], split: Split, device: torch.device) -> tuple[dict, list[str], Any]:
    """A seeded model's state with BatchNorm statistics of `split`, its parameter names, and a filter-normalised
    random plane (biases and BatchNorm ignored), as the benchmarks time it; calibrated on `device`, kept on the host."""
    torch.manual_seed(0)
    model = make().to(device)
    calibrate_bn(model, split, device)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    return state, names, directions.random_directions(names, [state[n] for n in names], 2, "filter", "biasbn", 0)


def environment(device: torch.device) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "device": str(device)}
    try:
        env["loadavg_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu_model"] = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                 if line.startswith("model name")), platform.processor()) \
            if os.path.exists("/proc/cpuinfo") else platform.processor()
    return env


def write_json(record: dict, name: str) -> Path:
    """To $OUT when set (the lent GPU machine), else bench/results/."""
    folder = Path(os.environ.get("OUT") or Path(__file__).resolve().parent / "results")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=_jsonable))
    tmp.replace(path)
    return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """Columns: (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("-" if r.get(k) is None else format(r[k], f)) for k, _, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))

