"""Every exact block the engine returns, against independent dense float64 oracles (tests/oracles.py).

For each built-in architecture (plus a "LayerNorm anywhere" model) and a
representative set of pairs — ancestor/descendant, parallel branches, a node
with itself, the input ``x``, the model output — in activation and parameter
space, ``Session.block`` must match the oracles' full / GN / tensor parts to
1e-8 relative (Frobenius), ``block(w, v)`` must be bitwise ``block(v, w)ᵀ``,
and ``coupling``, ``coupling_map`` and ``phi`` must equal the metrics
recomputed from oracle blocks.  Losses: cross-entropy, MSE (mean) and two
hand-written mean-reduced losses (pseudo-Huber, softplus margin) — the GN
part is derived from the loss itself, so any loss must work.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import oracles as O
from hessexplore import HessExploreError, Session, models

pytestmark = pytest.mark.usefixtures("single_thread")

RTOL = 1e-8      # engine vs oracle, float64
FD_RTOL = 1e-6   # anything vs central finite differences (step 1e-5)


# ------------------------------------------------------------------------------------ losses
def pseudo_huber(z, y):
    """Mean over the batch of Σ_k (sqrt(1 + r_k²) − 1), r = z − y: smooth, non-constant ∂²ℓ/∂z²."""
    return (torch.sqrt(1 + (z - y) ** 2) - 1).sum(dim=1).mean()


def softplus_margin(z, y):
    """Mean of softplus(1 − (z_y − mean_{k≠y} z_k)) — a hand-written classification loss."""
    K = z.shape[1]
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = (z.sum(dim=1) - zy) / (K - 1)
    return F.softplus(1 - (zy - other)).mean()


# ------------------------------------------------------------------------------ extra models
class LNAnywhere(nn.Module):
    """LayerNorm on the input, a functional LayerNorm after a multiplicative merge, LayerNorm on the logits."""

    def __init__(self, d_in=4, width=5, d_out=3):
        super().__init__()
        self.ln_in = nn.LayerNorm(d_in)
        self.fc = nn.Linear(d_in, width)
        self.gate = nn.Linear(d_in, width)
        self.head = nn.Linear(width, d_out)
        self.out_norm = nn.LayerNorm(d_out)
        self.width = width

    def forward(self, x):
        h = self.ln_in(x)
        a = torch.tanh(self.fc(h)) * self.gate(h)          # fx node "mul"
        a = F.layer_norm(a, (self.width,))                  # fx node "layer_norm"
        return self.out_norm(self.head(a))


# ------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    build: Callable[[], tuple]                # -> (model, x, y, loss_fn)
    act: list[tuple[str, str]]                # activation-space pairs
    par: list[tuple[str, str]]                # parameter-space pairs
    map_nodes: list[str]                      # activation coupling map (sites the oracle perturbs jointly)
    map_groups: list[str] | None = None       # parameter coupling map (None = s.groups)
    fd: list[tuple[str, str, str]] = field(default_factory=list)   # (space, v, w) checked by finite differences


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _cls(B, K, seed):
    return torch.randint(0, K, (B,), generator=_gen(seed + 1))


def _reg(B, K, seed):
    return torch.randn(B, K, generator=_gen(seed + 2))


def _vec(B, d, seed):
    return torch.randn(B, d, generator=_gen(seed))


def _seeded(seed, make):
    torch.manual_seed(seed)
    return make()


def b_mlp_relu_ce():
    m = _seeded(0, lambda: models.MLP(4, 6, 3, 3, activation="relu"))
    return m, _vec(6, 4, 0), _cls(6, 3, 0), nn.CrossEntropyLoss()


def b_mlp_gelu_mse():
    m = _seeded(1, lambda: models.MLP(4, 5, 2, 3, activation="gelu"))
    return m, _vec(5, 4, 1), _reg(5, 3, 1), nn.MSELoss()


def b_mlp_tanh_ln_huber():
    m = _seeded(2, lambda: models.MLP(4, 5, 2, 2, activation="tanh", norm="layernorm"))
    return m, _vec(6, 4, 2), _reg(6, 2, 2), pseudo_huber


def b_mlp_relu_ln_ce():
    m = _seeded(3, lambda: models.MLP(4, 5, 2, 3, activation="relu", norm="layernorm"))
    return m, _vec(6, 4, 3), _cls(6, 3, 3), nn.CrossEntropyLoss()


def b_resmlp_ln_ce():
    m = _seeded(4, lambda: models.ResidualMLP(4, 5, 2, 3, activation="gelu", norm="layernorm"))
    return m, _vec(5, 4, 4), _cls(5, 3, 4), nn.CrossEntropyLoss()


def b_diamond_sum_mse():
    m = _seeded(5, lambda: models.DiamondMLP(4, 5, 3, activation="relu", merge="sum"))
    return m, _vec(6, 4, 5), _reg(6, 3, 5), nn.MSELoss()


def b_diamond_concat_ce():
    m = _seeded(6, lambda: models.DiamondMLP(4, 4, 3, activation="gelu", merge="concat", norm="layernorm"))
    return m, _vec(5, 4, 6), _cls(5, 3, 6), nn.CrossEntropyLoss()


def b_bottleneck_margin():
    m = _seeded(7, lambda: models.BottleneckMLP(4, wide=6, narrow=2, d_out=3, activation="tanh"))
    return m, _vec(6, 4, 7), _cls(6, 3, 7), softplus_margin


def b_attention_ce():
    m = _seeded(8, lambda: models.ToyAttention(d_model=4, d_out=3))
    return m, torch.randn(4, 3, 4, generator=_gen(8)), _cls(4, 3, 8), nn.CrossEntropyLoss()


def b_cnn4_ce():
    m = _seeded(9, lambda: models.SmallCNN(1, size=4, channels=2, d_out=3))
    models.randomize_batchnorm(m, _gen(90))
    return m, torch.randn(4, 1, 4, 4, generator=_gen(9)), _cls(4, 3, 9), nn.CrossEntropyLoss()


def b_cnn8_mse():
    m = _seeded(10, lambda: models.SmallCNN(1, size=8, channels=2, d_out=2))
    models.randomize_batchnorm(m, _gen(100))
    return m, torch.randn(4, 1, 8, 8, generator=_gen(10)), _reg(4, 2, 10), nn.MSELoss()


def b_ln_anywhere_ce():
    m = _seeded(11, lambda: LNAnywhere(4, 5, 3))
    with torch.no_grad():  # non-trivial affine parameters for the LayerNorms
        for ln in (m.ln_in, m.out_norm):
            ln.weight.add_(0.3 * torch.randn(ln.weight.shape, generator=_gen(110)))
            ln.bias.add_(0.2 * torch.randn(ln.bias.shape, generator=_gen(111)))
    return m, _vec(5, 4, 11), _cls(5, 3, 11), nn.CrossEntropyLoss()


CASES: dict[str, Case] = {
    "mlp_relu_ce": Case(
        b_mlp_relu_ce,
        act=[("x", "blocks.0"), ("blocks.0", "blocks.2"), ("blocks.1", "blocks.1"), ("blocks.0.0", "head"),
             ("head", "head"), ("blocks.2.0", "blocks.0"), ("x", "x")],
        par=[("blocks.0", "blocks.0"), ("blocks.0", "blocks.2"), ("head", "head"),
             ("blocks.1.0.weight", "head.bias"), ("blocks", "blocks.1"), ("*", "head")],
        map_nodes=["x", "blocks.0", "blocks.1", "blocks.2", "head"]),
    "mlp_gelu_mse": Case(
        b_mlp_gelu_mse,
        act=[("x", "blocks.1"), ("blocks.0.0", "blocks.0"), ("blocks.1", "blocks.1"), ("blocks.0", "head")],
        par=[("blocks.0", "blocks.1"), ("blocks.1", "blocks.1"), ("head", "blocks.0.0.bias")],
        map_nodes=["blocks.0.0", "blocks.0", "blocks.1.0", "blocks.1", "head"]),
    "mlp_tanh_ln_huber": Case(
        b_mlp_tanh_ln_huber,
        act=[("x", "blocks.0.1"), ("blocks.0.1", "blocks.1"), ("blocks.1.1", "blocks.1.1"), ("blocks.0", "head")],
        par=[("blocks.0.1", "blocks.0.1"), ("blocks.0", "blocks.1"), ("blocks.1.1.weight", "head"), ("*", "blocks.1.1")],
        map_nodes=["x", "blocks.0.1", "blocks.0", "blocks.1.1", "head"],
        fd=[("activation", "blocks.0.1", "blocks.1"), ("parameter", "blocks.0.1", "blocks.0.1"),
            ("parameter", "blocks.0", "blocks.1")]),
    "mlp_relu_ln_ce": Case(
        b_mlp_relu_ln_ce,
        act=[("blocks.0.0", "blocks.0.1"), ("blocks.0.1", "blocks.0.1"), ("blocks.0", "blocks.1"), ("x", "head")],
        par=[("blocks.0.1", "blocks.0.1"), ("blocks.0.1", "blocks.1.1"), ("blocks", "blocks.1"), ("head", "head")],
        map_nodes=["x", "blocks.0.1", "blocks.0", "blocks.1.1", "blocks.1", "head"],
        map_groups=["blocks.0", "blocks.1", "head"],
        fd=[("activation", "blocks.0.0", "blocks.0.1"), ("parameter", "blocks.0.1", "blocks.1.1")]),
    "resmlp_ln_ce": Case(
        b_resmlp_ln_ce,
        act=[("inp", "blocks.0"), ("blocks.0.f", "blocks.0"), ("blocks.0", "blocks.1"),
             ("blocks.0.f", "blocks.1.f"), ("x", "head"), ("blocks.1", "blocks.1")],
        par=[("blocks.0", "blocks.1"), ("blocks.0.f.1", "blocks.0.f.1"), ("inp", "head"), ("blocks", "blocks.1")],
        map_nodes=["inp", "blocks.0.f", "blocks.0", "blocks.1.f", "blocks.1", "head"],
        map_groups=["inp", "blocks.0", "blocks.1", "head"]),
    "diamond_sum_mse": Case(
        b_diamond_sum_mse,
        act=[("branch_a", "branch_b"), ("branch_a.0.0", "branch_b.0.0"), ("stem.1", "add"), ("add", "add"),
             ("branch_a.1", "add"), ("x", "branch_b"), ("stem", "head")],
        par=[("branch_a", "branch_b"), ("stem", "head"), ("branch_a.1", "branch_a.1"), ("branch_b.0.0", "stem.0")],
        map_nodes=["stem.1", "branch_a.1", "branch_b.1", "add", "head"]),
    "diamond_concat_ce": Case(
        b_diamond_concat_ce,
        act=[("branch_a", "branch_b"), ("branch_a.1", "cat"), ("cat", "cat"), ("stem.2", "cat"), ("cat", "head"),
             ("stem.1", "branch_b.0.1")],
        par=[("branch_a", "branch_b"), ("stem", "branch_a"), ("stem.1", "stem.1"), ("branch_b.1", "head")],
        map_nodes=["stem.2", "branch_a.1", "branch_b.1", "cat", "head"]),
    "bottleneck_margin": Case(
        b_bottleneck_margin,
        act=[("blocks.0", "blocks.1"), ("blocks.1", "blocks.2"), ("blocks.1", "blocks.1"), ("x", "head")],
        par=[("blocks.1", "blocks.1"), ("blocks.0", "blocks.2"), ("head", "head")],
        map_nodes=["x", "blocks.0", "blocks.1", "blocks.2", "head"]),
    "attention_ce": Case(
        b_attention_ce,
        act=[("W_Q", "W_K"), ("W_Q", "W_Q"), ("W_V", "W_K"), ("norm", "W_Q"), ("matmul", "softmax"),
             ("W_Q", "matmul"), ("softmax", "matmul_1"), ("x", "add"), ("softmax", "head"), ("mean", "head")],
        par=[("W_Q", "W_K"), ("W_Q", "W_Q"), ("norm", "norm"), ("norm", "W_V"), ("proj", "head"), ("*", "W_K")],
        map_nodes=["norm", "W_Q", "W_K", "W_V", "softmax", "head"],
        fd=[("activation", "W_Q", "W_K"), ("activation", "norm", "softmax"), ("parameter", "norm", "norm"),
            ("parameter", "W_Q", "W_K")]),
    "cnn4_ce": Case(
        b_cnn4_ce,
        act=[("conv1", "bn1"), ("bn1", "conv2"), ("pool1", "pool1"), ("x", "conv1"), ("act2", "head"),
             ("flatten", "head"), ("conv1", "head")],
        par=[("bn1", "bn1"), ("conv1", "bn2"), ("bn1", "head"), ("conv2.weight", "conv1.bias"), ("*", "bn2")],
        map_nodes=["x", "conv1", "bn1", "pool1", "bn2", "head"],
        fd=[("activation", "conv1", "bn2"), ("parameter", "bn1", "bn1"), ("parameter", "conv1", "bn2")]),
    "cnn8_mse": Case(
        b_cnn8_mse,
        act=[("conv1", "conv2"), ("pool2", "pool2"), ("bn1", "head")],
        par=[("conv1", "conv2"), ("bn2", "head"), ("bn1", "bn2")],
        map_nodes=["conv2", "bn2", "pool2", "head"]),
    "ln_anywhere_ce": Case(
        b_ln_anywhere_ce,
        act=[("x", "ln_in"), ("ln_in", "layer_norm"), ("mul", "layer_norm"), ("fc", "gate"),
             ("layer_norm", "out_norm"), ("out_norm", "out_norm"), ("head", "head")],
        par=[("ln_in", "ln_in"), ("out_norm", "out_norm"), ("ln_in", "out_norm"), ("fc", "gate"), ("head", "out_norm")],
        map_nodes=["ln_in", "fc", "gate", "mul", "layer_norm", "out_norm"],
        fd=[("activation", "ln_in", "layer_norm"), ("activation", "fc", "gate"),
            ("parameter", "ln_in", "out_norm"), ("parameter", "out_norm", "out_norm")]),
}

CE_CASES = [k for k in CASES if k.endswith("_ce")]
MSE_CASES = [k for k in CASES if k.endswith("_mse")]


# ------------------------------------------------------------------------------- cached state
class Env:
    def __init__(self, name: str):
        model, x, y, loss = CASES[name].build()
        self.name = name
        self.model = model.eval()
        self.x, self.y, self.loss = x, y, loss
        # float32 model: the session converts a private copy, the oracles convert their own
        self.session = Session(self.model, loss, (x, y), dtype=torch.float64)
        self.act = O.ActivationOracle(self.model, x, y, loss)
        self.par = O.ParameterOracle(self.model, x, y, loss)

    @functools.cache
    def oracle(self, space: str, v: str, w: str) -> dict:
        return self.act.block(v, w) if space == "activation" else self.par.block(v, w)

    @functools.cache
    def block(self, space: str, v: str, w: str):
        return self.session.block(v, w, space=space)


@functools.cache
def env(name: str) -> Env:
    return Env(name)


def _pid(case, space, v, w):
    return f"{case}-{space[:3]}-{v}-vs-{w}"


BLOCK_PARAMS = [pytest.param(c, sp, v, w, id=_pid(c, sp, v, w))
                for c, case in CASES.items()
                for sp, pairs in (("activation", case.act), ("parameter", case.par))
                for v, w in pairs]
FD_PARAMS = [pytest.param(c, sp, v, w, id=_pid(c, sp, v, w)) for c, case in CASES.items() for sp, v, w in case.fd]


# ----------------------------------------------------------------------------------- blocks
def _check_block(b, o, what):
    scale = O.fro(o["full"]) + O.fro(o["gn"])
    # the two full-Hessian oracles must agree first (else the test proves nothing)
    O.assert_rel(o["loop"], o["full"], 1e-10, scale=scale, what=f"{what} oracle#2 vs oracle#1")
    O.assert_rel(b.full, o["full"], RTOL, what=f"{what} full")
    O.assert_rel(b.gn, o["gn"], RTOL, scale=O.fro(o["gn"]), what=f"{what} gn")
    # H^T = H − H^GN: exactly 0 for some pairs, so allow round-off of the terms it is made from
    O.assert_rel(b.tensor, o["tensor"], RTOL, scale=scale, what=f"{what} tensor")
    assert torch.equal(b.tensor, b.full - b.gn)


@pytest.mark.parametrize("case,space,v,w", BLOCK_PARAMS)
def test_block_matches_oracle(case, space, v, w):
    e = env(case)
    b = e.block(space, v, w)
    o = e.oracle(space, v, w)
    dv = e.act.dim(v) if space == "activation" else int(e.par.indices(v).numel())
    dw = e.act.dim(w) if space == "activation" else int(e.par.indices(w).numel())
    assert b.shape == (dv, dw) == tuple(o["full"].shape)
    assert b.full.dtype == torch.float64 and b.space == space
    _check_block(b, o, _pid(case, space, v, w))
    if v == w:
        assert torch.equal(b.full, b.full.T) and torch.equal(b.gn, b.gn.T)


@pytest.mark.parametrize("case,space,v,w", [p for p in BLOCK_PARAMS if p.values[2] != p.values[3]])
def test_block_transpose_is_bitwise(case, space, v, w):
    e = env(case)
    b, bt = e.block(space, v, w), e.session.block(w, v, space=space)
    assert (bt.v, bt.w) == (w, v)
    assert torch.equal(bt.full, b.full.T)
    assert torch.equal(bt.gn, b.gn.T)
    assert torch.equal(bt.tensor, b.tensor.T)


@pytest.mark.parametrize("case,space,v,w", FD_PARAMS)
def test_block_against_finite_differences(case, space, v, w):
    """Central differences of the first-order gradient: the oracle that needs no second-order autograd."""
    e = env(case)
    fd = e.act.block_fd(v, w) if space == "activation" else e.par.block_fd(v, w)
    o = e.oracle(space, v, w)
    O.assert_rel(o["full"], fd, FD_RTOL, what="oracle vs FD")
    O.assert_rel(e.block(space, v, w).full, fd, FD_RTOL, what="engine vs FD")


@pytest.mark.parametrize("case,v,w", [("attention_ce", "W_Q", "W_K"), ("cnn4_ce", "bn1", "conv2"),
                                      ("ln_anywhere_ce", "ln_in", "layer_norm"), ("resmlp_ln_ce", "blocks.0.f", "blocks.1")])
def test_activation_block_is_batch_average_of_per_sample_hessians(case, v, w):
    """SCIENCE §1: H_vw = (1/B) Σ_b ∂²ℓ_b/∂f_v[b]∂f_w[b] — each sample run alone through the model."""
    e = env(case)
    O.assert_rel(e.block("activation", v, w).full, e.act.block_per_sample(v, w), RTOL)


# ------------------------------------------------------------------------ loss Hessian in z
def _z_and_Hz(e: Env):
    with torch.no_grad():
        z = e.par.z_of(e.par.theta0)
    return z, O.output_hessian(e.loss, z, e.par.y)


@pytest.mark.parametrize("case", list(CASES))
def test_output_hessian_is_per_sample_and_gn_sums_per_sample(case):
    e = env(case)
    z, Hz = _z_and_Hz(e)
    B, K = z.shape
    H4 = Hz.view(B, K, B, K)
    off = H4.clone()
    for b in range(B):
        off[b, :, b, :] = 0
    assert O.fro(off) <= 1e-14 * O.fro(Hz), "a mean of per-sample losses has no cross-sample output curvature"
    e.par.gn  # fills J, Hz
    O.assert_rel(O.gauss_newton_per_sample(e.par._cache["J"], e.par._cache["Hz"]), e.par.gn, 1e-12)


@pytest.mark.parametrize("case", CE_CASES)
def test_output_hessian_cross_entropy_closed_form(case):
    e = env(case)
    z, Hz = _z_and_Hz(e)
    B, K = z.shape
    p = torch.softmax(z, dim=1)
    closed = torch.zeros(B, K, B, K, dtype=torch.float64)
    for b in range(B):
        closed[b, :, b, :] = (torch.diag(p[b]) - torch.outer(p[b], p[b])) / B
    O.assert_rel(Hz, closed.view(B * K, B * K), 1e-12)


@pytest.mark.parametrize("case", MSE_CASES)
def test_output_hessian_mse_closed_form(case):
    e = env(case)
    z, Hz = _z_and_Hz(e)
    B, K = z.shape
    O.assert_rel(Hz, 2.0 / (B * K) * torch.eye(B * K, dtype=torch.float64), 1e-12)


# ---------------------------------------------------------------------------- coupling maps
def _oracle_blocks(e: Env, space: str, names: list[str]):
    """{(v, w): (full, gn)} for all pairs: activation from ONE joint oracle over all sites at once."""
    if space == "activation":
        j = e.act.joint(names)
        idx = {n: e.act.index(names, n) for n in names}
        return {(v, w): (j["full"][idx[v], idx[w]], j["gn"][idx[v], idx[w]]) for v in names for w in names}
    ix = {n: e.par.indices(n) for n in names}
    return {(v, w): (e.par.full[ix[v]][:, ix[w]], e.par.gn[ix[v]][:, ix[w]]) for v in names for w in names}


MAP_PARAMS = [pytest.param(c, sp, id=f"{c}-{sp[:3]}") for c in CASES for sp in ("activation", "parameter")]


@pytest.mark.parametrize("case,space", MAP_PARAMS)
def test_coupling_map_matches_oracle_metrics(case, space):
    e = env(case)
    names = CASES[case].map_nodes if space == "activation" else (CASES[case].map_groups or e.session.groups)
    cm = e.session.coupling_map(names, space=space)
    assert cm.names == names and cm.done and cm.space == space
    ob = _oracle_blocks(e, space, names)
    k = len(names)
    for i, v in enumerate(names):
        for j, w in enumerate(names):
            full, gn = ob[(v, w)]
            what = f"{case}-{space}-{v}-vs-{w}"
            scale = O.fro(full) + O.fro(gn)
            O.assert_scalar(float(cm.R[i, j]), O.fro(full), RTOL, what=f"{what} R")
            O.assert_scalar(float(cm.norm_gn[i, j]), O.fro(gn), RTOL, 1e-13 * scale, what=f"{what} ‖GN‖")
            O.assert_scalar(float(cm.norm_tensor[i, j]), O.fro(full - gn), RTOL, 1e-12 * scale,
                            what=f"{what} ‖H^T‖")
            O.assert_scalar(float(cm.gap[i, j]), O.gn_gap(full, gn), RTOL,
                            1e-12 * scale / (O.fro(gn) + 1e-12), what=f"{what} GN-Gap")
            O.assert_scalar(float(cm.D[i, j]), O.stable_rank(full), RTOL, what=f"{what} D")
            c = O.coupling(full, ob[(v, v)][0], ob[(w, w)][0])
            O.assert_scalar(float(cm.C[i, j]), c, RTOL, what=f"{what} C")
        assert float(cm.C[i, i]) == pytest.approx(1.0, rel=1e-12)
    assert torch.equal(cm.R, cm.R.T) and torch.equal(cm.D, cm.D.T)
    # the map and single blocks must agree (same engine, different sweep bookkeeping)
    v, w = names[0], names[-1]
    b = e.session.block(v, w, space=space)
    O.assert_scalar(float(cm.R[0, k - 1]), b.resonance, 1e-12, what="map vs block R")
    O.assert_scalar(float(cm.gap[0, k - 1]), b.gn_gap, 1e-10, 1e-12, what="map vs block gap")


@pytest.mark.parametrize("case,space,v,w", [
    pytest.param("attention_ce", "activation", "W_Q", "W_K", id="attention-QK"),
    pytest.param("diamond_sum_mse", "activation", "branch_a", "branch_b", id="diamond-ab"),
    pytest.param("resmlp_ln_ce", "activation", "blocks.0", "blocks.1", id="resmlp-stream"),
    pytest.param("cnn4_ce", "parameter", "bn1", "head", id="cnn-bn1-head"),
    pytest.param("mlp_tanh_ln_huber", "parameter", "blocks", "blocks.1", id="mlp-ln-overlap"),
])
def test_coupling_scalar_matches_oracle(case, space, v, w):
    e = env(case)
    o = e.oracle(space, v, w)
    c = O.coupling(o["full"], e.oracle(space, v, v)["full"], e.oracle(space, w, w)["full"])
    O.assert_scalar(e.session.coupling(v, w, space=space), c, RTOL)
    O.assert_scalar(e.session.coupling(w, v, space=space), c, RTOL)


def test_default_coupling_map_covers_all_nodes_and_groups():
    e = env("mlp_relu_ln_ce")
    cm = e.session.coupling_map()
    assert cm.names == e.session.nodes and cm.done
    names = e.session.nodes
    j = e.act.joint(names, method="loop")  # oracle #2 over every node at once
    for i, v in enumerate(names):
        iv = e.act.index(names, v)
        for k, w in enumerate(names):
            O.assert_scalar(float(cm.R[i, k]), O.fro(j["full"][iv, e.act.index(names, w)]), RTOL,
                            what=f"R {v}-vs-{w}")
    cmp = e.session.coupling_map(space="parameter")
    assert cmp.names == e.session.groups and cmp.done


# ------------------------------------------------------------------------------------------ Φ
PHI_PARAMS = [pytest.param(c, None, id=f"{c}-groups") for c in CASES] + [
    pytest.param("mlp_relu_ce", ["blocks.0", "blocks.1", "blocks.2", "head"], id="mlp-blocks"),
    pytest.param("attention_ce", ["norm", "W_Q", "W_K", "W_V"], id="attention-subset"),
    pytest.param("cnn4_ce", ["conv1.weight", "bn1", "head.bias"], id="cnn-mixed"),
]


@pytest.mark.parametrize("case,groups", PHI_PARAMS)
def test_phi_matches_dense_hessian(case, groups):
    e = env(case)
    if groups is None:
        # oracle's own partition: the modules that own parameters directly
        owners = list(dict.fromkeys(n.rpartition(".")[0] for n in e.par.names))
        assert owners == e.session.groups
        got = e.session.phi()
    else:
        owners = groups
        got = e.session.phi(groups)
    idx = [e.par.indices(g) for g in owners]
    want = O.phi(e.par.full, idx)
    O.assert_scalar(got, want, RTOL, what="Φ")
    if groups is None:  # all parameters: the restricted Hessian is the whole Hessian
        full = e.par.full
        diag = sum(O.fro(full[i][:, i]) ** 2 for i in idx)
        O.assert_scalar(got, 1 - diag / O.fro(full) ** 2, RTOL, what="Φ vs whole H")
    assert 0 <= got < 1


def test_phi_single_group_is_zero_and_overlap_is_refused():
    s = env("mlp_relu_ce").session
    assert s.phi(["*"]) == 0.0
    with pytest.raises(HessExploreError, match="share parameter"):
        s.phi(["blocks", "blocks.1"])


# ----------------------------------------------------------------------- theory via oracles
@pytest.mark.parametrize("case,v,w", [("mlp_relu_ce", "x", "blocks.1"), ("diamond_sum_mse", "branch_a", "branch_b"),
                                      ("cnn4_ce", "conv1", "bn2")])
def test_piecewise_linear_activation_tensor_part_vanishes(case, v, w):
    """SCIENCE §3: no LN/softmax, piecewise-linear activations → H^T ≡ 0 in activation space (both sides)."""
    e = env(case)
    o, b = e.oracle("activation", v, w), e.block("activation", v, w)
    assert O.fro(o["tensor"]) <= 1e-13 * O.fro(o["full"])
    assert b.gn_gap < 1e-12
    assert O.fro(o["full"]) > 1e-6


@pytest.mark.parametrize("case,v,w", [("attention_ce", "W_Q", "W_K"), ("ln_anywhere_ce", "fc", "gate"),
                                      ("mlp_relu_ln_ce", "blocks.0.0", "blocks.0.1")])
def test_curved_pairs_have_large_tensor_part(case, v, w):
    """LayerNorm, softmax attention and multiplicative merges are curved even with ReLU."""
    e = env(case)
    o = e.oracle("activation", v, w)
    assert O.gn_gap(o["full"], o["gn"]) > 0.05
    O.assert_scalar(e.block("activation", v, w).gn_gap, O.gn_gap(o["full"], o["gn"]), 1e-7)


# ------------------------------------------------------------------- built-in MSE regression
@pytest.mark.parametrize("loss_fn", [nn.MSELoss(), lambda z, y: F.mse_loss(z, y)], ids=["nn.MSELoss", "F.mse_loss"])
def test_builtin_mse_output_block_is_closed_form(loss_fn):
    """At the output node of a mean-reduced MSE: H_{z,z} = Σ_b ∂²L/∂z_b² = B · 2/(B·K)·I = 2/K·I = GN.

    torch 2.13's forward-over-reverse of F.mse_loss(reduction="mean") raises "ZeroTensors are immutable"
    (pytorch#123996): the engine must still work with the most common regression loss.
    """
    torch.manual_seed(0)
    B, K = 4, 3
    model = nn.Sequential(nn.Linear(5, K))
    s = Session(model, loss_fn, (torch.randn(B, 5), torch.randn(B, K)), dtype=torch.float64)
    b = s.block("0", "0")
    O.assert_rel(b.full, 2.0 / K * torch.eye(K, dtype=torch.float64), 1e-12)
    O.assert_rel(b.gn, b.full, 1e-12)
    bp = s.block("0", "0", space="parameter")
    O.assert_rel(bp.full, O.ParameterOracle(model, *s.inputs, s.targets, loss_fn).block("0", "0")["full"], RTOL)
