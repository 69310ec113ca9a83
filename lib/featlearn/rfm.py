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
    "edge_likeness",
    "random_metrics",
    "subset_fits",
    "curve_point",
    "learning_curve",
    "stand_in_table",
    "shuffled_label_metrics",
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
    ∇_{x_p} f_c ∇_{x_p} f_cᵀ, a (d × d) matrix.

    How, exactly and in one backward pass: the kernel K(x, z_b) depends on x's patch x_p
    only through the first-layer maps Σ_p(x, z_b) = t(x_p)·t(z_{b,p}) and d_p(x) = |t(x_p)|²,
    with t(v) = v L / √d and M = L Lᵀ (:func:`featlearn.kernels.layer1_maps`). Give every
    pair its own copy of d_p; then one backward of Σ_{x, b} K(x, z_b) yields each pair's
    sensitivities S = ∂K/∂Σ_p and D = ∂K/∂d_p, and for every output c

    ∇_{x_p} f_c = [Σ_b α_bc S_{p,b} t(z_{b,p}) + 2 t(x_p) Σ_b α_bc D_{p,b}] Lᵀ / √d,

    two batched matrix products instead of one backward pass per output.
    """
    if alpha.ndim != 2 or len(alpha) != len(x_train):
        raise ValueError(f"alpha must be ({len(x_train)}, outputs), got {tuple(alpha.shape)}")
    check_finite(x, "x")
    check_finite(x_train, "x_train")
    check_finite(alpha, "alpha (the kernel machine's coefficients)")
    d = x.shape[1] * q * q
    root = kernels.metric_root(M, d, x)
    n_out = alpha.shape[1]
    alpha = alpha.to(x.dtype)
    g_total = torch.zeros(d, d, dtype=x.dtype, device=x.device)
    train_blocks = [
        (
            alpha[j : j + block_size],
            kernels.position_major(
                kernels.transform_patches(kernels.raw_patches(x_train[j : j + block_size], q), root)
            ),
        )
        for j in range(0, len(x_train), block_size)
    ]
    for i in range(0, len(x), block_size):
        tx = kernels.position_major(
            kernels.transform_patches(kernels.raw_patches(x[i : i + block_size], q), root)
        )
        h, w, a, _ = tx.shape
        u = torch.zeros(h * w, a, n_out, d, dtype=x.dtype, device=x.device)
        v = torch.zeros(h * w, a, n_out, dtype=x.dtype, device=x.device)
        for alpha_j, tz in train_blocks:
            with torch.no_grad():
                sigma, dx, dz = kernels.layer1_maps(tx, tz)
            sigma.requires_grad_(True)
            dx = dx.expand_as(sigma).clone().requires_grad_(True)  # one copy per pair
            with torch.enable_grad():
                ntk = kernels.kernel_from_layer1(sigma, dx, dz, q, depth)[1]
                s_grad, d_grad = torch.autograd.grad(ntk.sum(), (sigma, dx))
            b = tz.shape[2]
            s_grad, d_grad = s_grad.view(h * w, a, b), d_grad.view(h * w, a, b)
            t_z = tz.view(h * w, b, d)
            for c in range(n_out):  # u[p, a, c] += Σ_b S[p, a, b] α[b, c] t(z)[p, b]
                u[:, :, c] += torch.bmm(s_grad * alpha_j[:, c], t_z)
            v += d_grad @ alpha_j  # v[p, a, c] = Σ_b D[p, a, b] α[b, c]
        grads = u + 2 * tx.view(h * w, a, 1, d) * v[..., None]
        grads = grads.reshape(-1, d)
        if root is not None:
            grads = grads @ root.T
        g_total += grads.T @ grads / d
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
        for it in tqdm(range(self.iterations + 1), desc="ConvRFM iterations", disable=not self.progress):
            k_train = self._kernel(X, None, M)
            k_val = self._kernel(X_val, X, M)
            if it == 0:  # label-free: kept for other labels of the same images (first_metrics)
                self._fixed_kernels = (k_train.cpu(), k_val.cpu())
            accs, alphas, reg = self._ridge(k_train, k_val, y1, y_val)
            mon = None if monitor is None else _accuracy(self._kernel(X_mon, X, M) @ alphas[reg], y_mon)
            self.history_.append(
                RFMStep(it, M.detach().cpu(), accs, _accuracy(k_train @ alphas[reg], y), reg, mon)
            )
            if best is None or accs[reg] > best[0]:
                best = (accs[reg], it, M.clone(), alphas[reg], reg)
            if it == self.iterations:
                break
            M = self._next_metric(X, alphas[reg], M)
        assert best is not None  # iteration 0 always sets it
        self.best_val_accuracy_, self.best_iteration_, self.M_, self.alpha_, self.reg_ = best
        self.X_train_, self.y_train_, self.X_val_, self.y_val_ = X, y, X_val, y_val
        return self

    def _ridge(
        self, k_train: torch.Tensor, k_val: torch.Tensor, y1: torch.Tensor, y_val: torch.Tensor
    ) -> tuple[dict[float, float], dict[float, torch.Tensor], float]:
        """Validation accuracy and coefficients for every λ, and the λ validation chooses."""
        accs, alphas = {}, {}
        for reg in self.regs:
            alphas[reg] = self._solve(k_train, y1, reg)
            accs[reg] = _accuracy(k_val @ alphas[reg], y_val)
        return accs, alphas, max(self.regs, key=lambda r: accs[r])

    def _next_metric(self, X: torch.Tensor, alpha: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """One AGOP update: G of the predictor over the first ``n_agop`` images, M = G^power, trace d."""
        n_agop = len(X) if self.n_agop is None else min(self.n_agop, len(X))
        g = predictor_patch_agop(
            X[:n_agop].to(self.dtype),
            X.to(self.dtype),
            alpha.to(self.dtype),
            q=self.q,
            depth=self.depth,
            M=M,
            block_size=self.block_size,
        ).double()
        M = matrix_power_psd(g, self.power)
        return M * M.shape[0] / M.trace().clamp_min(1e-30)

    def first_metrics(
        self, labels: list[tuple[torch.Tensor, torch.Tensor]], *, progress: bool | None = None
    ) -> list[torch.Tensor]:
        """The metric one AGOP iteration learns from the same images under other labels.

        Why: the shuffled-label null of the learned metric must be the same estimator on the
        same images; the iteration-0 kernels do not depend on the labels, so they are reused
        from :meth:`fit` and each relabelling costs one ridge solve per λ and one AGOP.

        Parameters
        ----------
        labels
            (training labels, validation labels) pairs, for the training and validation
            images this machine was fitted on (:attr:`y_train_`, :attr:`y_val_` order).
        progress
            A tqdm bar over the relabellings (default: the machine's ``progress``).

        Returns
        -------
        list[torch.Tensor]
            For each pair, the (d × d) metric that ``ConvRFM(iterations=1)`` with these
            settings would hold as ``history_[1].M`` after fitting those labels (CPU, float64).
        """
        check_is_fitted(self, "alpha_")
        k_train, k_val = (k.to(self.device_) for k in self._fixed_kernels)
        eye = torch.eye(self.M_.shape[0], dtype=torch.float64, device=self.device_)
        out = []
        show = self.progress if progress is None else progress
        for y, y_val in tqdm(labels, desc="relabelled AGOPs", disable=not show):
            y, y_val = y.to(self.device_).long(), y_val.to(self.device_).long()
            if y.shape != self.y_train_.shape or y_val.shape != self.y_val_.shape:
                raise ValueError(
                    f"labels must be ({len(self.y_train_)},) and ({len(self.y_val_)},) like the fitted "
                    f"machine's, got {tuple(y.shape)} and {tuple(y_val.shape)}"
                )
            if int(y.min()) < 0 or int(max(y.max(), y_val.max())) >= self.n_classes_:
                raise ValueError(f"labels must lie in 0 … {self.n_classes_ - 1}")
            y1 = torch.nn.functional.one_hot(y, self.n_classes_).to(torch.float64)
            _, alphas, reg = self._ridge(k_train, k_val, y1, y_val)
            out.append(self._next_metric(self.X_train_, alphas[reg], eye).cpu())
        return out

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


def edge_likeness(M: torch.Tensor, channels: int, q: int, k: int = 3) -> float:
    """Mean DC-free fraction (:func:`dc_free_fraction`) of the top-``k`` eigenvectors of ``M``.

    Why: the paper shows the top eigenvectors of a learned patch metric as edge detectors;
    this is that reading as one number, the same for a learned, a shuffled-label and a
    random metric, so that they can be compared.

    Parameters
    ----------
    M
        A symmetric (d × d) patch metric, d = channels·q·q in ``conv.weight.flatten(1)`` order.
    channels, q
        Input channels and patch side.
    k
        How many of the largest eigenvectors to average over (1 <= k <= d).

    Returns
    -------
    float
        In [0, 1]: 1 if every top eigenvector sums to zero in every channel. A random
        direction scores 1 − 1/q² on average.
    """
    d = channels * q * q
    if not isinstance(M, torch.Tensor) or M.shape != (d, d):
        raise ValueError(
            f"M must be a ({d}, {d}) tensor for {channels}×{q}×{q} patches, got {getattr(M, 'shape', M)}"
        )
    if not 1 <= k <= d:
        raise ValueError(f"k must be between 1 and {d}, got {k}")
    filters, _ = top_filters(M.detach().cpu().double(), k, channels, q)
    return float(dc_free_fraction(filters).mean())


def random_metrics(d: int, n_draws: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_draws`` random (d × d) patch metrics: Wishart A Aᵀ/d, A Gaussian, scaled to trace d.

    Why: the null of "what the learned metric looks like": its eigenvectors are uniformly
    random directions (any Wishart's are), with no image statistics and no labels in them.
    Scaled to trace d like ConvRFM's metrics.

    Returns
    -------
    torch.Tensor
        (n_draws, d, d), float64, deterministic under ``generator``; the first k draws are
        the same whatever ``n_draws``.
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    # one draw at a time: the first k draws do not depend on n_draws
    a = torch.stack([torch.randn(d, d, generator=g, dtype=torch.float64) for _ in range(n_draws)])
    m = a @ a.transpose(1, 2)
    return m * d / m.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]


def subset_fits(
    X: torch.Tensor,
    y: torch.Tensor,
    X_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    n: int,
    n_draws: int,
    shuffle_labels: bool = False,
    seed: int = 0,
    monitor: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = True,
    **params: Any,
) -> list[ConvRFM]:
    """ConvRFMs fitted to ``n_draws`` random ``n``-image subsets of (X, y), paired by seed.

    Why: the shuffled-label null of a ConvRFM (with ``shuffle_labels``, the subset's labels
    and the validation labels are permuted: the same estimator on data whose labels say
    nothing about the images), and, with the same ``seed``, the real-label machines on the
    very same subsets; and the points of a learning curve.

    Draw k uses ``torch.Generator().manual_seed(seed + k)``: first the subset, then (if
    ``shuffle_labels``) the two permutations (:func:`featlearn.nulls.shuffled_labels`), so a
    real-label and a shuffled-label call with the same ``seed`` see the same images.

    Parameters
    ----------
    X, y, X_val, y_val
        Training images (N, C, H, W) with labels, and the validation split that chooses λ
        and the iteration.
    n
        Training images per draw (2 <= n <= N).
    n_draws
        How many subsets.
    shuffle_labels
        Permute the training subset's and the validation labels (independently).
    seed
        Seeds the draws as above; machine k gets ``seed=seed + k``.
    monitor
        (X_test, y_test) recorded per iteration in each machine's history (never chooses).
    progress
        A tqdm bar over the draws (the machines' own bars are off).
    **params
        :class:`ConvRFM` settings (q, depth, iterations, regs, n_agop, block_size, device...).

    Returns
    -------
    list[ConvRFM]
        The fitted machines, in draw order.
    """
    from featlearn.nulls import shuffled_labels

    ConvRFM._check_xy(X, y)
    ConvRFM._check_xy(X_val, y_val, "X_val")
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= len(X):
        raise ValueError(f"n must be an int between 2 and {len(X)} (the training images), got {n!r}")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    models: list[ConvRFM] = []
    label = "shuffled-label" if shuffle_labels else "real-label"
    for k in tqdm(range(n_draws), desc=f"{label} ConvRFMs on {n} images", disable=not progress):
        g = torch.Generator().manual_seed(seed + k)
        idx = torch.randperm(len(X), generator=g)[:n].to(X.device)
        ys, yv = y[idx], y_val
        if shuffle_labels:
            ys = shuffled_labels(ys, generator=g)
            yv = shuffled_labels(y_val, generator=g)
        model = ConvRFM(seed=seed + k, progress=False, **params)
        models.append(model.fit(X[idx], ys, X_val, yv, monitor=monitor))
    return models


def shuffled_label_metrics(
    model: ConvRFM, n_draws: int, *, seed: int = 0, progress: bool = True
) -> list[torch.Tensor]:
    """The shuffled-label null of a fitted ConvRFM's first learned metric, ``n_draws`` times.

    Why: edge-like or CNN-like eigenvectors are evidence of learning the task only if the
    same estimator, on the same images with labels that say nothing about them, does not
    produce them too. Draw k permutes the training and the validation labels with
    ``torch.Generator().manual_seed(seed + k)`` (:func:`featlearn.nulls.shuffled_labels`)
    and returns the metric one AGOP iteration learns from them
    (:meth:`ConvRFM.first_metrics`), to compare with ``model.history_[1].M``.

    Returns
    -------
    list[torch.Tensor]
        ``n_draws`` (d × d) metrics, CPU float64.
    """
    from featlearn.nulls import shuffled_labels

    check_is_fitted(model, "alpha_")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    labels = []
    for k in range(n_draws):
        g = torch.Generator().manual_seed(seed + k)
        y = shuffled_labels(model.y_train_.cpu(), generator=g)
        labels.append((y, shuffled_labels(model.y_val_.cpu(), generator=g)))
    return model.first_metrics(labels, progress=progress)


def curve_point(model: ConvRFM, iterations: int | None = None) -> dict[str, Any]:
    """One learning-curve row from a ConvRFM fitted with a ``monitor`` set.

    Why: the fixed kernel and the learned metric are compared on the same fit: iteration 0
    is the fixed CNTK (its λ chosen on validation) and the iteration validation chooses is
    ConvRFM. ``iterations`` truncates a longer fit, choosing among its first
    ``iterations + 1`` fits by the same rule as :meth:`ConvRFM.fit` (the first best
    validation accuracy), so that machines fitted with more iterations compare fairly.

    Returns
    -------
    dict
        ``n`` (training images), ``fixed CNTK`` and ``ConvRFM`` (monitor accuracies in
        [0, 1]), ``gain`` (their difference), ``best iteration``, and ``last metric``: the
        monitor accuracy of the last iteration read, whether validation chose it or not
        (what the learned metric itself does).
    """
    check_is_fitted(model, "history_")
    if iterations is not None and (
        isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0
    ):
        raise ValueError(f"iterations must be an int >= 0 or None, got {iterations!r}")
    hist = model.history_ if iterations is None else model.history_[: iterations + 1]
    accs = [h.monitor_accuracy for h in hist if h.monitor_accuracy is not None]
    if len(accs) != len(hist):
        raise ValueError("curve_point needs a ConvRFM fitted with monitor=(X_test, y_test)")
    val = [h.val_accuracy[h.reg] for h in hist]
    best = max(range(len(hist)), key=lambda i: (val[i], -i))  # the first best, as fit keeps it
    fixed, learned = float(accs[0]), float(accs[best])
    return {
        "n": len(model.X_train_),
        "fixed CNTK": fixed,
        "ConvRFM": learned,
        "gain": learned - fixed,
        "best iteration": best,
        "last metric": float(accs[-1]),
    }


def learning_curve(
    X: torch.Tensor,
    y: torch.Tensor,
    X_val: torch.Tensor,
    y_val: torch.Tensor,
    monitor: tuple[torch.Tensor, torch.Tensor],
    sizes: tuple[int, ...] | list[int],
    *,
    n_draws: int = 1,
    seed: int = 0,
    fitted: tuple[ConvRFM, ...] | list[ConvRFM] = (),
    progress: bool = True,
    **params: Any,
) -> Any:
    """Test accuracy of the fixed CNTK and of ConvRFM against the number of training images.

    Why: whether learning the patch metric pays off depends on n (the AGOP is estimated
    from the fitted predictor); a curve says at which n the gain appears, if at all.

    Each size in ``sizes`` gets ``n_draws`` machines on random subsets
    (:func:`subset_fits`, real labels, the same validation split); machines in ``fitted``
    (already fitted with the same ``monitor``, e.g. the full-size one) add their own rows,
    read at the ``iterations`` of ``params`` when given (:func:`curve_point`).

    Returns
    -------
    pandas.DataFrame
        One row per machine (:func:`curve_point`), with a ``draw`` column, sorted by ``n``.
    """
    import pandas as pd

    rows = []
    for n in sizes:
        for k, model in enumerate(
            subset_fits(
                X,
                y,
                X_val,
                y_val,
                n=n,
                n_draws=n_draws,
                seed=seed,
                monitor=monitor,
                progress=progress,
                **params,
            )
        ):
            rows.append({**curve_point(model), "draw": k})
    rows += [{**curve_point(model, params.get("iterations")), "draw": 0} for model in fitted]
    if not rows:
        raise ValueError("learning_curve needs at least one size or one fitted machine")
    return pd.DataFrame(rows).sort_values(["n", "draw"], kind="stable").reset_index(drop=True)


def stand_in_table(panels: Any) -> Any:
    """A learned metric's scores beside its stand-ins' draws, one row per stand-in.

    Why: the chapter shows each measure of the learned metric next to what shuffled-label
    machines, random metrics and untrained networks score on it; this is that comparison
    as a table (the same input as :func:`featlearn.plots.plot_metric_nulls`).

    Parameters
    ----------
    panels
        Measure → (label → a number, or a 1-d sequence of null draws).

    Returns
    -------
    pandas.DataFrame
        Indexed by (measure, label), with columns ``mean``, ``q05``, ``q95`` (the 5th and
        95th percentiles; a single number is its own) and ``n`` (how many values).
    """
    import pandas as pd

    rows = {}
    for measure, entries in panels.items():
        for label, values in entries.items():
            v = torch.as_tensor(values, dtype=torch.float64).detach().cpu().flatten()
            if v.numel() == 0 or not torch.isfinite(v).all():
                raise ValueError(f"{measure} / {label}: need finite values, got {v.tolist()}")
            rows[(measure, label)] = {
                "mean": float(v.mean()),
                "q05": float(v.quantile(0.05)),
                "q95": float(v.quantile(0.95)),
                "n": v.numel(),
            }
    return pd.DataFrame.from_dict(rows, orient="index")


def _accuracy(scores: torch.Tensor, y: torch.Tensor) -> float:
    return scores.argmax(1).eq(y).double().mean().item()
