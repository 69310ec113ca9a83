"""Tests of featlearn.agop against the brute-force oracle in tests/agop_reference.py."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from agop_reference import reference_mlp_agops, reference_patch_agop
from featlearn.agop import (
    agop_from_output_gop,
    cnfm,
    mlp_agops,
    nfm,
    patch_agop,
    patch_agops,
    patch_output_gops,
)
from featlearn.ansatz import ansatz_correlation, ansatz_correlations
from featlearn.isotropy import isotropy_measures
from featlearn.linalg import cosine_similarity_matrices, matrix_power_psd

DT = torch.float64


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())  # b must be nonzero


# ----------------------------------------------------------------------------------------
# Random CNNs
# ----------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(self.conv(torch.relu(x)))


class SmallCNN(nn.Module):
    """Stride 2, padding, dilation, bias/no bias, in-place ReLU, max-pool, residual, BN."""

    def __init__(self, n_out: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=True)
        self.relu = nn.ReLU(inplace=True)  # in place right after a conv: must not fool us
        self.conv2 = nn.Conv2d(4, 6, 3, padding=2, dilation=2, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.block = ResBlock(6)
        self.conv3 = nn.Conv2d(6, 5, 2, stride=2, padding=1, padding_mode="circular")
        self.fc = nn.Linear(5 * 2 * 2, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.pool(torch.tanh(self.conv2(x)))
        x = self.block(x)
        x = torch.relu(self.conv3(x))
        return self.fc(x.flatten(1))


class SharedConvCNN(nn.Module):
    """The same conv applied twice (weight sharing): G sums over both calls."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 3, 3, padding=1)
        self.shared = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.tanh(self.shared(x))
        x = torch.tanh(self.shared(x))
        return self.fc(x.mean(dim=(2, 3)))


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=DT) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=DT) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen, dtype=DT))


@pytest.fixture(scope="module")
def cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = SmallCNN().to(DT).eval()
    gen = torch.Generator().manual_seed(1)
    _randomize_bn(model, gen)
    images = torch.randn(4, 3, 12, 12, generator=gen, dtype=DT)
    return model, images


@pytest.fixture(scope="module")
def cnn_reference(cnn) -> dict[str, torch.Tensor]:
    model, images = cnn
    return {
        name: reference_patch_agop(model, m, images)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    }


CONV_NAMES = ["conv1", "conv2", "block.conv", "conv3"]


def test_patch_agops_all_layers_match_reference(cnn, cnn_reference):
    model, images = cnn
    gs = patch_agops(model, images, chunk_size=2, batch_size=3)
    assert list(gs) == CONV_NAMES
    for name in CONV_NAMES:
        conv = dict(model.named_modules())[name]
        d = conv.weight[0].numel()
        assert gs[name].shape == (d, d)
        assert gs[name].dtype == DT
        assert rel_err(gs[name], cnn_reference[name]) < 1e-5, name


@pytest.mark.parametrize("name", CONV_NAMES)
def test_patch_agop_single_layer_matches_reference(cnn, cnn_reference, name):
    model, images = cnn
    layer = dict(model.named_modules())[name]
    g = patch_agop(model, layer, images, chunk_size=5)
    assert rel_err(g, cnn_reference[name]) < 1e-5
    # layer given by name is the same
    assert torch.equal(patch_agop(model, name, images, chunk_size=5), g)


def test_patch_agop_index_list_matches_reference(cnn):
    model, images = cnn
    idx = [4, 1, 2]
    for layer in (model.conv1, model.conv3):
        ref = reference_patch_agop(model, layer, images, outputs=idx)
        g = patch_agop(model, layer, images, outputs=idx, chunk_size=2, batch_size=2)
        assert rel_err(g, ref) < 1e-5
        # a real subset: differs from the all-output AGOP
        assert rel_err(g, reference_patch_agop(model, layer, images)) > 1e-2


def test_patch_agop_direction_matrix_matches_reference(cnn):
    model, images = cnn
    gen = torch.Generator().manual_seed(5)
    v = torch.randn(3, 5, generator=gen, dtype=DT)
    ref = reference_patch_agop(model, model.conv2, images, outputs=v)
    g = patch_agop(model, model.conv2, images, outputs=v)
    assert rel_err(g, ref) < 1e-5


def test_shared_conv_sums_over_calls():
    torch.manual_seed(3)
    model = SharedConvCNN().to(DT).eval()
    images = torch.randn(3, 2, 6, 6, dtype=DT)
    gs = patch_agops(model, images, chunk_size=3)
    for name in ("stem", "shared"):
        ref = reference_patch_agop(model, getattr(model, name), images)
        assert rel_err(gs[name], ref) < 1e-5


def test_output_gops_and_identity(cnn, cnn_reference):
    model, images = cnn
    cs = patch_output_gops(model, images, layers=["conv2", model.conv1])
    assert set(cs) == {"conv1", "conv2"}
    assert cs["conv2"].shape == (6, 6)
    assert torch.allclose(cs["conv2"], cs["conv2"].T)
    assert torch.linalg.eigvalsh(cs["conv2"]).min() > -1e-12
    g = agop_from_output_gop(model.conv2, cs["conv2"])
    assert rel_err(g, cnn_reference["conv2"]) < 1e-5


def test_float32_close_to_float64(cnn, cnn_reference):
    model, images = cnn
    m32 = SmallCNN().eval()
    m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    g = patch_agop(m32, m32.conv2, images.float())
    assert g.dtype == torch.float32
    assert rel_err(g.double(), cnn_reference["conv2"]) < 1e-4


# ----------------------------------------------------------------------------------------
# Random projections
# ----------------------------------------------------------------------------------------


def test_random_projections_converge_and_are_seeded(cnn, cnn_reference):
    model, images = cnn
    exact = cnn_reference["conv1"]
    errs = {}
    for k in (5, 50, 2000):
        gen = torch.Generator().manual_seed(11)
        g = patch_agop(model, model.conv1, images, outputs=k, generator=gen, chunk_size=500)
        errs[k] = rel_err(g, exact)
    assert errs[2000] < 0.1
    assert errs[2000] < errs[5] / 4
    g1 = patch_agop(model, model.conv1, images, outputs=7, generator=torch.Generator().manual_seed(2))
    g2 = patch_agop(model, model.conv1, images, outputs=7, generator=torch.Generator().manual_seed(2))
    g3 = patch_agop(model, model.conv1, images, outputs=7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(g1, g2)
    assert not torch.allclose(g1, g3)


def test_random_projections_unbiased(cnn, cnn_reference):
    """Average of many k=3 estimates approaches the exact G; a biased scale would not."""
    model, images = cnn
    exact = cnn_reference["conv3"]
    gen = torch.Generator().manual_seed(0)
    n_rep = 100
    ests = torch.stack(
        [patch_agop(model, model.conv3, images, outputs=3, generator=gen) for _ in range(n_rep)]
    )
    mean = ests.mean(0)
    # standard error of the mean, entrywise; the deviation must be within a few SEs
    se = ests.std(0) / math.sqrt(n_rep)
    z = ((mean - exact) / (se + 1e-300)).abs()
    assert float(z.mean()) < 2.5  # ~0.8-1.3 unbiased; a wrong 1/k scale gives ~40
    assert rel_err(mean, exact) < 0.2
    # scale check: the trace is unbiased
    assert abs(float(torch.trace(mean) / torch.trace(exact)) - 1) < 0.15


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------


def test_bad_inputs(cnn):
    model, images = cnn
    with pytest.raises(TypeError, match="Conv2d"):
        patch_agop(model, model.fc, images)
    with pytest.raises(ValueError, match="not a submodule"):
        patch_agop(model, nn.Conv2d(3, 4, 3).to(DT), images)
    with pytest.raises(ValueError, match="4-D"):
        patch_agop(model, model.conv1, images[0])
    with pytest.raises(ValueError, match="empty"):
        patch_agop(model, model.conv1, images, outputs=[])
    with pytest.raises(ValueError, match="out of range"):
        patch_agop(model, model.conv1, images, outputs=[0, 5])
    with pytest.raises(ValueError, match="distinct"):
        patch_agop(model, model.conv1, images, outputs=[1, 1])
    with pytest.raises(ValueError, match="random projections"):
        patch_agop(model, model.conv1, images, outputs=0)
    with pytest.raises(ValueError, match="'all'"):
        patch_agop(model, model.conv1, images, outputs="sum")
    with pytest.raises(ValueError, match="chunk_size"):
        patch_agop(model, model.conv1, images, chunk_size=0)
    with pytest.raises(ValueError, match="no submodule named"):
        patch_agops(model, images, layers=["nope"])
    with pytest.raises(TypeError, match="floating"):
        patch_agop(model, model.conv1, images.long())
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten()).to(DT)
    with pytest.raises(NotImplementedError, match="groups"):
        patch_agops(grouped, torch.randn(1, 4, 5, 5, dtype=DT))


def test_training_mode_warns_and_mode_unchanged(cnn):
    model, images = cnn
    model.train()
    try:
        with pytest.warns(UserWarning, match="training mode"):
            patch_agop(model, model.conv1, images[:2])
        assert model.training
    finally:
        model.eval()


# ----------------------------------------------------------------------------------------
# Matrix utilities
# ----------------------------------------------------------------------------------------


def test_ansatz_correlation_hand_made():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=gen, dtype=DT)
    b = torch.randn(4, 4, generator=gen, dtype=DT)
    assert ansatz_correlation(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ansatz_correlation(a, -a) == pytest.approx(-1.0, abs=1e-12)
    r = ansatz_correlation(a, b)
    assert ansatz_correlation(a + 7.0, 3.0 * b - 2.0) == pytest.approx(r, abs=1e-12)
    # hand-computed: entries (1,2,3,4) vs (1,3,2,5): centred (-1.5,-.5,.5,1.5), (-1.75,.25,-.75,2.25)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([[1.0, 3.0], [2.0, 5.0]])
    num = 1.5 * 1.75 - 0.5 * 0.25 - 0.5 * 0.75 + 1.5 * 2.25
    den = math.sqrt(5.0) * math.sqrt(1.75**2 + 0.25**2 + 0.75**2 + 2.25**2)
    assert ansatz_correlation(x, y) == pytest.approx(num / den, abs=1e-12)
    # centring matters: the uncentred cosine differs
    cos = (1 + 6 + 6 + 20) / (math.sqrt(30) * math.sqrt(39))
    assert cosine_similarity_matrices(x, y) == pytest.approx(cos, abs=1e-12)
    assert abs(cos - num / den) > 1e-3
    with pytest.raises(ValueError, match="same shape"):
        ansatz_correlation(a, b[:3])
    with pytest.raises(ValueError, match="all entries equal"):
        ansatz_correlation(a, torch.ones(4, 4))
    with pytest.raises(ValueError, match="zero"):
        cosine_similarity_matrices(a, torch.zeros(4, 4))


def test_matrix_power_psd():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=gen, dtype=DT)
    a = x @ x.T  # PSD, rank 4
    r = matrix_power_psd(a, 0.5)
    assert torch.allclose(r @ r, a, atol=1e-10)
    assert torch.linalg.eigvalsh(r).min() > -1e-10
    assert torch.allclose(matrix_power_psd(a, 1.0), a, atol=1e-10)
    # negative eigenvalues are clipped to 0
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=DT))
    m = q @ torch.diag(torch.tensor([4.0, -9.0, 1.0], dtype=DT)) @ q.T
    expected = q @ torch.diag(torch.tensor([2.0, 0.0, 1.0], dtype=DT)) @ q.T
    assert torch.allclose(matrix_power_psd(m, 0.5), expected, atol=1e-10)
    with pytest.raises(ValueError, match="square"):
        matrix_power_psd(x, 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        matrix_power_psd(a, -1.0)


def test_cnfm_and_nfm():
    conv = nn.Conv2d(2, 3, 2)
    w = conv.weight.detach().reshape(3, 8)
    assert torch.allclose(cnfm(conv), w.T @ w)
    lin = nn.Linear(4, 3)
    w0 = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    assert torch.allclose(nfm(lin), lin.weight.T @ lin.weight)
    assert torch.allclose(nfm(lin, w0), torch.ones(4, 4) * 3)
    with pytest.raises(TypeError):
        cnfm(nn.ReLU())


# ----------------------------------------------------------------------------------------
# MLPs (DNFA)
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6, bias=False), nn.Tanh(), nn.Linear(6, 3)
    ).to(DT)
    inputs = torch.randn(10, 5, dtype=DT)
    return model, inputs


@pytest.mark.parametrize("centered", [False, True])
def test_mlp_agops_match_jacrev(mlp, centered):
    model, inputs = mlp
    res = mlp_agops(model, inputs, centered=centered, chunk_size=2, batch_size=4)
    assert list(res) == ["0", "2", "4"]
    for name, r in res.items():
        layer = model[int(name)]
        g_ref, p_ref = reference_mlp_agops(model, inputs, layer, centered=centered)
        # (the last layer's centred AGOPs are exactly 0: its Jacobian is constant)
        assert float((r.G - g_ref).norm()) <= 1e-8 * float(g_ref.norm()) + 1e-12
        assert float((r.P - p_ref).norm()) <= 1e-8 * float(p_ref.norm()) + 1e-12
        if not (centered and name == "4"):
            assert float(g_ref.norm()) > 1e-3
        w = layer.weight.detach()
        assert torch.allclose(r.G, w.T @ r.P @ w, atol=1e-10)
    # the two options really differ
    other = mlp_agops(model, inputs, centered=not centered)
    assert rel_err(other["0"].G, res["0"].G) > 1e-3


def test_mlp_agops_indices(mlp):
    model, inputs = mlp
    full = mlp_agops(model, inputs, outputs="all")
    parts = [mlp_agops(model, inputs, outputs=[i]) for i in range(3)]
    for name in full:
        assert torch.allclose(sum(p[name].P for p in parts), full[name].P, atol=1e-12)


def test_balanced_linear_network_ansatz_exact():
    """f = A B x with A^T A = B B^T: G_1 = (B^T B)^2, so corr(B^T B, G_1^{1/2}) = 1."""
    gen = torch.Generator().manual_seed(0)
    d, h, k = 8, 5, 6
    b = torch.randn(h, d, generator=gen, dtype=DT)
    u, s, _ = torch.linalg.svd(b, full_matrices=False)  # u: (h, h)
    q, _ = torch.linalg.qr(torch.randn(k, h, generator=gen, dtype=DT))  # orthonormal columns
    a = q @ torch.diag(s) @ u.T
    assert torch.allclose(a.T @ a, b @ b.T, atol=1e-10)  # balanced
    net = nn.Sequential(nn.Linear(d, h, bias=False), nn.Linear(h, k, bias=False)).to(DT)
    with torch.no_grad():
        net[0].weight.copy_(b)
        net[1].weight.copy_(a)
    x = torch.randn(20, d, generator=gen, dtype=DT)
    res = mlp_agops(net, x)
    g1 = res["0"].G
    assert torch.allclose(g1, (b.T @ b) @ (b.T @ b), atol=1e-9)
    corr = ansatz_correlations(nfm(net[0]), g1)
    assert corr[0.5] == pytest.approx(1.0, abs=1e-10)
    assert corr[1.0] < 0.999  # alpha = 1 is not exact here
    # unbalanced weights break it
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(k, h, generator=gen, dtype=DT))
    g1u = mlp_agops(net, x)["0"].G
    assert ansatz_correlation(nfm(net[0]), matrix_power_psd(g1u, 0.5)) < 0.999


# ----------------------------------------------------------------------------------------
# Isotropy
# ----------------------------------------------------------------------------------------


def test_isotropy_identity_and_rank_one():
    d = 5
    m = isotropy_measures(3.0 * torch.eye(d, dtype=DT))
    assert m["corr_identity"] == pytest.approx(1.0)
    assert m["isotropy_distance"] == pytest.approx(0.0, abs=1e-12)
    assert m["eigen_spread"] == pytest.approx(1.0)
    assert m["condition_number"] == pytest.approx(1.0)
    assert m["participation_ratio"] == pytest.approx(d)
    v = torch.arange(1.0, d + 1, dtype=DT)
    p = torch.outer(v, v)
    r = isotropy_measures(p)
    assert r["isotropy_distance"] == pytest.approx(math.sqrt(1 - 1 / d))
    assert r["participation_ratio"] == pytest.approx(1.0)
    assert r["eigen_spread"] == pytest.approx(1.0)
    assert math.isinf(r["condition_number"])
    assert r["corr_identity"] < 0.5
    # a diagonal with known spread
    r2 = isotropy_measures(torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=DT)))
    assert r2["eigen_spread"] == pytest.approx(4.0)
    assert r2["participation_ratio"] == pytest.approx(49 / 21)


def test_isotropy_with_weight():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, generator=gen, dtype=DT)  # range(W) is 3-dim in R^6
    p = w @ w.T
    m = isotropy_measures(p, w)
    assert m["corr_left_gram"] == pytest.approx(1.0)
    assert m["dim"] == 6
    # restricted to range(W): P = Q (Q^T P Q) Q^T, I on range(W) is isotropic there
    q, _ = torch.linalg.qr(w)
    r = isotropy_measures(2.0 * q @ q.T, w, restrict_to_range=True)
    assert r["dim"] == 3
    assert r["isotropy_distance"] == pytest.approx(0.0, abs=1e-10)
    assert isotropy_measures(2.0 * q @ q.T, w)["isotropy_distance"] > 0.5
    with pytest.raises(ValueError, match="rows"):
        isotropy_measures(p, w.T)


def test_ansatz_table_rows_match_direct_computation():
    from featlearn import agop as A
    from featlearn import ansatz, linalg

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)
    ).double()
    ref = copy.deepcopy(net)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    rows = ansatz.ansatz_table(net, x, ["0", "2"], reference=ref)
    assert [r["layer"] for r in rows] == ["0", "2"]
    g = A.patch_agop(net, net[2], x)
    w = A.cnfm(net[2])
    assert rows[1]["alpha=1"] == pytest.approx(ansatz.ansatz_correlation(w, g))
    assert rows[1]["alpha=1/2"] == pytest.approx(
        ansatz.ansatz_correlation(w, linalg.matrix_power_psd(g, 0.5))
    )
    assert rows[1]["init CNFM vs CNFM"] == pytest.approx(ansatz.ansatz_correlation(A.cnfm(ref[2]), w))
    assert rows[1]["init CNFM vs CNFM"] < 0.999  # the perturbed reference differs


def test_mlp_agops_token_dimension_sums_over_positions():
    """A Linear applied to (N, T, d): positions t are summed like conv patches."""
    torch.manual_seed(6)
    lin1, lin2 = nn.Linear(4, 5).to(DT), nn.Linear(5 * 3, 2).to(DT)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return lin2(torch.tanh(lin1(x)).flatten(1))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin1, self.lin2 = lin1, lin2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return forward(x)

    net = Net()
    x = torch.randn(6, 3, 4, dtype=DT)
    res = mlp_agops(net, x, layers=["lin1"], outputs=np.array([1, 0]))
    g = torch.zeros(4, 4, dtype=DT)
    for xi in x:
        j = torch.func.jacrev(lambda z: forward(z[None])[0])(xi).detach()  # (K, T, d)
        g += torch.einsum("ktd,kte->de", j, j)
    assert rel_err(res["lin1"].G, g / len(x)) < 1e-10


def test_layer_input_agop_is_independent_and_agrees_with_identity():
    from featlearn import agop as A
    from featlearn.models import MLP

    torch.manual_seed(1)
    net = MLP(6, 5, 2, 3).double().eval()
    x = torch.randn(7, 6, dtype=torch.float64)
    res = A.mlp_agops(net, x)
    for name in ["layers.0", "layers.2", "readout"]:
        brute = A.layer_input_agop(net, name, x)
        assert torch.allclose(brute, res[name].G, rtol=1e-10, atol=1e-12)
    # the readout's pre-activation is the output itself: P = I for all outputs
    assert torch.allclose(res["readout"].P, torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="not an nn.Linear"):
        A.layer_input_agop(net, "layers.1", x)


def test_sandwich_baselines_known_cases():
    from featlearn import isotropy

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, generator=g, dtype=torch.float64)
    out = isotropy.sandwich_baselines(w, torch.eye(6, dtype=torch.float64), n_draws=3, generator=g)
    assert out["P"][1.0] == pytest.approx(1.0) and out["I"][1.0] == pytest.approx(1.0)
    assert out["shuffled P"][1.0] == pytest.approx(1.0)  # shuffling I leaves I
    assert out["Wishart"][1.0] < 0.999
    # P = W W^T makes the alpha = 1/2 ansatz exact: (W^T W W^T W)^(1/2) = W^T W
    exact = isotropy.sandwich_baselines(w, w @ w.T, n_draws=2, generator=g)
    assert exact["P"][0.5] == pytest.approx(1.0, abs=1e-9)
    assert exact["shuffled P"][0.5] < exact["P"][0.5]


def test_sandwich_power_matches_direct_eigendecomposition():
    from featlearn import ansatz, isotropy, linalg

    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 9, generator=g, dtype=torch.float64)
    z = torch.randn(5, 5, generator=g, dtype=torch.float64)
    x = z @ z.T
    direct = {
        a: ansatz.ansatz_correlation(w.T @ w, linalg.matrix_power_psd(w.T @ x @ w, a)) for a in (1.0, 0.5)
    }
    assert isotropy.sandwich_baselines(w, x, generator=g)["P"] == pytest.approx(direct, abs=1e-10)


def test_row_space_correlation_drops_the_shared_null_space():
    from featlearn import ansatz, linalg

    g = torch.Generator().manual_seed(4)
    w = torch.randn(3, 20, generator=g, dtype=torch.float64)
    z = torch.randn(3, 3, generator=g, dtype=torch.float64)
    p = z @ z.T + 0.1 * torch.eye(3, dtype=torch.float64)
    G = w.T @ p @ w
    full = ansatz.ansatz_correlation(w.T @ w, G)
    restricted = ansatz.row_space_correlation(w, G)
    # on the 3-dim row space both are 3x3 matrices; the correlation there equals the
    # correlation of P-sandwiches in the basis of W's rows, computed directly:
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    direct = ansatz.ansatz_correlation(torch.diag(s**2), torch.diag(s) @ u.T @ p @ u @ torch.diag(s))
    assert restricted == pytest.approx(direct, abs=1e-10)
    assert restricted != pytest.approx(full, abs=1e-6)  # the mean subtraction differs
    q = vh.T  # the uncentred cosine is invariant under the restriction
    assert linalg.cosine_similarity_matrices(w.T @ w, G) == pytest.approx(
        linalg.cosine_similarity_matrices(q.T @ w.T @ w @ q, q.T @ G @ q), abs=1e-12
    )
    assert ansatz.row_space_correlation(w, w.T @ w) == pytest.approx(1.0)


def test_patch_agops_refuses_nan_images(cnn):
    model, images = cnn
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"holds 1 non-finite value"):
        patch_agops(model, bad)


def test_cnfa_over_training_measures_init_then_trained():
    from featlearn import ansatz, models, train

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(16, 1, 8, 8, generator=gen)
    y = torch.arange(16) % 3
    kw = dict(epochs=1, lr=1e-2, batch_size=8, seed=4, progress=False)
    net = models.build_model("vanilla", 1, 3, 8, width=4, seed=1)
    w0 = copy.deepcopy(net)
    rows, hist, init = ansatz.cnfa_over_training(net, x, y, x[:6], labels={"arch": "vanilla"}, **kw)
    # independently: the same steps by hand on a second copy
    ref = copy.deepcopy(w0)
    layers = models.cnfa_layers(ref)
    before = ansatz.ansatz_table(copy.deepcopy(ref).eval(), x[:6], layers)
    ref_hist = train.train_classifier(ref, x, y, **kw)
    after = ansatz.ansatz_table(ref, x[:6], layers, reference=copy.deepcopy(w0).eval())
    assert [r["layer"] for r in rows] == layers and all(r["arch"] == "vanilla" for r in rows)
    assert hist.loss == ref_hist.loss
    for r, b, a in zip(rows, before, after):
        assert r["init alpha=1"] == b["alpha=1"] and r["init alpha=1/2"] == b["alpha=1/2"]
        assert r["trained alpha=1"] == a["alpha=1"] and r["trained alpha=1/2"] == a["alpha=1/2"]
        assert r["init CNFM vs CNFM"] == a["init CNFM vs CNFM"]
    for p, q in zip(init.parameters(), w0.parameters()):
        assert torch.equal(p, q)  # the returned init is the untrained network
    assert not init.training


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of the entries, by torch.corrcoef (independent of featlearn.linalg)."""
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1])


def test_dnfa_rows_equal_direct_measures_on_a_tiny_mlp():
    from featlearn import ansatz, isotropy, linalg, models

    torch.manual_seed(0)
    net = models.MLP(12, 5, 2, 3).double().eval()
    init = copy.deepcopy(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(9, 12, dtype=torch.float64)
    rows = ansatz.dnfa_rows(net, init, x, labels={"dataset": "toy", "epoch": 3})
    assert [r["layer"] for r in rows] == ["0: layers.0", "1: layers.2", "2: readout"]
    assert [r["readout"] for r in rows] == [False, False, True]
    for i, (row, name) in enumerate(zip(rows, net.linear_names())):
        assert list(row)[:3] == ["dataset", "epoch", "layer"] and row["dataset"] == "toy"
        layer = net.get_submodule(name)
        g, p = reference_mlp_agops(net, x, layer)  # brute-force oracle, not mlp_agops
        w, w0 = layer.weight.detach(), init.get_submodule(name).weight.detach()
        root = linalg.matrix_power_psd(g, 0.5)
        assert row["corr_a1"] == pytest.approx(_corr(w.T @ w, g), abs=1e-9)
        assert row["corr_a05"] == pytest.approx(_corr(w.T @ w, root), abs=1e-7)
        assert row["dcorr_a1"] == pytest.approx(_corr((w - w0).T @ (w - w0), g), abs=1e-9)
        assert row["dcorr_a05"] == pytest.approx(_corr((w - w0).T @ (w - w0), root), abs=1e-7)
        iso = isotropy.isotropy_measures(p, w, restrict_to_range=True)
        for key, measure in [
            ("iso_corr", "corr_identity"),
            ("iso_dist", "isotropy_distance"),
            ("spread", "eigen_spread"),
            ("left_gram", "corr_left_gram"),
        ]:
            assert row[key] == pytest.approx(iso[measure], rel=1e-6, abs=1e-9)
        assert ("rowspace_a1" in row) == (i == 0)
    w = net.get_submodule("layers.0").weight.detach()
    g0, _ = reference_mlp_agops(net, x, net.get_submodule("layers.0"))
    assert rows[0]["rowspace_a1"] == pytest.approx(ansatz.row_space_correlation(w, g0, 1.0), abs=1e-9)
    assert rows[0]["rowspace_a05"] == pytest.approx(ansatz.row_space_correlation(w, g0, 0.5), abs=1e-7)
    at_init = ansatz.dnfa_rows(init, init, x, delta=False)  # W = W0: no ΔW columns
    assert all("dcorr_a1" not in r and "dcorr_a05" not in r for r in at_init)
    assert list(at_init[0])[0] == "layer"


def test_dnfa_over_training_measures_at_checkpoints_and_trains_like_train_classifier():
    from featlearn import ansatz, models, train

    torch.manual_seed(1)
    net = models.MLP(10, 6, 2, 3)
    twin, init = copy.deepcopy(net), copy.deepcopy(net).eval()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(40, 10, generator=g), torch.randint(0, 3, (40,), generator=g)
    rows, hist = ansatz.dnfa_over_training(
        net,
        x,
        y,
        x[:8],
        checkpoints=[0, 2],
        epochs=2,
        lr=0.05,
        batch_size=16,
        seed=3,
        labels={"width": 6},
        progress=False,
    )
    ref = train.train_classifier(
        twin, x, y, epochs=2, lr=0.05, batch_size=16, optimizer="sgd", loss="mse", seed=3, progress=False
    )
    assert hist.loss == ref.loss and hist.test_accuracy == []
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), twin.parameters()))
    assert [(r["width"], r["epoch"]) for r in rows] == [(6, 0)] * 3 + [(6, 2)] * 3
    assert rows[:3] == ansatz.dnfa_rows(init, init, x[:8], delta=False, labels={"width": 6, "epoch": 0})
    assert rows[3:] == ansatz.dnfa_rows(twin.eval(), init, x[:8], labels={"width": 6, "epoch": 2})
