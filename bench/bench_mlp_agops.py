"""Benchmark: featlearn.agop.mlp_agops against per-layer ``vmap(jacrev)`` Jacobians.

Why: the DNFA chapters need the AGOP G_i of every linear layer of an MLP; ``mlp_agops``
gets all of them from one forward pass per input batch and one batched backward per
output chunk (through G_i = W_i^T P_i W_i). This script measures what that saves over the
straightforward route, layer by layer: split the ``nn.Sequential`` at linear layer i,
h_i = prefix(x), J_i = vmap(jacrev(suffix))(h_i), G_i = (1/n) sum_x J_i^T J_i.

Setting (from the issue): bias-free ReLU MLP, input dim 784 (Fashion-MNIST size, random
inputs), ``--depth`` hidden Linear+ReLU layers of ``--width``, a Linear readout to 10
outputs, all depth + 1 linear layers, float32.

Usage::

    python bench/bench_mlp_agops.py             # width 1024, depth 3, 1000 inputs
    python bench/bench_mlp_agops.py --quick     # 200 inputs, 1 repeat (< 1 min on CPU)
    python bench/bench_mlp_agops.py --device cuda
    python bench/bench_mlp_agops.py --threads 1 # steadier timings on a busy machine

Each measurement runs in a fresh subprocess so that peak memory is its own: on CPU the
peak resident set size (VmHWM, reset via /proc/self/clear_refs where Linux allows, else
ru_maxrss) minus the resident size just before the measured call, with glibc told to
return large blocks to the OS (MALLOC_MMAP_THRESHOLD_); on CUDA
``torch.cuda.max_memory_allocated`` minus the allocation before the call. Time and memory
are measured in separate runs. Timings are the best of the repeats after one warm-up call
(both methods). Both methods take the inputs in batches of ``--batch-size`` (default: all
at once, the fastest for both here). The script also checks that both give the same G
(max relative Frobenius error over layers).

Two baselines put the numbers in scale: "fwd+bwd" is one plain forward and backward pass
of the batch (sum of the outputs); "grams" is the time of the products J^T J alone
(random (10 n, d_i) matrices, one per layer), which both methods must do in some form.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch
from torch import nn

from _harness import dispatch, run_worker, time_and_peak

D_IN = 784
N_OUT = 10


def make_mlp(width: int, depth: int, d_in: int = D_IN, n_out: int = N_OUT) -> nn.Sequential:
    """Bias-free ReLU MLP as a flat Sequential: linear layers are "0", "2", ..., str(2*depth)."""
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        mods += [nn.Linear(d, width, bias=False), nn.ReLU()]
        d = width
    mods.append(nn.Linear(d, n_out, bias=False))
    return nn.Sequential(*mods)


def reference_mlp_g(model: nn.Sequential, inputs: torch.Tensor, batch_size: int) -> dict:
    """G of every linear layer, one layer at a time, by vmap(jacrev) of the suffix network."""
    n = inputs.shape[0]
    out: dict[str, torch.Tensor] = {}
    for k, m in enumerate(model):
        if not isinstance(m, nn.Linear):
            continue
        prefix, suffix = model[:k], model[k:]
        jac = torch.func.vmap(torch.func.jacrev(suffix))
        g = None
        for s in range(0, n, batch_size):
            with torch.no_grad():
                h = prefix(inputs[s : s + batch_size])
            j = jac(h).detach()  # (b, K, d_k)
            j = j.reshape(-1, j.shape[-1])
            gb = j.T @ j
            g = gb if g is None else g + gb
        out[str(k)] = g / n
    return out


# ---------------------------------------------------------------------------------------
# Worker: one measurement in a fresh process
# ---------------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    from featlearn.agop import mlp_agops

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_mlp(args.width, args.depth).to(device).eval()
    inputs = torch.randn(args.n_inputs, D_IN, device=device)
    bs = args.batch_size or args.n_inputs
    grams = None
    if args.worker == "grams":
        dims = [m.in_features for m in model if isinstance(m, nn.Linear)]
        grams = [torch.randn(N_OUT * min(bs, args.n_inputs), d, device=device) for d in dims]

    def run_agops():
        res = mlp_agops(model, inputs, chunk_size=args.chunk_size, batch_size=bs)
        return {k: v.G for k, v in res.items()}

    def run_reference():
        return reference_mlp_g(model, inputs, bs)

    def run_fwd_bwd():
        for s in range(0, args.n_inputs, bs):
            x = inputs[s : s + bs].detach().requires_grad_(True)
            model(x).sum().backward()
        model.zero_grad(set_to_none=True)
        return None

    def run_grams():
        for _ in range(0, args.n_inputs, bs):
            for a in grams:
                a.T @ a
        return None

    fn = {
        "agops": run_agops,
        "reference": run_reference,
        "fwd_bwd": run_fwd_bwd,
        "grams": run_grams,
    }[args.worker]

    times, peak_mb, result = time_and_peak(fn, device, warmup=args.warmup, repeats=args.repeats)
    if result is not None and args.save:
        torch.save({k: v.detach().cpu() for k, v in result.items()}, args.save)
    print(json.dumps({"time_s": min(times), "peak_mb": peak_mb}))


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------


def measure(
    method: str,
    opts: argparse.Namespace,
    *,
    n_inputs: int,
    repeats: int,
    memory: bool = False,
    save: str | None = None,
) -> dict:
    """Run one worker subprocess (with a warm-up call) and return its JSON result."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--n-inputs",
        str(n_inputs),
        "--device",
        opts.device,
        "--width",
        str(opts.width),
        "--depth",
        str(opts.depth),
        "--chunk-size",
        str(opts.chunk_size),
        "--batch-size",
        str(opts.batch_size or 0),
        "--repeats",
        str(repeats),
        "--threads",
        str(opts.threads or 0),
        "--warmup",
    ]
    if save:
        cmd += ["--save", save]
    return run_worker(cmd, memory=memory, device=opts.device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 inputs, 1 repeat (< 1 min on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--width", type=int, default=1024, help="hidden width (default 1024)")
    p.add_argument("--depth", type=int, default=3, help="hidden Linear+ReLU layers (default 3)")
    p.add_argument("--n-inputs", type=int, default=None, help="default 1000 (200 with --quick)")
    p.add_argument("--chunk-size", type=int, default=10, help="outputs per batched backward")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="inputs per forward pass, both methods (default: all inputs)",
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="timed repeats after a warm-up (default 3, 1 with --quick)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    # internal
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.batch_size == 0:
        opts.batch_size = None

    if dispatch(opts, worker):
        return
    n = opts.n_inputs or (200 if opts.quick else 1000)
    repeats = opts.repeats or (1 if opts.quick else 3)
    bs = opts.batch_size or n

    print(
        f"Bias-free ReLU MLP {D_IN} -> {opts.depth} x {opts.width} -> {N_OUT}, all "
        f"{opts.depth + 1} linear layers, {n} random inputs, batch_size={bs}, "
        f"chunk_size={opts.chunk_size}, float32, device={opts.device}, "
        f"torch {torch.__version__}, threads={opts.threads or torch.get_num_threads()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        fa, fr = os.path.join(tmp, "a.pt"), os.path.join(tmp, "r.pt")
        a = measure("agops", opts, n_inputs=n, repeats=repeats, save=fa)
        r = measure("reference", opts, n_inputs=n, repeats=repeats, save=fr)
        fb = measure("fwd_bwd", opts, n_inputs=n, repeats=repeats)
        gr = measure("grams", opts, n_inputs=n, repeats=repeats)
        ga, gref = torch.load(fa), torch.load(fr)
        errs = {k: float((ga[k] - gref[k]).norm() / gref[k].norm()) for k in gref}
        if set(ga) != set(gref):
            raise RuntimeError(f"layer names differ: {sorted(ga)} vs {sorted(gref)}")
        mem = {}
        if not opts.no_memory:
            for m in ("agops", "reference", "fwd_bwd"):
                mem[m] = measure(m, opts, n_inputs=n, repeats=1, memory=True)["peak_mb"]

    g_mb = sum(v.numel() * 4 for v in ga.values()) / 2**20
    rows = [
        ("mlp_agops", a["time_s"], mem.get("agops")),
        ("reference (vmap jacrev)", r["time_s"], mem.get("reference")),
        ("plain fwd+bwd", fb["time_s"], mem.get("fwd_bwd")),
        ("grams J^T J only", gr["time_s"], None),
    ]
    print(f"{'method':<24} {'time s':>8} {'peak MB':>8}")
    for name, t, mb in rows:
        mb_s = f"{mb:>8.1f}" if mb is not None else f"{'-':>8}"
        print(f"{name:<24} {t:>8.3f} {mb_s}")
    speedup = r["time_s"] / a["time_s"]
    print(
        f"speed-up (reference / mlp_agops): {speedup:.1f}x  (target >= 10x on CPU: "
        f"{'met' if speedup >= 10 else 'NOT met'})"
    )
    print(
        "max relative Frobenius error of G over layers: "
        f"{max(errs.values()):.1e}  (" + ", ".join(f"{k}: {v:.1e}" for k, v in errs.items()) + ")"
    )
    print(
        f"Times: best of {repeats} after a warm-up. Peak MB: above the level before the call "
        "(CPU: resident set; CUDA: allocated), one call; includes the returned AGOPs "
        f"({g_mb:.1f} MB of G, plus P for mlp_agops)."
    )


if __name__ == "__main__":
    main()
