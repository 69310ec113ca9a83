"""Benchmark: featlearn.agop.patch_agops against the brute-force unfold + Jacobian oracle.

Why: the identity G = W^T C W is the reason the CNFA chapters can use all classes and many
images; this script measures how much it saves, in time and in peak memory, on a
VGG11-style network (all 8 conv layers, 10 outputs).

Usage::

    python bench/bench_agop.py            # 32x32 and 64x64, 16 images
    python bench/bench_agop.py --quick    # same sizes, 4 images (< 1 min on CPU)
    python bench/bench_agop.py --device cuda
    python bench/bench_agop.py --threads 1   # steadier timings on a busy machine

Each measurement runs in a fresh subprocess so that peak memory is its own: on CPU the
peak resident set size (VmHWM, reset via /proc/self/clear_refs where Linux allows, else
ru_maxrss) minus the resident size just before the measured call, with glibc told to
return large blocks to the OS (MALLOC_MMAP_THRESHOLD_); on CUDA
``torch.cuda.max_memory_allocated`` minus the allocation before the call. Time and memory
are measured in separate runs. Timings are the best of the repeats after one warm-up
call; the slow reference is timed once, cold. The script also checks that both methods
agree (max relative Frobenius error over layers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from _harness import dispatch, run_worker, time_and_peak

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# VGG11 configuration ("A"), channel widths divided by --width-div.
VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg11_small(width_div: int = 4, n_out: int = 10) -> nn.Module:
    """VGG11 layout (8 convs, 5 max-pools, in-place ReLUs) with narrower channels."""
    layers: list[nn.Module] = []
    c = 3
    for v in VGG11:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            out = int(v) // width_div
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(inplace=True)]
            c = out
    return nn.Sequential(
        nn.Sequential(*layers),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(c * 4, 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, n_out),
    )


# ---------------------------------------------------------------------------------------
# Worker: one measurement in a fresh process
# ---------------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    from agop_reference import reference_patch_agop
    from featlearn.agop import patch_agops

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = vgg11_small(args.width_div).to(device).eval()
    images = torch.randn(args.n_images, 3, args.size, args.size, device=device)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}

    def run_agops():
        return patch_agops(model, images, chunk_size=args.chunk_size, batch_size=args.n_images)

    def run_reference():
        return {n: reference_patch_agop(model, m, images) for n, m in convs.items()}

    def run_fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(images).sum().backward()
        return None

    fn = {"agops": run_agops, "reference": run_reference, "fwd_bwd": run_fwd_bwd}[args.worker]

    times, peak_mb, result = time_and_peak(fn, device, warmup=args.warmup, repeats=args.repeats)
    if result is not None and args.save:
        torch.save({k: v.cpu() for k, v in result.items()}, args.save)
    print(json.dumps({"time_s": min(times), "peak_mb": peak_mb}))


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------


def measure(
    method: str,
    size: int,
    opts: argparse.Namespace,
    *,
    n_images: int,
    warmup: bool,
    repeats: int,
    memory: bool = False,
    save: str | None = None,
) -> dict:
    """Run one worker subprocess and return its JSON result."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--size",
        str(size),
        "--n-images",
        str(n_images),
        "--device",
        opts.device,
        "--width-div",
        str(opts.width_div),
        "--chunk-size",
        str(opts.chunk_size),
        "--repeats",
        str(repeats),
        "--threads",
        str(opts.threads or 0),
    ]
    if warmup:
        cmd.append("--warmup")
    if save:
        cmd += ["--save", save]
    return run_worker(cmd, memory=memory, device=opts.device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 images, 1 repeat (< 1 min on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--n-images", type=int, default=None, help="default 16 (4 with --quick)")
    p.add_argument("--width-div", type=int, default=4, help="VGG11 widths / this (default 4)")
    p.add_argument("--chunk-size", type=int, default=10, help="outputs per batched backward")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats of the fast methods")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    # internal
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)
    opts = p.parse_args()
    if dispatch(opts, worker):
        return
    n = opts.n_images or (4 if opts.quick else 16)
    repeats = opts.repeats or (1 if opts.quick else 5)

    print(
        f"VGG11-style net (widths/{opts.width_div}, 8 convs, in-place ReLU, 5 max-pools), "
        f"all 8 conv layers, 10 outputs, {n} images, chunk_size={opts.chunk_size}, "
        f"device={opts.device}, torch {torch.__version__}, "
        f"threads={opts.threads or torch.get_num_threads()}"
    )
    print(
        f"{'size':>5} {'agops s':>8} {'ref s':>8} {'speed-up':>9} {'fwd+bwd s':>10} "
        f"{'agops MB':>9} {'ref MB*':>8} {'fwd+bwd MB':>10} {'G MB':>6} {'rel err':>8}"
    )
    model = vgg11_small(opts.width_div)
    g_mb = sum(m.weight[0].numel() ** 2 * 4 for m in model.modules() if isinstance(m, nn.Conv2d))
    g_mb /= 2**20
    with tempfile.TemporaryDirectory() as tmp:
        for size in opts.sizes:
            fa, fr = os.path.join(tmp, "a.pt"), os.path.join(tmp, "r.pt")
            a = measure("agops", size, opts, n_images=n, warmup=True, repeats=repeats, save=fa)
            # the reference is slow: one run, no warm-up
            r = measure("reference", size, opts, n_images=n, warmup=False, repeats=1, save=fr)
            fb = measure("fwd_bwd", size, opts, n_images=n, warmup=True, repeats=repeats)
            a_mem = measure("agops", size, opts, n_images=n, warmup=True, repeats=1, memory=True)
            r_mem = measure("reference", size, opts, n_images=1, warmup=True, repeats=1, memory=True)
            fb_mem = measure("fwd_bwd", size, opts, n_images=n, warmup=True, repeats=1, memory=True)
            ga, gr = torch.load(fa), torch.load(fr)
            err = max(float((ga[k] - gr[k]).norm() / gr[k].norm()) for k in gr)
            print(
                f"{size:>5} {a['time_s']:>8.3f} {r['time_s']:>8.2f} "
                f"{r['time_s'] / a['time_s']:>8.1f}x {fb['time_s']:>10.3f} "
                f"{a_mem['peak_mb']:>9.1f} {r_mem['peak_mb']:>8.1f} {fb_mem['peak_mb']:>10.1f} "
                f"{g_mb:>6.1f} {err:>8.1e}",
                flush=True,
            )
    print(
        "speed-up = reference time / patch_agops time (target >= 30x on CPU). Times: best of "
        f"{repeats} after a warm-up (reference: a single cold run).\n"
        "MB = peak memory above the level before the call (CPU: resident set; CUDA: allocated). "
        "G MB = size of the returned AGOPs (float32), included in agops/ref peaks.\n"
        "* the reference goes image by image, so its peak is measured on 1 image."
    )


if __name__ == "__main__":
    main()
