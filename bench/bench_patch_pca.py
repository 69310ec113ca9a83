"""Benchmark: streaming patch PCA (featlearn.energy.patch_pca) against unfold-everything.

Why: the whitening chapter takes the PCA of every 3×3 patch of a dataset. Unfolding all
patches at once (as the paper's code does) needs N × positions × p numbers, 1.5 GB in
float32 for Fashion-MNIST; the streaming covariance holds one batch of patches and a p×p
matrix. This script measures both, in time and in peak resident memory, and checks that
they give the same spectrum.

Usage::

    python bench/bench_patch_pca.py                 # all of Fashion-MNIST, and CIFAR-10 (10,000 images)
    python bench/bench_patch_pca.py --quick         # 10,000 Fashion-MNIST images only
    python bench/bench_patch_pca.py --device cuda

Fashion-MNIST is the real dataset (Debian package or torchvision download). CIFAR-10 is
used where torchvision finds it; offline, a uint8 tensor of CIFAR-10's shape stands in and
the table says so: for time and memory only the shape matters. Each measurement runs in a
fresh subprocess. "peak RSS" is the process's whole resident set at its peak, data
included (the bound the chapter promises: under 2 GB); "above base" is the peak minus the
resident size before the call. Timings are the best of the repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from _harness import dispatch, peak_bytes, run_worker, time_and_peak


def load_images(name: str, n: int | None) -> tuple[torch.Tensor, str]:
    """The benchmark's images as uint8 (N, C, H, W), and a label saying where they came from."""
    from featlearn import data

    if name == "fashion_mnist":
        x, _ = data.load("fashion_mnist", "train", n=n)
        return (x * 255).round().to(torch.uint8), f"Fashion-MNIST, {len(x)} images"
    try:
        x, _ = data.load("cifar10", "train", n=n)
        return (x * 255).round().to(torch.uint8), f"CIFAR-10, {len(x)} images"
    except data.DatasetUnavailable:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n or 50000, 3, 32, 32), generator=g, dtype=torch.uint8)
        return x, f"CIFAR-10-shaped stand-in (offline), {len(x)} images"


def unfold_everything(images: torch.Tensor, q: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: the whole (N·positions, p) patch matrix in float32, centred, then X^T X / N."""
    x = images.float() / 255
    patches = F.unfold(x, q).transpose(1, 2).reshape(-1, x.shape[1] * q * q)
    patches = patches - patches.mean(0)
    cov = (patches.T @ patches).double() / patches.shape[0]
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)
    return evals[order], evecs[:, order]


def worker(args: argparse.Namespace) -> None:
    from featlearn.energy import patch_pca

    device = torch.device(args.device)
    images, _ = load_images(args.dataset, args.n)
    images = images.to(device)

    def stream():
        return patch_pca(
            (images[i : i + args.batch].float() / 255 for i in range(0, len(images), args.batch)), 3
        )

    fn = {"stream": stream, "unfold": lambda: unfold_everything(images)}[args.worker]
    times, above_mb, (lam2, _) = time_and_peak(fn, device, warmup=args.warmup, repeats=args.repeats)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_bytes()
    print(
        json.dumps(
            {"time_s": min(times), "above_mb": above_mb, "peak_mb": peak / 2**20, "lam2": lam2.cpu().tolist()}
        )
    )


def measure(method: str, dataset: str, n: int | None, opts: argparse.Namespace, *, memory: bool) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--dataset",
        dataset,
        "--device",
        opts.device,
        "--batch",
        str(opts.batch),
        "--repeats",
        "1" if memory else str(opts.repeats),
    ]
    if n is not None:
        cmd += ["--n", str(n)]
    if not memory:
        cmd.append("--warmup")
    return run_worker(cmd, memory=memory, device=opts.device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10,000 Fashion-MNIST images only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1024, help="images per streamed batch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dataset", default="fashion_mnist", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if dispatch(opts, worker):
        return
    cases = [("fashion_mnist", 10000)] if opts.quick else [("fashion_mnist", None), ("cifar10", 10000)]
    print(
        f"patch PCA, 3×3 patches, device={opts.device}, torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}, batch={opts.batch}"
    )
    print(
        f"{'data':<48} {'stream s':>9} {'unfold s':>9} {'speed-up':>9} {'stream peak MB':>15} "
        f"{'unfold peak MB':>15} {'stream above MB':>16} {'unfold above MB':>16} {'max rel dλ²':>12}"
    )
    for dataset, n in cases:
        _, label = load_images(dataset, n) if dataset == "cifar10" else (None, None)
        s, u = (
            measure("stream", dataset, n, opts, memory=False),
            measure("unfold", dataset, n, opts, memory=False),
        )
        sm, um = (
            measure("stream", dataset, n, opts, memory=True),
            measure("unfold", dataset, n, opts, memory=True),
        )
        a, b = torch.tensor(s["lam2"]), torch.tensor(u["lam2"])
        err = float(((a - b).abs() / b.abs().max()).max())
        label = label or f"Fashion-MNIST, {n or 60000} images"
        print(
            f"{label:<48} {s['time_s']:>9.2f} {u['time_s']:>9.2f} {u['time_s'] / s['time_s']:>8.1f}x "
            f"{sm['peak_mb']:>15.0f} {um['peak_mb']:>15.0f} {sm['above_mb']:>16.0f} {um['above_mb']:>16.0f} "
            f"{err:>12.1e}",
            flush=True,
        )
    print(
        "speed-up = unfold time / stream time. peak = the process's whole resident set (CUDA: allocated) at "
        "its peak, data included; above = peak minus the level before the call. max rel dλ² = largest "
        "eigenvalue difference between the two, relative to λ²_max (the stream accumulates in float64, the "
        "reference in float32, as the paper's code does)."
    )


if __name__ == "__main__":
    main()
