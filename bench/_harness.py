"""Shared by the benchmarks: memory readings and running one measurement in a fresh process.

Why: every benchmark measures peak memory the same way, in a subprocess of its own, so
that one measurement's allocations never inflate another's peak.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_bytes()


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_bytes() -> int:
    """Peak resident set size of this process since start or the last :func:`reset_peak`."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def run_worker(cmd: list[str], *, memory: bool, device: str) -> dict:
    """Run one worker command and return the JSON object on its last output line."""
    env = dict(os.environ)
    if memory and not device.startswith("cuda"):
        # Large blocks via mmap are returned to the OS when freed, so the resident set
        # follows live memory and the peak does not depend on what malloc cached earlier.
        # (Too slow for timing, hence separate time and memory runs.)
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"worker {cmd[3] if len(cmd) > 3 else cmd} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_and_peak(fn, device, *, warmup: bool, repeats: int):
    """Call ``fn`` ``repeats`` times (after one warm-up call if asked).

    Returns the list of wall times in seconds, the peak memory above the level before the
    timed calls in MiB (CUDA: allocated; CPU: resident set), and ``fn``'s last result.
    """
    import gc
    import time

    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if warmup:
        fn()
        sync()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        gc.collect()
        reset_peak()
        base = rss_bytes()
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_bytes()
    return times, max(0, peak - base) / 2**20, result


def dispatch(opts, worker) -> bool:
    """Run ``worker(opts)`` if this process is a worker (``--worker`` given); return True then.

    Otherwise check that a requested CUDA device exists (exit with a message if not) and
    return False, so the caller goes on as the driver.
    """
    if opts.worker:
        worker(opts)
        return True
    if opts.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda requested but no CUDA GPU is available")
    return False
