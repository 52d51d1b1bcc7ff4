"""Open operators: any block as a matvec / SciPy LinearOperator, and eigenvectors from s.spectrum.

Oracles: the dense exact blocks of the same session (themselves checked against autograd
double backward and finite differences in test_blocks.py), float64; eigenvectors are
checked by their defining identity H u = λ u with the dense local Hessian.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore import data, models

F64 = torch.float64


@pytest.fixture(scope="module")
def s():
    torch.manual_seed(0)
    m = models.MLP(d_in=4, width=6, depth=2, d_out=3, activation="gelu", norm="layernorm").eval()
    return hx.Session(m, nn.CrossEntropyLoss(), data.blobs(10, d=4, classes=3, seed=0), dtype=F64)


CASES = [("activation", "blocks.0.0", "blocks.1.0"), ("activation", "x", "blocks.0.2"),
         ("parameter", "blocks.0.0", "head"), ("parameter", "blocks.1.1", "blocks.1.1")]


@pytest.mark.parametrize("space,v,w", CASES)
@pytest.mark.parametrize("part", ["full", "gn", "tensor"])
def test_block_operator_matches_dense_block(s, space, v, w, part):
    b = s.block(v, w, space=space)
    want = {"full": b.full, "gn": b.gn, "tensor": b.tensor}[part]
    A = s.block_operator(v, w, space=space, part=part)
    assert A.shape == tuple(want.shape)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(A.shape[1], generator=g, dtype=F64)
    X = torch.randn(A.shape[1], 3, generator=g, dtype=F64)
    u = torch.randn(A.shape[0], generator=g, dtype=F64)
    scale = float(b.full.abs().max())
    assert torch.allclose(A @ x, want @ x, rtol=1e-10, atol=1e-12 * scale)
    assert torch.allclose(A @ X, want @ X, rtol=1e-10, atol=1e-12 * scale)
    assert torch.allclose(A.T @ u, want.T @ u, rtol=1e-10, atol=1e-12 * scale)
    assert torch.allclose(A.dense(chunk=4), want, rtol=1e-10, atol=1e-12 * scale)


def test_scipy_linear_operator(s):
    pytest.importorskip("scipy")
    from scipy.sparse.linalg import eigsh, svds
    b = s.block("blocks.0.0", "blocks.1.0")
    L = s.block_operator("blocks.0.0", "blocks.1.0").to_scipy()
    assert L.shape == b.shape and L.dtype == np.float64
    x = np.linspace(-1, 1, b.shape[1])
    assert np.allclose(L @ x, b.full.numpy() @ x, rtol=1e-10, atol=1e-14)
    assert np.allclose(L.rmatvec(np.ones(b.shape[0])), b.full.numpy().T @ np.ones(b.shape[0]), rtol=1e-10)
    assert np.allclose(L.matmat(np.eye(b.shape[1])), b.full.numpy(), rtol=1e-10, atol=1e-14)
    sv = svds(L, k=1, return_singular_vectors=False, random_state=0)
    assert sv[0] == pytest.approx(b.spectral_norm, rel=1e-8)
    d = s.block("head", "head", space="parameter")
    Ld = s.block_operator("head", space="parameter").to_scipy()
    lam = eigsh(Ld, k=2, which="LA", return_eigenvectors=False, v0=np.ones(d.shape[0]))
    ref = torch.linalg.eigvalsh(d.full).numpy()
    assert np.allclose(np.sort(lam), ref[-2:], rtol=1e-8)


def test_block_operator_rejects_bad_input(s):
    A = s.block_operator("blocks.0.0", "blocks.1.0")
    with pytest.raises(hx.HessExploreError, match=r"shape \(k, 6\)"):
        A.matmat_rows(torch.zeros(2, 5, dtype=F64))
    with pytest.raises(hx.HessExploreError, match="part must be one of"):
        s.block_operator("head", part="hessian")
    with pytest.raises(hx.UnknownNameError):
        s.block_operator("blocks.9")


def _residual(H, lam, U):
    """max_i ‖H u_i − λ_i u_i‖ for eigen-pairs as columns."""
    return float((H @ U - U * lam[None, :]).norm(dim=0).max())


@pytest.mark.parametrize("group", ["blocks.0.0", "head"])
def test_exact_spectrum_eigenvectors(s, group):
    H = s.block(group, group, space="parameter").full
    sp = s.spectrum(group, method="exact", vectors=True)
    U = sp.eigenvectors
    assert U.shape == H.shape
    scale = float(sp.eigenvalues.abs().max())
    assert _residual(H, sp.eigenvalues, U) <= 1e-10 * scale
    assert torch.allclose(U.T @ U, torch.eye(U.shape[1], dtype=F64), atol=1e-10)
    assert torch.allclose(sp.top_vectors[:, 0], U[:, -1]) and torch.allclose(sp.bottom_vectors[:, 0], U[:, 0])
    assert s.spectrum(group, method="exact").eigenvectors is None           # opt-in: eigvalsh by default


def test_lanczos_spectrum_ritz_vectors(s):
    group = "blocks.1.0"                      # 42 parameters: Lanczos converges before spanning R^n
    H = s.block(group, group, space="parameter").full
    sp = s.spectrum(group, method="lanczos", k=2, tol=1e-8)
    assert sp.top_vectors.shape == (H.shape[0], 2) and sp.bottom_vectors.shape == (H.shape[0], 2)
    scale = float(H.abs().max())
    for vals, bounds, U in ((sp.top, sp.top_bounds, sp.top_vectors), (sp.bottom, sp.bottom_bounds, sp.bottom_vectors)):
        r = (H @ U - U * vals[None, :]).norm(dim=0)
        assert torch.allclose(U.norm(dim=0), torch.ones(U.shape[1], dtype=F64), atol=1e-10)
        assert bool((r <= bounds + 1e-9 * scale).all()), (r, bounds)          # ‖Hu − θu‖ = residual bound
        assert float(r.max()) <= 1e-6 * scale
