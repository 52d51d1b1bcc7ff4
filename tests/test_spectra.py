"""Local-Hessian spectra (Session.spectrum / iter_spectrum, hessexplore.spectra) against dense eigh.

The oracle is ``torch.linalg.eigvalsh`` of the engine's dense diagonal block
``s.block(g, g, space="parameter").full`` (and ``.gn``), itself pinned to autograd double backward and
finite differences by test_blocks.py.  Models: MLP (ReLU), MLP (GELU + LayerNorm, LN's own parameters
as groups), SmallCNN in eval mode with randomised BatchNorm, ToyAttention (LayerNorm + softmax).
All float64.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from hessexplore import BlockTooLargeError, HessExploreError, Session, Spectrum, UnknownNameError, models
from hessexplore.errors import JobCancelled
from hessexplore.spectra import STAT_KEYS, compute_spectrum, normalized_stats
from hessexplore.spectral_stats import spectrum_stats

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64
EIG_RTOL = 1e-8        # exact eigenvalues vs the oracle, relative to max|λ|
LANCZOS_RTOL = 1e-6    # Lanczos extremes vs the oracle, relative to max|λ|


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _seeded(seed, make):
    torch.manual_seed(seed)
    return make()


def mlp_relu():
    m = _seeded(0, lambda: models.MLP(5, 8, 2, 3, activation="relu"))
    x = torch.randn(12, 5, generator=_gen(0))
    return m, x, torch.randint(0, 3, (12,), generator=_gen(1)), nn.CrossEntropyLoss()


def mlp_gelu_ln():
    m = _seeded(1, lambda: models.MLP(5, 8, 2, 3, activation="gelu", norm="layernorm"))
    with torch.no_grad():   # non-trivial LayerNorm affine parameters
        for blk in m.blocks:
            blk[1].weight.add_(0.3 * torch.randn(8, generator=_gen(11)))
            blk[1].bias.add_(0.2 * torch.randn(8, generator=_gen(12)))
    x = torch.randn(10, 5, generator=_gen(2))
    return m, x, torch.randint(0, 3, (10,), generator=_gen(3)), nn.CrossEntropyLoss()


def cnn_bn():
    m = _seeded(2, lambda: models.SmallCNN(1, size=8, channels=3, d_out=3))
    models.randomize_batchnorm(m, _gen(20))
    x = torch.randn(6, 1, 8, 8, generator=_gen(4))
    return m, x, torch.randint(0, 3, (6,), generator=_gen(5)), nn.CrossEntropyLoss()


def attention():
    m = _seeded(3, lambda: models.ToyAttention(d_model=4, d_out=3))
    x = torch.randn(6, 3, 4, generator=_gen(6))
    return m, x, torch.randint(0, 3, (6,), generator=_gen(7)), nn.CrossEntropyLoss()


MODELS = {
    "mlp_relu": (mlp_relu, ["blocks.0.0", "blocks.1.0", "head"]),
    "mlp_gelu_ln": (mlp_gelu_ln, ["blocks.0.0", "blocks.0.1", "blocks.1", "blocks.1.1", "head"]),
    "cnn_bn": (cnn_bn, ["conv1", "bn1", "conv2", "bn2", "head"]),
    "attention": (attention, ["norm", "W_Q", "W_K", "W_V", "proj", "head"]),
}

_SESSIONS: dict = {}


def session(name: str) -> Session:
    if name not in _SESSIONS:
        m, x, y, lf = MODELS[name][0]()
        _SESSIONS[name] = Session(m.eval(), lf, (x, y), dtype=F64)
    return _SESSIONS[name]


_DENSE: dict = {}


def dense(name: str, g: str):
    """Oracle eigenvalues (ascending) of the engine's dense block: {"full": …, "gn": …}."""
    key = (name, g)
    if key not in _DENSE:
        b = session(name).block(g, g, space="parameter")
        _DENSE[key] = {"full": torch.linalg.eigvalsh(b.full), "gn": torch.linalg.eigvalsh(b.gn)}
    return _DENSE[key]


CASES = [(name, g) for name, (_, groups) in MODELS.items() for g in groups]


# ------------------------------------------------------------------------------------------ exact
@pytest.mark.parametrize("name,group", CASES)
@pytest.mark.parametrize("part", ["full", "gn"])
def test_exact_eigenvalues_match_dense_block(name, group, part):
    s = session(name)
    sp = s.spectrum(group, part)                          # auto → exact at these sizes
    ref = dense(name, group)[part]
    assert sp.method == "exact" and sp.requested == "auto" and "auto chose exact" in sp.note
    assert sp.n == s.dim(group, "parameter") == ref.numel()
    scale = float(ref.abs().max())
    err = float((sp.eigenvalues - ref).abs().max())
    assert err <= EIG_RTOL * scale, f"{name}/{group}/{part}: max |Δλ| = {err:.2e} (scale {scale:.2e})"
    # every statistic recomputed from the oracle's eigenvalues with the same tolerance
    st = spectrum_stats(ref, eps=sp.eps)
    for k, v in st.items():
        got = sp.stats[k]
        if isinstance(v, list):
            if k == "outliers":
                assert len(got) == len(v), (k, got, v)
            assert torch.allclose(torch.tensor(got, dtype=F64), torch.tensor(v, dtype=F64),
                                  rtol=1e-6, atol=EIG_RTOL * scale), (k, got, v)
        elif isinstance(v, float) and math.isnan(v):
            assert math.isnan(got), k
        else:
            assert got == pytest.approx(v, rel=1e-6, abs=1e-7 * max(scale, 1e-300)), (k, got, v)
    assert sp.stats["bottom_k"] == pytest.approx(ref[:5].tolist(), abs=EIG_RTOL * scale)
    assert sp.stats["tol"] == pytest.approx(sp.eps * scale, rel=1e-6)
    assert set(STAT_KEYS) <= set(sp.stats)
    # the broadened density integrates to 1 and its mean is trace / n
    mass = float(torch.trapezoid(sp.density, sp.grid))
    mean = float(torch.trapezoid(sp.grid * sp.density, sp.grid))
    assert mass == pytest.approx(1.0, abs=1e-6)
    assert mean == pytest.approx(float(ref.sum()) / ref.numel(), abs=1e-6 * scale)


def test_relu_mlp_local_hessians_are_psd_and_equal_gn():
    """SCIENCE.md §3: a ReLU MLP's diagonal parameter blocks equal their GN blocks, so they are PSD."""
    s = session("mlp_relu")
    for g in MODELS["mlp_relu"][1]:
        full, gn = s.spectrum(g, "full"), s.spectrum(g, "gn")
        scale = float(full.eigenvalues.abs().max())
        assert float((full.eigenvalues - gn.eigenvalues).abs().max()) <= 1e-10 * scale
        assert full.stats["lambda_min"] >= -full.tol
        assert full.stats["negative_mass"] == 0.0


def test_float32_session_uses_float32_tolerance():
    m, x, y, lf = mlp_gelu_ln()
    s32 = Session(m.eval(), lf, (x, y))
    sp = s32.spectrum("blocks.1")
    ref = dense("mlp_gelu_ln", "blocks.1")["full"]
    scale = float(ref.abs().max())
    assert sp.eigenvalues.dtype == torch.float32
    assert float((sp.eigenvalues.double() - ref).abs().max()) <= 1e-4 * scale
    assert sp.eps == pytest.approx(sp.n * torch.finfo(torch.float32).eps)


# ---------------------------------------------------------------------------------------- Lanczos
@pytest.mark.parametrize("name,group,k", [("mlp_gelu_ln", "blocks.1", 3), ("mlp_relu", "blocks.1.0", 3),
                                          ("cnn_bn", "conv2", 3), ("attention", "W_Q", 2)])
def test_lanczos_extremes_match_dense(name, group, k):
    s = session(name)
    ref = dense(name, group)["full"]
    n = ref.numel()
    sp = s.spectrum(group, method="lanczos", k=k)
    assert sp.method == "lanczos" and sp.requested == "lanczos"
    scale = float(ref.abs().max())
    top_ref, bot_ref = ref.flip(0)[:k], ref[:k]
    assert float((sp.top - top_ref).abs().max()) <= LANCZOS_RTOL * scale, (sp.top, top_ref)
    # a zero eigenvalue of multiplicity > 1 (rank-deficient ReLU blocks) is seen once by single-vector
    # Lanczos until it breaks down, so compare the bottom only where the oracle's are distinct
    distinct = bool((bot_ref.diff().abs() > 1e-6 * scale).all()) if k > 1 else True
    if distinct or sp.eigenvalues is not None:
        assert float((sp.bottom - bot_ref).abs().max()) <= LANCZOS_RTOL * scale, (sp.bottom, bot_ref)
    else:
        assert sp.bottom[0] == pytest.approx(float(bot_ref[0]), abs=LANCZOS_RTOL * scale)
    assert sp.converged
    assert sp.stats["lambda_max"] == pytest.approx(float(ref[-1]), abs=LANCZOS_RTOL * scale)
    assert (sp.top_bounds >= 0).all() and (sp.bottom_bounds >= 0).all()
    if sp.eigenvalues is not None:     # rank-deficient: breakdowns restart until R^n is spanned (exact)
        assert sp.lanczos_iterations == n and "whole space" in sp.note
        assert float((sp.eigenvalues - ref).abs().max()) <= LANCZOS_RTOL * scale
    else:                                                    # stopped before spanning R^n
        assert sp.errors["lambda_max"] <= 1e-6 * scale       # residual bound, reported
        assert sp.lanczos_iterations < n
        assert math.isnan(sp.stats["trace"]) and "trace" in sp.stats["not_estimated"]
        assert "not estimated" in sp.note


def test_lanczos_spanning_the_space_gives_all_eigenvalues():
    s = session("attention")
    ref = dense("attention", "head")["full"]         # 15 parameters
    sp = s.spectrum("head", method="lanczos", k=2, tol=0.0)
    assert sp.eigenvalues is not None and "whole space" in sp.note
    assert float((sp.eigenvalues - ref).abs().max()) <= 1e-8 * float(ref.abs().max())


# -------------------------------------------------------------------------------------------- SLQ
@pytest.mark.parametrize("name,group", [("mlp_gelu_ln", "blocks.1"), ("cnn_bn", "conv2")])
def test_slq_density_integrates_to_one_with_mean_trace_over_n(name, group):
    s = session(name)
    ref = dense(name, group)["full"]
    n = ref.numel()
    sp = s.spectrum(group, method="slq", num_probes=24, num_iter=30, seed=3)
    assert sp.method == "slq" and sp.eigenvalues is None and sp.slq is not None
    assert math.isfinite(sp.sigma) and sp.sigma > 0 and f"σ = {sp.sigma:.3g}" in sp.note
    assert float(torch.trapezoid(sp.density, sp.grid)) == pytest.approx(1.0, abs=1e-3)
    assert float(sp.slq.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    se = sp.slq.mean_stderr
    assert math.isfinite(se) and se > 0
    assert abs(sp.slq.mean - float(ref.sum()) / n) <= 4 * se + 1e-12, (sp.slq.mean, float(ref.sum()) / n, se)
    assert sp.stats["trace"] == pytest.approx(sp.slq.trace, rel=1e-12)
    assert sp.errors["trace"] == pytest.approx(sp.slq.trace_stderr, rel=1e-12)
    # inner estimates of the extremes; statistics that need single eigenvalues are declared missing
    scale = float(ref.abs().max())
    assert float(ref[0]) - 1e-9 * scale <= sp.stats["lambda_min"] <= sp.stats["lambda_max"] <= \
        float(ref[-1]) + 1e-9 * scale
    assert "condition_number" in sp.stats["not_estimated"] and math.isnan(sp.stats["condition_number"])
    assert 0.0 <= sp.stats["negative_mass"] <= 1.0


def test_lanczos_plus_slq_combines_both():
    s = session("mlp_gelu_ln")
    ref = dense("mlp_gelu_ln", "blocks.1")["full"]
    scale = float(ref.abs().max())
    sp = s.spectrum("blocks.1", method="lanczos+slq", k=2, num_probes=8, num_iter=20)
    assert sp.source["lambda_max"] == "lanczos" and sp.source["trace"] == "slq"
    assert sp.stats["lambda_max"] == pytest.approx(float(ref[-1]), abs=LANCZOS_RTOL * scale)
    assert sp.stats["lambda_min"] == pytest.approx(float(ref[0]), abs=LANCZOS_RTOL * scale)
    assert sp.stats["top_k"] == pytest.approx(ref.flip(0)[:2].tolist(), abs=LANCZOS_RTOL * scale)
    assert math.isfinite(sp.stats["negative_mass"]) and math.isfinite(sp.stats["spectral_entropy"])
    assert sp.stats["not_estimated"] == ["condition_number"]


# ------------------------------------------------------------------------------------------- auto
def test_auto_switches_at_the_threshold_and_says_so():
    s = session("mlp_gelu_ln")
    n = s.dim("blocks.1", "parameter")
    small = s.spectrum("blocks.1", dense_max=n)
    assert small.method == "exact" and small.eigenvalues is not None
    assert f"{n:,} parameters ≤ dense_max={n:,}" in small.note
    big = s.spectrum("blocks.1", dense_max=n - 1, num_probes=4, num_iter=10)
    assert big.method == "lanczos+slq" and big.requested == "auto" and big.eigenvalues is None
    assert f"{n:,} parameters > dense_max={n - 1:,}" in big.note and "SLQ" in big.note
    assert big.top is not None and big.slq is not None


# -------------------------------------------------------------------------------------- streaming
def test_iter_spectrum_refines_and_ends_done():
    s = session("mlp_gelu_ln")
    snaps = list(s.iter_spectrum("blocks.1", method="lanczos+slq", k=2, check_every=3, num_probes=8,
                                 num_iter=16, probe_batch=2))
    stages = [sn.stage for sn in snaps]
    assert stages[0] == "lanczos" and stages[-1] == "slq"
    assert stages.count("slq") == 4                                      # 8 probes / 2 per batch
    assert all(not sn.done for sn in snaps[:-1]) and snaps[-1].done
    mv = [sn.matvecs for sn in snaps]
    assert mv == sorted(mv) and mv[-1] > mv[0]
    lz = [sn for sn in snaps if sn.stage == "lanczos"]
    assert lz[-1].errors["lambda_max"] <= lz[0].errors["lambda_max"]
    assert [sn.slq.num_probes for sn in snaps if sn.stage == "slq"] == [2, 4, 6, 8]
    # streaming does not change the answer: same seed, probes all at once
    once = s.spectrum("blocks.1", method="lanczos+slq", k=2, check_every=3, num_probes=8, num_iter=16)
    assert once.stats["trace"] == pytest.approx(snaps[-1].stats["trace"], rel=1e-10)
    assert once.stats["lambda_max"] == pytest.approx(snaps[-1].stats["lambda_max"], rel=1e-12)


def test_should_stop_cancels():
    s = session("mlp_gelu_ln")
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(JobCancelled):
        for _ in s.iter_spectrum("blocks.1", method="slq", num_probes=8, probe_batch=2, should_stop=stop):
            pass
    with pytest.raises(JobCancelled):
        s.spectrum("blocks.1", method="exact", chunk=8, should_stop=lambda: True)


# ------------------------------------------------------------------------------------------ input
def test_errors_name_the_problem():
    s = session("mlp_relu")
    with pytest.raises(UnknownNameError):
        s.spectrum("blocks.9")
    with pytest.raises(HessExploreError, match="part must be"):
        s.spectrum("head", part="diag")
    with pytest.raises(HessExploreError, match="method must be"):
        s.spectrum("head", method="eigsh")
    m, x, y, lf = mlp_relu()
    small = Session(m.eval(), lf, (x, y), dtype=F64, max_exact_dim=10)
    with pytest.raises(BlockTooLargeError, match="method='lanczos'"):
        small.spectrum("head", method="exact")


def test_json_and_normalised_statistics():
    s = session("mlp_gelu_ln")
    sp = s.spectrum("blocks.0.0")
    d = sp.to_json()
    json.dumps(d, allow_nan=False)
    assert d["eigenvalues"] == pytest.approx(sp.eigenvalues.tolist())
    nz = sp.normalized
    st = sp.stats
    assert nz["lambda_min/lambda_max"] == pytest.approx(st["lambda_min"] / st["lambda_max"])
    if st["trace"] > 0:
        assert nz["lambda_max/trace"] == pytest.approx(st["lambda_max"] / st["trace"])
    else:                                   # an indefinite block with trace ≤ 0: a ratio is meaningless
        assert math.isnan(nz["lambda_max/trace"])
    assert nz["trace/lambda_max"] == pytest.approx(st["trace"] / st["lambda_max"])
    assert nz["negative_mass"] == st["negative_mass"]
    assert math.isnan(normalized_stats({"lambda_max": 1.0, "trace": -2.0})["lambda_max/trace"])
    assert "Spectrum('blocks.0.0'" in repr(sp) and isinstance(sp, Spectrum)


# ------------------------------------------------------------------------- on an abstract matvec
def test_compute_spectrum_on_a_plain_matrix():
    g = _gen(5)
    n = 300
    lam = torch.cat([torch.linspace(-1.0, 2.0, n - 2, dtype=F64), torch.tensor([6.0, 9.0], dtype=F64)])
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    A = (q * lam) @ q.T
    A = (A + A.T) / 2
    sp = compute_spectrum(lambda V: V @ A, n, dense_max=100, k=3, num_probes=32, num_iter=40, probe_batch=None)
    assert sp.method == "lanczos+slq"
    assert sp.stats["top_k"] == pytest.approx([9.0, 6.0, 2.0], abs=1e-8)
    assert sp.stats["lambda_min"] == pytest.approx(-1.0, abs=1e-8)
    assert abs(sp.stats["trace"] - float(lam.sum())) <= 4 * sp.errors["trace"]
    assert sorted(sp.stats["outliers"]) == [6.0, 9.0] or sorted(sp.stats["outliers"]) == pytest.approx([6.0, 9.0])
    exact = compute_spectrum(lambda V: V @ A, n, chunk=64)
    ex = spectrum_stats(lam)
    assert exact.stats["negative_mass"] == pytest.approx(ex["negative_mass"], rel=1e-9)
    # the SLQ negative mass estimates the exact one (coarsely: a ratio of density integrals)
    assert sp.stats["negative_mass"] == pytest.approx(ex["negative_mass"], abs=0.05)


def test_slq_without_reorthogonalisation_still_estimates_the_trace():
    s = session("mlp_gelu_ln")
    ref = dense("mlp_gelu_ln", "blocks.1")["full"]
    sp = s.spectrum("blocks.1", method="slq", num_probes=16, num_iter=20, slq_reorth=False, seed=1)
    assert float(torch.trapezoid(sp.density, sp.grid)) == pytest.approx(1.0, abs=1e-3)
    assert abs(sp.stats["trace"] - float(ref.sum())) <= 4 * sp.errors["trace"]


def test_lanczos_spectrum_after_exact_breakdowns_still_spans_the_space():
    """Robust by construction: a block-diagonal operator whose zero block breaks Lanczos down with an
    exactly-zero residual; with tol=0 the spectrum must still be the whole (exact) one."""
    from hessexplore.spectra import iter_spectrum

    d = torch.tensor([0.0] * 6 + [1.0, 2.0, -3.0], dtype=torch.float64)
    last = None
    for last in iter_spectrum(lambda V: V * d, d.numel(), method="lanczos", k=2, tol=0.0):
        pass
    assert last.eigenvalues is not None and "whole space" in last.note
    assert torch.allclose(last.eigenvalues, d.sort().values, atol=1e-12)
    zero = None
    for zero in iter_spectrum(lambda V: torch.zeros_like(V), 7, method="lanczos", k=2, tol=0.0):
        pass
    assert zero.eigenvalues is not None and torch.equal(zero.eigenvalues, torch.zeros(7, dtype=torch.float64))
