"""The device and thread policy, in one place: which device a worker uses, which devices exist here, how
many CPU threads a worker takes, glibc malloc tuning, device names, synchronisation, backend flags."""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
from typing import Iterator

import torch

from .errors import UserError

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def tune_cpu_malloc() -> bool:
    """Keep freed memory in the process (glibc): no munmap + page faults for every large activation.

    By default glibc serves every allocation above 32 MB with mmap and returns it on free, so each
    CPU forward re-faults its activations (ResNet-20, 512 images: ~400k page faults and ~1 s of
    system time per pass, see BENCHMARKS.md). mallopt at runtime does what the MALLOC_*_ env vars
    do at process start. Returns False where it does not apply (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        big = ctypes.c_int(2**31 - 1)  # mallopt takes an int: 2 GiB is the largest threshold
        ok = libc.mallopt(M_MMAP_THRESHOLD, big) == 1
        ok &= libc.mallopt(M_TRIM_THRESHOLD, big) == 1
        ok &= libc.mallopt(M_TOP_PAD, ctypes.c_int(1 << 30)) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


def device_name(device: torch.device) -> str:
    """`cpu` or the GPU's product name, safe for a file name."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or device.type


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def backend_flags(precision: str) -> Iterator[None]:
    """tf32 only for precision tf32; cudnn autotuning only where results need not be bit-stable."""
    cuda = torch.backends.cuda.matmul
    saved = (cuda.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    cuda.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.benchmark = precision != "fp32"
    try:
        yield
    finally:
        cuda.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def pick_device(requested: str = "auto") -> torch.device:
    """`auto`: the first visible GPU (the launcher sets CUDA_VISIBLE_DEVICES per worker), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def device_for(requested: str, local_rank: int) -> torch.device:
    """One of several processes on a node (an MPI rank): `auto` or `cuda` on a GPU node is the local_rank-th
    visible GPU, modulo their count, made the current device; anything else as requested."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)  # also for whatever allocates on the current device
        return device
    return pick_device(requested)


def cpu_share(processes: int, granted: int | None = None) -> int:
    """CPU threads for one of `processes` workers on this node: an equal share of its cores, at most the
    `granted` CPUs (else those this process may run on)."""
    cpus = granted or len(os.sched_getaffinity(0))
    return max(1, min(cpus, (os.cpu_count() or 1) // processes))


def devices_here() -> list[str]:
    """The devices this machine offers torch: cpu, then each visible GPU (and mps on a Mac)."""
    mps = getattr(torch.backends, "mps", None)
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] + (
        ["mps"] if mps is not None and mps.is_available() else [])


def check_device(requested: str, here: bool = True) -> None:
    """`eval.device` names a torch device and, where workers run on this machine (`here`), one it has."""
    if requested == "auto":
        return
    try:
        device = torch.device(str(requested))
    except (RuntimeError, TypeError) as err:
        raise UserError(f"eval.device '{requested}' is not a device: use auto, cpu, cuda or cuda:N "
                        f"(this machine has {', '.join(devices_here())})") from err
    have = devices_here()
    name = f"cuda:{device.index or 0}" if device.type == "cuda" else device.type
    if here and name not in have:
        raise UserError(f"eval.device '{requested}' is not available: this machine has {', '.join(have)}; "
                        "use eval.device=auto or one of those")


def set_cpu_threads() -> int:
    """Use the CPUs the scheduler or launcher granted (LANDSCAPE_THREADS, Slurm, PBS, OMP), not every core.

    Also keeps freed memory in the process (glibc mallopt): large activations are otherwise
    unmapped and page-faulted back on every batch (2x on a ResNet-20 CPU forward, BENCHMARKS.md).
    """
    tune_cpu_malloc()
    for var in ("LANDSCAPE_THREADS", "SLURM_CPUS_PER_TASK", "NCPUS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            torch.set_num_threads(max(1, int(os.environ[var])))
            break
    return torch.get_num_threads()
