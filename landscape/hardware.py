"""What depends on the machine: glibc malloc tuning, device names, synchronisation, backend flags."""
from __future__ import annotations

import contextlib
import ctypes
import re
from typing import Iterator

import torch

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
