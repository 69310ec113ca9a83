"""ConvRFM: kernel regression with the conv NTK, whose patch metric is learned by the patch AGOP.

Why: Beaglehole et al. (arXiv 2309.00570) propose that convolutional feature learning is
captured by one recursion: fit a kernel machine, take the average gradient outer product of
its predictor with respect to the input patches, and use (a power of) it as the metric on
patches for the next fit. Iteration 0 is the fixed convolutional kernel.

Interface follows scikit-learn: ``ConvRFM(...).fit(X, y).predict(X)`` and ``score``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from . import kernels

__all__ = ["predictor_patch_agop", "ConvRFM", "RFMStep"]


def predictor_patch_agop(
    x: torch.Tensor,
    x_train: torch.Tensor,
    alpha: torch.Tensor,
    *,
    q: int,
    depth: int,
    M: torch.Tensor | None = None,
    block_size: int = 256,
) -> torch.Tensor:
    """Patch AGOP of the kernel predictor f(x) = K_M(x, X_train) α, over the images ``x``.

    Every patch of x is a variable of its own (as in the CNFA): G = (1/n) Σ_images
    Σ_positions Σ_outputs ∇_{x_p} f_c ∇_{x_p} f_cᵀ, a (d × d) matrix. One backward pass per
    output and training block; f_c(x) depends only on x's own patches, so a single backward
    of Σ_x f_c(x) gives every image's gradients at once.
    """
    root = kernels.metric_root(M, x.shape[1] * q * q, x)
    p = kernels.raw_patches(x, q).detach().requires_grad_(True)
    d = p.shape[-1]
    g_total = torch.zeros(d, d, dtype=x.dtype, device=x.device)
    for c in range(alpha.shape[1]):
        for j in range(0, len(x_train), block_size):
            pz = kernels.raw_patches(x_train[j:j + block_size], q)
            ntk = kernels.kernel_from_patches(p, pz, q=q, depth=depth, root=root)[1]
            (ntk @ alpha[j:j + block_size, c]).sum().backward()
        g = p.grad.reshape(-1, d)
        g_total += g.T @ g
        p.grad = None
    return g_total / len(x)


@dataclass
class RFMStep:
    """One ConvRFM iteration: the metric used, validation accuracy per λ, and the chosen λ."""

    iteration: int
    M: torch.Tensor
    val_accuracy: dict[float, float]
    train_accuracy: float
    reg: float


class ConvRFM:
    """Convolutional Recursive Feature Machine (scikit-learn style).

    Parameters
    ----------
    q, depth
        Patch size and number of conv layers of the NTK.
    iterations
        AGOP updates; iteration 0 is the fixed kernel (M = I), so ``iterations + 1`` fits.
    regs
        Ridge values λ tried at every iteration (relative to the mean kernel diagonal);
        the best is chosen on the validation split.
    power
        M ← G^power (1/2 in the paper), scaled to trace d.
    n_agop
        Training images the AGOP averages over (None: all).
    val_fraction
        Fraction of the training data held out to choose λ and the iteration (when no
        ``X_val`` is passed to :meth:`fit`). The test set is never used.
    block_size, device, seed, progress
        Kernel blocking, where to compute, the random split, progress bars.
    """

    def __init__(self, q: int = 3, depth: int = 3, iterations: int = 5,
                 regs: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1), power: float = 0.5,
                 n_agop: int | None = None, val_fraction: float = 0.2, block_size: int = 256,
                 device: str | torch.device | None = None, seed: int = 0, progress: bool = True) -> None:
        self.q, self.depth, self.iterations, self.regs, self.power = q, depth, iterations, tuple(regs), power
        self.n_agop, self.val_fraction, self.block_size = n_agop, val_fraction, block_size
        self.device, self.seed, self.progress = device, seed, progress

    # -- validation -------------------------------------------------------------------
    def _check_params(self) -> None:
        if any(r < 0 for r in self.regs) or not self.regs:
            raise ValueError(f"regs must be a non-empty list of λ >= 0, got {self.regs}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    @staticmethod
    def _check_xy(X: torch.Tensor, y: torch.Tensor | None = None) -> None:
        if not isinstance(X, torch.Tensor) or X.ndim != 4:
            raise ValueError(f"X must be a 4-D tensor (N, C, H, W), got {getattr(X, 'shape', type(X))}")
        if y is not None and (not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(X)):
            raise ValueError(f"y must be a 1-D tensor of {len(X)} integer labels, got {getattr(y, 'shape', type(y))}")

    # -- fitting --------------------------------------------------------------------------
    def _kernel(self, a: torch.Tensor, b: torch.Tensor | None, M: torch.Tensor | None) -> torch.Tensor:
        return kernels.conv_ntk(a, b, q=self.q, depth=self.depth, M=M, block_size=self.block_size,
                                device=self.device_)

    def _solve(self, k: torch.Tensor, y1: torch.Tensor, reg: float) -> torch.Tensor:
        scale = k.diagonal().mean()
        eye = torch.eye(len(k), dtype=k.dtype, device=k.device)
        chol = torch.linalg.cholesky(k + reg * scale * eye + 1e-12 * scale * eye)
        return torch.cholesky_solve(y1, chol)

    def fit(self, X: torch.Tensor, y: torch.Tensor, X_val: torch.Tensor | None = None,
            y_val: torch.Tensor | None = None) -> ConvRFM:
        """Fit on (X, y); λ and the iteration are chosen on (X_val, y_val) or a held-out split."""
        self._check_params()
        self._check_xy(X, y)
        self.device_ = torch.device(self.device) if self.device is not None else X.device
        X = X.to(self.device_, torch.float64)
        y = y.to(self.device_).long()
        if X_val is None:
            g = torch.Generator().manual_seed(self.seed)
            perm = torch.randperm(len(X), generator=g).to(self.device_)
            n_val = max(1, int(round(self.val_fraction * len(X))))
            X_val, y_val, X, y = X[perm[:n_val]], y[perm[:n_val]], X[perm[n_val:]], y[perm[n_val:]]
        else:
            self._check_xy(X_val, y_val)
            X_val, y_val = X_val.to(self.device_, torch.float64), y_val.to(self.device_).long()
        self.n_classes_ = int(max(y.max(), y_val.max())) + 1
        y1 = torch.nn.functional.one_hot(y, self.n_classes_).to(torch.float64)
        d = X.shape[1] * self.q * self.q
        M = torch.eye(d, dtype=torch.float64, device=self.device_)
        self.history_: list[RFMStep] = []
        best = (-1.0, 0, None, None, None)  # (val acc, iteration, M, alpha, reg)
        n_agop = len(X) if self.n_agop is None else min(self.n_agop, len(X))
        for it in tqdm(range(self.iterations + 1), desc="ConvRFM", disable=not self.progress):
            k_train = self._kernel(X, None, M)
            k_val = self._kernel(X_val, X, M)
            accs, alphas = {}, {}
            for reg in self.regs:
                alphas[reg] = self._solve(k_train, y1, reg)
                accs[reg] = (k_val @ alphas[reg]).argmax(1).eq(y_val).double().mean().item()
            reg = max(self.regs, key=lambda r: accs[r])
            train_acc = (k_train @ alphas[reg]).argmax(1).eq(y).double().mean().item()
            self.history_.append(RFMStep(it, M.detach().cpu(), accs, train_acc, reg))
            if accs[reg] > best[0]:
                best = (accs[reg], it, M.clone(), alphas[reg], reg)
            if it == self.iterations:
                break
            g = predictor_patch_agop(X[:n_agop], X, alphas[reg], q=self.q, depth=self.depth, M=M,
                                     block_size=self.block_size)
            evals, evecs = torch.linalg.eigh((g + g.T) / 2)
            M = (evecs * evals.clamp_min(0).pow(self.power)) @ evecs.T
            M = M * d / M.trace().clamp_min(1e-30)
        self.best_val_accuracy_, self.best_iteration_, self.M_, self.alpha_, self.reg_ = best
        self.X_train_ = X
        return self

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Class predictions (N,) with the metric and λ chosen on validation."""
        if not hasattr(self, "alpha_"):
            raise RuntimeError("call fit() before predict()")
        self._check_xy(X)
        if X.shape[1:] != self.X_train_.shape[1:]:
            raise ValueError(f"images must be {tuple(self.X_train_.shape[1:])}, got {tuple(X.shape[1:])}")
        k = self._kernel(X.to(self.device_, torch.float64), self.X_train_, self.M_)
        return (k @ self.alpha_).argmax(1).cpu()

    def score(self, X: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy on (X, y)."""
        self._check_xy(X, y)
        return self.predict(X).eq(y.cpu()).double().mean().item()
