"""Benchmark: N two-layer networks trained by online SGD in one batched computation vs one by one.

Why: the localization chapter trains gains × seeds × families of small networks; a Python
loop over networks pays the per-step overhead N times. This script trains the same N
networks (same family members, same init) both ways and prints the ratio.

Usage::

    python bench/bench_nlgp_batched.py             # N = 24, both settings below
    python bench/bench_nlgp_batched.py --quick     # fewer steps
    python bench/bench_nlgp_batched.py --device cuda

Settings: "IG" is the Ingrosso–Goldt network (K = 8 erf units, bias, D = 40) on online
minibatches of 8; "Lufkin" is the single ReLU neuron of Lufkin et al.'s Fig. 3 (D = 40) on
minibatches of 1000. Both on NLGP inputs with N gains. Times are the best of --repeats.
"""

from __future__ import annotations

import argparse
import time

import torch

from featlearn import nlgp

SETTINGS = {
    "IG (K=8 erf, batch 8)": dict(K=8, activation="erf", convention="ig", bias=True, batch=8, lr=0.4),
    "Lufkin (K=1 ReLU, batch 1000)": dict(
        K=1, activation="relu", convention="lufkin", bias=False, batch=1000, lr=0.05
    ),
}


def train(gains: torch.Tensor, cfg: dict, steps: int, D: int, device: torch.device) -> torch.Tensor:
    fam = nlgp.NLGP(gains, D=D)
    net = nlgp.TwoLayer(
        len(gains),
        cfg["K"],
        D,
        activation=cfg["activation"],
        convention=cfg["convention"],
        bias=cfg["bias"],
        generator=torch.Generator().manual_seed(0),
    ).to(device)
    run = nlgp.train_online(
        net, fam, (1.0, 3.0), steps=steps, batch=cfg["batch"], lr=cfg["lr"], record=[steps], progress=False
    )
    return run.weights[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=24, help="number of networks")
    p.add_argument("--steps", type=int, default=None, help="SGD steps (default 300, 60 with --quick)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    opts = p.parse_args()
    steps = opts.steps or (60 if opts.quick else 300)
    device = torch.device(opts.device)
    gains = torch.logspace(-1, 2, opts.n, dtype=torch.float64)
    print(
        f"N = {opts.n} networks, {steps} steps, D = 40, device={opts.device}, torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}"
    )
    print(f"{'setting':<32} {'batched s':>10} {'one by one s':>13} {'speed-up':>9}")
    for name, cfg in SETTINGS.items():
        tb, ts = [], []
        for _ in range(opts.repeats):
            t0 = time.perf_counter()
            train(gains, cfg, steps, 40, device)
            tb.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for g in gains:
                train(g.reshape(1), cfg, steps, 40, device)
            ts.append(time.perf_counter() - t0)
        print(f"{name:<32} {min(tb):>10.2f} {min(ts):>13.2f} {min(ts) / min(tb):>8.1f}x", flush=True)
    print("speed-up = one-by-one time / batched time (target >= 5x at N = 24 on CPU).")


if __name__ == "__main__":
    main()
