"""Timing and memory helpers of every benchmark (`talking-heads bench`, scripts/bench_*.py).

- `time_it`: median / min wall time of repeated calls of one function.
- `interleaved_times` / `interleaved`: several functions timed in interleaved rounds (one call of each per round),
  so that other load on the machine weighs on all of them alike.
- `peak_memory`: the peak memory of a region: CUDA max_memory_allocated, or on CPU the growth of the process's
  peak resident set (VmHWM, reset through /proc/self/clear_refs before the region; without that file the
  lifetime peak from getrusage, which can only over-state the region's own use).
- `status_kib`, `reset_peak_rss`, `memory_mib`: the /proc/self/status readers behind it (Linux; None or the
  getrusage figures elsewhere).
"""

from __future__ import annotations

import contextlib
import resource
import time
from pathlib import Path
from typing import Any, Callable

import torch


def sync(device: torch.device | None) -> None:
    """Wait for the device's queued kernels (CUDA); nothing on a CPU or without a device."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


# --- memory -----------------------------------------------------------------------------------------

def status_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB ("VmRSS": resident now, "VmHWM": its peak), None without /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux /proc/self/clear_refs); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def lifetime_peak_kib() -> int:
    """The process's lifetime peak RSS (getrusage ru_maxrss: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_peak_kib() -> int:
    """VmHWM (the peak since the last `reset_peak_rss`), else the lifetime peak."""
    hwm = status_kib("VmHWM")
    return lifetime_peak_kib() if hwm is None else hwm


def rss_now_kib() -> int:
    """VmRSS, else `rss_peak_kib()`."""
    rss = status_kib("VmRSS")
    return rss_peak_kib() if rss is None else rss


def memory_mib() -> dict[str, float | None]:
    """rss / hwm (VmRSS / VmHWM, None without /proc) and maxrss (getrusage, the lifetime peak), MiB."""
    rss, hwm = status_kib("VmRSS"), status_kib("VmHWM")
    return {"rss_mib": None if rss is None else round(rss / 1024, 1),
            "hwm_mib": None if hwm is None else round(hwm / 1024, 1),
            "maxrss_mib": round(lifetime_peak_kib() / 1024, 1)}


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict[str, Any]):
    """Record the region's peak memory (MiB) into out["peak_mib"], its growth over the start into
    out["peak_above_start_mib"], and how it was measured into out["memory_kind"] (module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield
        torch.cuda.synchronize(device)
        out["peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["peak_above_start_mib"] = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
        out["memory_kind"] = "cuda max_memory_allocated"
        return
    exact = reset_peak_rss()
    base = rss_now_kib()
    yield
    out["peak_above_start_mib"] = round((rss_peak_kib() - base) / 1024, 1)
    out["peak_mib"] = round(rss_peak_kib() / 1024, 1)
    out["memory_kind"] = "cpu peak RSS (VmHWM)" + ("" if exact else ", lifetime peak")


# --- time -------------------------------------------------------------------------------------------

def time_it(fn: Callable[[], Any], device: torch.device, *, warmup: int = 1, repeat: int = 3,
            max_seconds: float = 60.0) -> dict[str, float]:
    """Median and min wall time of fn() in seconds, after `warmup` calls; stops early past max_seconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds:
            break
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "runs": len(times)}


def interleaved_times(fns: dict[str, Callable[[], Any]], device: torch.device | None = None, *, warmup: int = 2,
                      repeat: int = 5, rotate: bool = False) -> dict[str, dict[str, list[float]]]:
    """{name: {"wall": [s, ...], "cpu": [s, ...]}}: each fn timed in `repeat` interleaved rounds (one call of each
    per round) after `warmup` calls of each; "cpu" is the process's CPU time (time.process_time, which load
    on other cores does not inflate). `rotate`: round r starts with the r-th fn (no fn always runs first,
    right after another one's memory was freed)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    names = list(fns)
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in names}
    for r in range(repeat):
        for k in (names[r % len(names):] + names[:r % len(names)] if rotate else names):
            w0, c0 = time.perf_counter(), time.process_time()
            fns[k]()
            sync(device)
            times[k]["cpu"].append(time.process_time() - c0)
            times[k]["wall"].append(time.perf_counter() - w0)
    return times


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, *, warmup: int = 2, repeat: int = 5,
                rotate: bool = False) -> dict[str, float]:
    """Median wall seconds of each fn, timed in interleaved rounds (`interleaved_times`)."""
    times = interleaved_times(fns, device, warmup=warmup, repeat=repeat, rotate=rotate)
    return {k: sorted(v["wall"])[len(v["wall"]) // 2] for k, v in times.items()}
