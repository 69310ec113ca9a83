"""Benchmark: the aligned-pairs conv NTK (featlearn.kernels) against the all-position-pairs recursion.

Why: ConvRFM solves kernel regression with the conv net's NTK at every iteration. The
obvious recursion keeps the covariance of every position of one image with every position
of the other (P² per image pair); featlearn.kernels keeps only aligned pairs (P per pair),
which is all a flatten readout needs, and does the rest with batched pooling.

Usage::

    python bench/bench_kernels.py              # n = 1000, 32×32, q = 3, depth 3 (reference timed on a subset)
    python bench/bench_kernels.py --quick      # n = 200
    python bench/bench_kernels.py --device cuda --n 20000

The reference (tests/kernels_reference.py) goes image pair by image pair; it is timed on
--ref-pairs pairs and its time scaled to n² pairs (it is linear in the number of pairs), and
its result is compared on those pairs. Memory is the peak resident set (CUDA: allocated)
above the level before the call, in a fresh process per measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from _harness import dispatch, run_worker, time_and_peak

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def images(n: int, size: int, channels: int) -> torch.Tensor:
    from featlearn import data

    return data.natural_crops(n, size, channels=channels, seed=0).double()


def worker(opts: argparse.Namespace) -> None:
    from featlearn.kernels import conv_kernels
    from kernels_reference import reference_conv_kernels

    device = torch.device(opts.device)
    x = images(opts.n, opts.size, opts.channels)
    if opts.worker == "fast":
        dtype = getattr(torch, opts.dtype)
        fn = lambda: conv_kernels(x.to(device), q=3, depth=opts.depth, block_size=opts.block, dtype=dtype)
    else:
        k = opts.ref_pairs
        fn = lambda: reference_conv_kernels(x[:1], x[:k], q=3, depth=opts.depth)
    times, peak_mb, result = time_and_peak(fn, device, warmup=False, repeats=1)
    out = {"time_s": times[0], "peak_mb": peak_mb}
    if opts.worker == "fast":
        out["ntk_row"] = result[1][0, : opts.ref_pairs].cpu().tolist()
    else:
        out["ntk_row"] = result[1][0].tolist()
    print(json.dumps(out))


def measure(kind: str, opts: argparse.Namespace, memory: bool) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--n",
        str(opts.n),
        "--size",
        str(opts.size),
        "--depth",
        str(opts.depth),
        "--channels",
        str(opts.channels),
        "--dtype",
        opts.dtype,
        "--block",
        str(opts.block),
        "--ref-pairs",
        str(opts.ref_pairs),
        "--device",
        opts.device,
    ]
    return run_worker(cmd, memory=memory, device=opts.device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=None, help="images (default 1000, 200 with --quick)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--channels", type=int, default=3, help="1 or 3 (SVHN has 3)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="featlearn's precision (ConvRFM computes kernels in float32; the reference is float64)",
    )
    p.add_argument("--block", type=int, default=64, help="images per kernel block")
    p.add_argument("--ref-pairs", type=int, default=20, help="image pairs the reference is timed on")
    p.add_argument("--device", default="cpu")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    opts = p.parse_args()
    opts.n = opts.n or (200 if opts.quick else 1000)
    if dispatch(opts, worker):
        return
    fast, ref = measure("fast", opts, False), measure("ref", opts, False)
    fast_m, ref_m = measure("fast", opts, True), measure("ref", opts, True)
    pairs = opts.n * opts.n
    ref_total = ref["time_s"] / opts.ref_pairs * pairs
    err = max(abs(a - b) / abs(b) for a, b in zip(fast["ntk_row"], ref["ntk_row"]))
    print(
        f"conv NTK+NNGP, n = {opts.n}, {opts.channels}×{opts.size}×{opts.size}, q = 3, depth {opts.depth}, "
        f"{opts.dtype}, block {opts.block}, device={opts.device}, "
        f"torch {torch.__version__}, threads={torch.get_num_threads()}"
    )
    print(f"{'method':<34} {'time s':>10} {'peak MB':>9}")
    print(f"{'aligned pairs (featlearn)':<34} {fast['time_s']:>10.2f} {fast_m['peak_mb']:>9.0f}")
    print(f"{'all pairs (reference), scaled':<34} {ref_total:>10.0f} {ref_m['peak_mb']:>9.0f}")
    print(
        f"speed-up {ref_total / fast['time_s']:.0f}x (target >= 10x); reference timed on {opts.ref_pairs} pairs "
        f"({ref['time_s']:.2f} s) and scaled to {pairs:,}; max relative NTK difference on those pairs {err:.1e}"
    )


if __name__ == "__main__":
    main()
