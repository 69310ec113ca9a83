"""ConvRFM: kernel regression with the conv NTK, whose patch metric is learned by the patch AGOP.

Why: Beaglehole et al. (arXiv 2309.00570) propose that convolutional feature learning is
captured by one recursion: fit a kernel machine, take the average gradient outer product of
its predictor with respect to the input patches, and use (a power of) it as the metric on
patches for the next fit. Iteration 0 is the fixed convolutional kernel.

Interface follows scikit-learn: ``ConvRFM(...).fit(X, y).predict(X)`` and ``score``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from featlearn import kernels
from featlearn._validation import check_finite, check_is_fitted
from featlearn.linalg import matrix_power_psd

__all__ = [
    "predictor_patch_agop",
    "ConvRFM",
    "DeepConvRFM",
    "RFMStep",
    "validation_split",
    "top_filters",
    "dc_free_fraction",
]


def predictor_patch_agop(
    x: torch.Tensor,
    x_train: torch.Tensor,
    alpha: torch.Tensor,
    *,
    q: int,
    depth: int,
    M: torch.Tensor | None = None,
    block_size: int = 64,
) -> torch.Tensor:
    """Patch AGOP of the kernel predictor f(x) = K_M(x, X_train) α, over the images ``x``.

    Every patch of x is a variable of its own (as in the CNFA), and gradients are taken with
    respect to the raw patch (before the metric): G = (1/n) Σ_images Σ_positions Σ_outputs
    ∇_{x_p} f_c ∇_{x_p} f_cᵀ, a (d × d) matrix. f_c(x) depends only on x's own patches, so one
    backward of Σ_x f_c(x) gives every image's gradients at once; the outputs share one
    forward pass per block and are differentiated together (batched vector-Jacobian products).
    """
    if alpha.ndim != 2 or len(alpha) != len(x_train):
        raise ValueError(f"alpha must be ({len(x_train)}, outputs), got {tuple(alpha.shape)}")
    check_finite(x, "x")
    check_finite(x_train, "x_train")
    check_finite(alpha, "alpha (the kernel machine's coefficients)")
    root = kernels.metric_root(M, x.shape[1] * q * q, x)
    n_out = alpha.shape[1]
    d = x.shape[1] * q * q
    eye = torch.eye(n_out, dtype=x.dtype, device=x.device)
    g_total = torch.zeros(d, d, dtype=x.dtype, device=x.device)
    for i in range(0, len(x), block_size):
        p = kernels.raw_patches(x[i : i + block_size], q).detach().requires_grad_(True)
        grads = torch.zeros(n_out, *p.shape, dtype=x.dtype, device=x.device)
        for j in range(0, len(x_train), block_size):
            pz = kernels.raw_patches(x_train[j : j + block_size], q)
            out = (
                kernels.kernel_from_patches(p, pz, q=q, depth=depth, root=root)[1] @ alpha[j : j + block_size]
            )
            cot = eye[:, None, :].expand(n_out, len(p), n_out)  # one cotangent per output
            grads += torch.autograd.grad(out, p, cot, is_grads_batched=True)[0]
        g = grads.reshape(-1, d)
        g_total += g.T @ g
    return g_total / len(x)


@dataclass
class RFMStep:
    """One ConvRFM iteration: the metric used, validation accuracy per λ, and the chosen λ."""

    iteration: int
    M: torch.Tensor
    val_accuracy: dict[float, float]
    train_accuracy: float
    reg: float
    monitor_accuracy: float | None = None  #: accuracy on fit's ``monitor`` set (never used to choose)


class ConvRFM:
    """Convolutional Recursive Feature Machine (scikit-learn style).

    Parameters
    ----------
    q, depth
        Patch size and number of conv + ReLU layers of the NTK (see :mod:`featlearn.kernels`).
    iterations
        AGOP updates; iteration 0 is the fixed kernel (M = I), so ``iterations + 1`` fits.
    regs
        Ridge values λ tried at every iteration, relative to the mean kernel diagonal (the
        official code divides K by max K_train, a similar scale); the best is chosen on the
        validation split.
    power
        M ← G^power, scaled to trace d. The default 1 is the official code's choice: patches
        are multiplied by S = G^{1/2}, so inner products are x_pᵀ G z_p.
    n_agop
        Training images the AGOP averages over (the official s = 20; None: all).
    val_fraction
        Fraction of the training data held out to choose λ and the iteration (when no
        ``X_val`` is passed to :meth:`fit`). The test set is never used.
    block_size, device, dtype
        Kernel blocking, where to compute, and the kernels' precision (the ridge solve is
        always float64).
    seed, progress
        The random split, progress bars.
    """

    def __init__(
        self,
        q: int = 3,
        depth: int = 3,
        iterations: int = 5,
        regs: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
        power: float = 1.0,
        n_agop: int | None = 20,
        val_fraction: float = 0.2,
        block_size: int = 64,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.q, self.depth, self.iterations, self.regs, self.power = q, depth, iterations, tuple(regs), power
        self.n_agop, self.val_fraction, self.block_size = n_agop, val_fraction, block_size
        self.device, self.dtype, self.seed, self.progress = device, dtype, seed, progress

    # -- validation -------------------------------------------------------------------
    def _check_params(self) -> None:
        bad = [
            r
            for r in self.regs
            if isinstance(r, bool) or not isinstance(r, numbers.Real) or not math.isfinite(r) or r < 0
        ]
        if not self.regs or bad:
            raise ValueError(
                f"regs must be a non-empty list of finite ridge values λ >= 0, got {self.regs}"
                + (f" (bad: {bad})" if bad else "")
                + "; e.g. regs=(1e-4, 1e-3, 1e-2). A NaN, inf or negative λ makes the kernel solve fail."
            )
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power}")
        if self.n_agop is not None and self.n_agop < 1:
            raise ValueError(f"n_agop must be >= 1 or None, got {self.n_agop}")

    @staticmethod
    def _check_xy(X: torch.Tensor, y: torch.Tensor | None = None, name: str = "X") -> None:
        if not isinstance(X, torch.Tensor) or X.ndim != 4:
            raise ValueError(f"{name} must be a 4-D tensor (N, C, H, W), got {getattr(X, 'shape', type(X))}")
        if y is not None and (not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(X)):
            raise ValueError(
                f"labels for {name} must be a 1-D tensor of {len(X)} integers, "
                f"got {getattr(y, 'shape', type(y))}"
            )
        check_finite(X, name)  # a NaN pixel would make the kernel, and every prediction, NaN

    # -- fitting --------------------------------------------------------------------------
    def _kernel(self, a: torch.Tensor, b: torch.Tensor | None, M: torch.Tensor | None) -> torch.Tensor:
        k = kernels.conv_ntk(
            a,
            b,
            q=self.q,
            depth=self.depth,
            M=M,
            block_size=self.block_size,
            device=self.device_,
            dtype=self.dtype,
        )
        return k.to(torch.float64)

    @staticmethod
    def _solve(k: torch.Tensor, y1: torch.Tensor, reg: float) -> torch.Tensor:
        scale = k.diagonal().mean()
        eye = torch.eye(len(k), dtype=k.dtype, device=k.device)
        chol = torch.linalg.cholesky(k + (reg + 1e-10) * scale * eye)
        return torch.cholesky_solve(y1, chol)

    def fit(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        X_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None,
        monitor: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> ConvRFM:
        """Fit on (X, y); λ and the iteration are chosen on (X_val, y_val) or a held-out split.

        ``monitor`` = (X_test, y_test) records each iteration's accuracy on that set in
        :attr:`history_`, for plots only; it never influences any choice.
        """
        self._check_params()
        self._check_xy(X, y)
        self.device_ = torch.device(self.device) if self.device is not None else X.device
        X = X.to(self.device_, torch.float64)
        y = y.to(self.device_).long()
        if X_val is None:
            X, y, X_val, y_val = validation_split(X, y, self.val_fraction, self.seed)
        else:
            if y_val is None:
                raise ValueError("X_val was given without y_val; pass both or neither")
            self._check_xy(X_val, y_val, "X_val")
            X_val, y_val = X_val.to(self.device_, torch.float64), y_val.to(self.device_).long()
        if monitor is not None:
            self._check_xy(monitor[0], monitor[1], "monitor images")
        for name, other in (("X_val", X_val), ("monitor images", None if monitor is None else monitor[0])):
            if other is not None and other.shape[1:] != X.shape[1:]:
                raise ValueError(f"{name} must be {tuple(X.shape[1:])} like X, got {tuple(other.shape[1:])}")
        if monitor is not None:
            X_mon, y_mon = monitor[0].to(self.device_, torch.float64), monitor[1].to(self.device_).long()
        self.n_classes_ = int(max(y.max(), y_val.max())) + 1
        y1 = torch.nn.functional.one_hot(y, self.n_classes_).to(torch.float64)
        d = X.shape[1] * self.q * self.q
        M = torch.eye(d, dtype=torch.float64, device=self.device_)
        self.history_: list[RFMStep] = []
        # (val acc, iteration, M, alpha, reg) of the best fit so far
        best: tuple[float, int, torch.Tensor, torch.Tensor, float] | None = None
        n_agop = len(X) if self.n_agop is None else min(self.n_agop, len(X))
        for it in tqdm(range(self.iterations + 1), desc="ConvRFM iterations", disable=not self.progress):
            k_train = self._kernel(X, None, M)
            k_val = self._kernel(X_val, X, M)
            accs, alphas = {}, {}
            for reg in self.regs:
                alphas[reg] = self._solve(k_train, y1, reg)
                accs[reg] = _accuracy(k_val @ alphas[reg], y_val)
            reg = max(self.regs, key=lambda r: accs[r])
            mon = None if monitor is None else _accuracy(self._kernel(X_mon, X, M) @ alphas[reg], y_mon)
            self.history_.append(
                RFMStep(it, M.detach().cpu(), accs, _accuracy(k_train @ alphas[reg], y), reg, mon)
            )
            if best is None or accs[reg] > best[0]:
                best = (accs[reg], it, M.clone(), alphas[reg], reg)
            if it == self.iterations:
                break
            g = predictor_patch_agop(
                X[:n_agop].to(self.dtype),
                X.to(self.dtype),
                alphas[reg].to(self.dtype),
                q=self.q,
                depth=self.depth,
                M=M,
                block_size=self.block_size,
            ).double()
            M = matrix_power_psd(g, self.power)
            M = M * d / M.trace().clamp_min(1e-30)
        assert best is not None  # iteration 0 always sets it
        self.best_val_accuracy_, self.best_iteration_, self.M_, self.alpha_, self.reg_ = best
        self.X_train_ = X
        return self

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Class predictions (N,) with the metric and λ chosen on validation."""
        check_is_fitted(self, "alpha_")
        self._check_xy(X)
        if X.shape[1:] != self.X_train_.shape[1:]:
            raise ValueError(f"images must be {tuple(self.X_train_.shape[1:])}, got {tuple(X.shape[1:])}")
        k = self._kernel(X.to(self.device_, torch.float64), self.X_train_, self.M_)
        return (k @ self.alpha_).argmax(1).cpu()

    def score(self, X: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy on (X, y)."""
        self._check_xy(X, y)
        return self.predict(X).eq(y.cpu()).double().mean().item()

    @property
    def learned_metric_(self) -> torch.Tensor:
        """The chosen iteration's M; if validation chose the fixed kernel (M = I), the last learned M."""
        check_is_fitted(self, "M_")
        return self.M_.cpu() if self.best_iteration_ > 0 else self.history_[-1].M

    def history_frame(self) -> Any:
        """One row per iteration: the λ chosen on validation and the accuracies it gave.

        Why: the chapters show how accuracy moves over the recursion; a tidy table of the
        fit's :attr:`history_` is what they print and plot.

        Returns
        -------
        pandas.DataFrame
            Indexed by ``iteration`` (0 = the fixed kernel), with columns
            ``"λ (relative)"`` (the λ chosen on validation at that iteration), ``train``,
            ``validation`` (at that λ) and ``test`` (the accuracy on fit's ``monitor``
            set; NaN when there was none).

        Examples
        --------
        >>> model.fit(X, y, X_val, y_val, monitor=(X_test, y_test))  # doctest: +SKIP
        >>> model.history_frame()["test"].iloc[0]  # the fixed CNTK's test accuracy  # doctest: +SKIP
        """
        import pandas as pd

        check_is_fitted(self, "history_")
        rows = [
            {
                "iteration": h.iteration,
                "λ (relative)": float(h.reg),
                "train": h.train_accuracy,
                "validation": h.val_accuracy[h.reg],
                "test": math.nan if h.monitor_accuracy is None else h.monitor_accuracy,
            }
            for h in self.history_
        ]
        return pd.DataFrame(rows).set_index("iteration")


class DeepConvRFM:
    """Deep ConvRFM: ConvRFM layer by layer, each layer's metric turned into random filters.

    For ℓ = 0 … layers − 1: fit a ConvRFM with NTK depth ``depth − ℓ`` on the current
    images; then (except after the last layer) featurise them by a VALID conv with
    ``n_filters`` random filters W = G·M^{1/2} (rows drawn from N(0, M), G Gaussian), with no
    nonlinearity. Prediction uses the last layer's machine on the featurised images.

    Parameters
    ----------
    depth
        NTK depth of the first layer; also the number of layers unless ``layers`` is given.
    layers
        How many layers to fit (at most ``depth``).
    n_filters
        Random filters per featurisation (64 in the paper).
    q, iterations, regs, power, n_agop, val_fraction, block_size, device, dtype, seed, progress
        As in :class:`ConvRFM`, for every layer's machine.
    """

    def __init__(
        self,
        depth: int = 3,
        layers: int | None = None,
        n_filters: int = 64,
        *,
        q: int = 3,
        iterations: int = 5,
        regs: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
        power: float = 1.0,
        n_agop: int | None = 20,
        val_fraction: float = 0.2,
        block_size: int = 64,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.depth, self.layers, self.n_filters = depth, layers, n_filters
        self.q, self.iterations, self.regs, self.power = q, iterations, tuple(regs), power
        self.n_agop, self.val_fraction, self.block_size = n_agop, val_fraction, block_size
        self.device, self.dtype, self.seed, self.progress = device, dtype, seed, progress

    def _layer_machine(self, depth: int) -> ConvRFM:
        """The ConvRFM of one layer: this model's settings at NTK depth ``depth``."""
        return ConvRFM(
            q=self.q,
            depth=depth,
            iterations=self.iterations,
            regs=self.regs,
            power=self.power,
            n_agop=self.n_agop,
            val_fraction=self.val_fraction,
            block_size=self.block_size,
            device=self.device,
            dtype=self.dtype,
            seed=self.seed,
            progress=self.progress,
        )

    @staticmethod
    def _conv(X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(X.to(w), w)

    def _featurise(self, X: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        for w in self.filters_[:upto]:
            X = self._conv(X, w)
        return X

    def fit(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        X_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None,
        monitor: tuple[torch.Tensor, torch.Tensor] | None = None,
        first_layer: ConvRFM | None = None,
    ) -> DeepConvRFM:
        """Fit layer by layer; every layer chooses λ and its iteration on the same validation split.

        ``first_layer``: a :class:`ConvRFM` of NTK depth ``depth`` already fitted on exactly
        (X, y, X_val, y_val), reused as layer 0 instead of fitting the same machine twice.
        """
        layers = self.depth if self.layers is None else self.layers
        self._layer_machine(self.depth)._check_params()  # refuse bad λ etc. before any layer is fitted
        if first_layer is not None:
            if not hasattr(first_layer, "alpha_") or first_layer.depth != self.depth or X_val is None:
                raise ValueError(
                    "first_layer must be a fitted ConvRFM of depth "
                    f"{self.depth}, and X_val must be given (the split it was fitted with)"
                )
            if first_layer.X_train_.shape != X.shape:
                raise ValueError(
                    f"first_layer was fitted on {tuple(first_layer.X_train_.shape)} images, "
                    f"not on X {tuple(X.shape)}"
                )
        if not 1 <= layers <= self.depth:
            raise ValueError(f"layers must be between 1 and depth={self.depth}, got {layers}")
        if self.n_filters < 1:
            raise ValueError(f"n_filters must be >= 1, got {self.n_filters}")
        ConvRFM._check_xy(X, y)
        if X_val is not None:
            ConvRFM._check_xy(X_val, y_val, "X_val")
        if monitor is not None:
            ConvRFM._check_xy(monitor[0], monitor[1], "monitor images")
        if X_val is None:
            X, y, X_val, y_val = validation_split(X, y, self.val_fraction, self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        self.filters_: list[torch.Tensor] = []
        self.models_: list[ConvRFM] = []
        x_mon = None if monitor is None else monitor[0]  # featurised along with X and X_val, layer by layer
        for layer in tqdm(range(layers), desc="Deep ConvRFM layers", disable=not self.progress):
            if layer == 0 and first_layer is not None:
                model = first_layer
            else:
                model = self._layer_machine(self.depth - layer)
                model.fit(
                    X,
                    y,
                    X_val,
                    y_val,
                    monitor=None if monitor is None or x_mon is None else (x_mon, monitor[1]),
                )
            self.models_.append(model)
            if layer < layers - 1:
                c, q = X.shape[1], model.q
                root = matrix_power_psd(model.M_, 0.5).cpu()
                g = torch.randn(self.n_filters, c * q * q, generator=gen, dtype=torch.float64)
                w = (g @ root).reshape(self.n_filters, c, q, q).to(model.device_)
                self.filters_.append(w)
                X, X_val = self._conv(X, w), self._conv(X_val, w)
                x_mon = None if x_mon is None else self._conv(x_mon, w)
        return self

    @property
    def layer_val_accuracy_(self) -> list[float]:
        """Best validation accuracy of each layer's ConvRFM."""
        check_is_fitted(self, "models_")
        return [m.best_val_accuracy_ for m in self.models_]

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Class predictions of the last layer's machine."""
        check_is_fitted(self, "models_")
        return self.models_[-1].predict(self._featurise(X))

    def score(self, X: torch.Tensor, y: torch.Tensor, layer: int = -1) -> float:
        """Accuracy on (X, y) of the machine of ``layer`` (default: the last)."""
        check_is_fitted(self, "models_")
        layer = range(len(self.models_))[layer]
        return self.models_[layer].score(self._featurise(X, layer), y)

    def layers_frame(self, X_test: torch.Tensor, y_test: torch.Tensor) -> Any:
        """One row per layer: its CNTK depth, input channels, chosen iteration and accuracies.

        Why: the chapter compares the layers of a Deep ConvRFM; this is that comparison as
        a tidy table, each layer scored on (``X_test``, ``y_test``) by :meth:`score`.

        Parameters
        ----------
        X_test, y_test
            Images (N, C, H, W) and labels (N,) every layer's machine is scored on.

        Returns
        -------
        pandas.DataFrame
            Indexed by ``layer``, with columns ``CNTK depth``, ``input channels``,
            ``best iteration``, ``validation`` (that layer's best validation accuracy) and
            ``test``.
        """
        import pandas as pd

        check_is_fitted(self, "models_")
        rows = [
            {
                "layer": i,
                "CNTK depth": m.depth,
                "input channels": m.X_train_.shape[1],
                "best iteration": m.best_iteration_,
                "validation": m.best_val_accuracy_,
                "test": self.score(X_test, y_test, layer=i),
            }
            for i, m in enumerate(self.models_)
        ]
        return pd.DataFrame(rows).set_index("layer")


def validation_split(
    X: torch.Tensor, y: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X_train, y_train, X_val, y_val): a random ``fraction`` of (X, y) held out, seeded."""
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed)).to(X.device)
    n_val = max(1, int(round(fraction * len(X))))
    return X[perm[n_val:]], y[perm[n_val:]], X[perm[:n_val]], y[perm[:n_val]]


def top_filters(M: torch.Tensor, k: int, channels: int, q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k eigenvectors of a patch metric as (k, channels, q, q) filters, and their eigenvalues."""
    evals, evecs = torch.linalg.eigh((M + M.T) / 2)
    order = evals.argsort(descending=True)[:k]
    filt = evecs[:, order].T.reshape(k, channels, q, q)
    sign = torch.sign(filt.flatten(1).sum(1) + 1e-12)  # fix each eigenvector's arbitrary sign
    return filt * sign[:, None, None, None], evals[order]


def dc_free_fraction(filters: torch.Tensor) -> torch.Tensor:
    """Fraction of each filter's energy orthogonal to the constant (DC) filter, per channel.

    1 means the filter sums to zero in every channel (an edge or texture detector); a flat
    blur filter scores 0, a random filter (q × q) scores 1 − 1/q² on average.
    """
    f = filters.flatten(2)  # (k, C, q²)
    dc = f.mean(-1, keepdim=True).pow(2).sum((1, 2)) * f.shape[-1]
    return 1 - dc / f.pow(2).sum((1, 2)).clamp_min(1e-30)


def _accuracy(scores: torch.Tensor, y: torch.Tensor) -> float:
    return scores.argmax(1).eq(y).double().mean().item()
