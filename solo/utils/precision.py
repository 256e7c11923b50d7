"""Where float32 matrix products may use TF32, and where they must not.

``performance.tf32`` lets the backbone and heads use TF32 tensor cores on GPUs that have them
(Ampere and later), and mixed precision runs them in bfloat16. The losses' logits (exp of
similarities over temperatures of 0.1 or less) and the kNN similarities (the ranking of near
neighbours) need every digit of float32, so they run inside ``full_float32`` whatever those
settings say.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


def starts_by_fork(strategy: object) -> bool:
    """Whether a Lightning strategy forks its processes ("ddp_fork", "ddp_notebook", ...): those
    refuse to start from a process that has initialized CUDA."""
    name = str(strategy)
    return "fork" in name or "notebook" in name


def gpu_supports_bf16(strategy: object = "auto") -> bool:
    """Whether the first GPU computes in bfloat16 (Ampere, compute capability 8, and later),
    read through NVML so that this process does not initialize CUDA; without NVML, torch's check
    (which initializes CUDA) unless ``strategy`` forks, where fp16 is kept instead."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        major, _ = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return major >= 8
    except Exception:  # no NVML library or no GPU it can see
        if starts_by_fork(strategy):
            return False
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matmuls and convolutions on or off, for the whole process."""
    # the public setter: torch refuses to mix its legacy and new TF32 flags, and this one is
    # read back correctly through both
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


@contextmanager
def full_float32(device_type: str) -> Iterator[None]:
    """Float32 matmuls inside the block are computed in IEEE float32: no TF32, and no autocast
    (which would run them in bfloat16 or float16 whatever their inputs' dtype). ``device_type``
    is the inputs' (``tensor.device.type``), whose autocast is switched off."""
    previous = torch.get_float32_matmul_precision()
    with torch.autocast(device_type, enabled=False):
        if previous == "highest":
            yield
            return
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(previous)
