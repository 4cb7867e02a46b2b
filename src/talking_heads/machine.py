"""What machine a measurement ran on (benchmarks, evaluation timing tables): one description for all of them."""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic


@functools.lru_cache(maxsize=None)
def cpu_supports_bf16() -> bool:
    """Native bf16 arithmetic on this CPU: AVX-512 BF16 or AMX (/proc/cpuinfo flags; without that file,
    oneDNN's own check). Decides what "auto" precision means for rendering and training on a CPU."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return any(flag in line.split() for flag in CPU_BF16_FLAGS)
    import torch  # lazy, as in `describe`: only when /proc/cpuinfo is missing

    with contextlib.suppress(Exception):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def describe(device: str | None = None) -> dict[str, Any]:
    """Date, CPU, cores, torch threads, RAM, torch and Python versions, OS; the GPU's name on a CUDA device
    (`device` None: whenever CUDA is available)."""
    import torch

    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gib = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    info = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "ram_gib": mem_gib, "torch": torch.__version__,
            "python": platform.python_version(), "os": platform.platform()}
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        info["gpu"] = torch.cuda.get_device_name(torch.device(device) if device else None)
    return info
