"""Block metrics of P1 (SCIENCE.md §2) on dense blocks, and their aggregates.

All functions take dense (d_v, d_w) tensors (or their norms) and return Python floats.

Ratios are **scale-aware**: GN-Gap and C compare a block with its own norms, so
multiplying the loss by any c > 0 leaves them unchanged.  A denominator counts as
zero when it is below ``rel_tol`` times the largest norm involved (never a fixed
absolute 1e-12); the ratio is then NaN and :func:`gap_reason` /
:func:`coupling_reason` say why.  ``rel_tol`` defaults to 1e-12; exact blocks pass
:func:`rel_tol` of their dtype (rounding in float32 is ~1e-7, not 1e-16).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

REL_TOL = 1e-12   # a norm ≤ REL_TOL × the largest norm of the ratio counts as zero


def rel_tol(dtype: torch.dtype | None = None) -> float:
    """Relative zero threshold for norms computed in ``dtype``: max(1e-12, 32 ε(dtype))."""
    if dtype is None or not dtype.is_floating_point:
        return REL_TOL
    return max(REL_TOL, 32 * torch.finfo(dtype).eps)


def frobenius(H: torch.Tensor) -> float:
    """‖H‖_F = sqrt(Σ_ij H_ij²)."""
    return float(torch.linalg.matrix_norm(H, ord="fro"))


def spectral_norm(H: torch.Tensor) -> float:
    """‖H‖₂ = largest singular value."""
    if H.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(H, ord=2))


def resonance(H: torch.Tensor) -> float:
    """R(v, w) = ‖H_{v,w}‖_F."""
    return frobenius(H)


def coupling_reason(r_vw: float, r_vv: float, r_ww: float, tol: float = REL_TOL) -> str | None:
    """Why C(v, w) is undefined (NaN), or None when it is defined.

    Undefined when every norm is zero, or when ‖H_vv‖_F or ‖H_ww‖_F is ≤ tol times the
    largest of the three norms (a node without curvature of its own).
    """
    vals = (r_vw, r_vv, r_ww)
    if any(not math.isfinite(x) for x in vals):
        return "a norm is not finite"
    scale = max(vals)
    if scale <= 0:
        return "zero block: H_vw, H_vv and H_ww are all zero"
    if min(r_vv, r_ww) <= tol * scale:
        which = "H_vv" if r_vv <= r_ww else "H_ww"
        return f"{which} is zero relative to the other blocks (‖{which}‖_F ≤ {tol:.0e} × the largest norm)"
    return None


def coupling_from_norms(r_vw: float, r_vv: float, r_ww: float, tol: float = REL_TOL) -> float:
    """C = R_vw / sqrt(R_vv · R_ww) (square root of the product of norms).

    NaN where :func:`coupling_reason` says it is undefined (relative threshold ``tol``,
    so C is the same at any loss scale).  Never clamped: C > 1 happens when the tensor
    part is non-zero.
    """
    if coupling_reason(r_vw, r_vv, r_ww, tol) is not None:
        return float("nan")
    return r_vw / math.sqrt(r_vv * r_ww)


def coupling(H_vw: torch.Tensor, H_vv: torch.Tensor, H_ww: torch.Tensor) -> float:
    """C(v, w) = ‖H_vw‖_F / sqrt(‖H_vv‖_F ‖H_ww‖_F), all (d, d) blocks of one dtype."""
    return coupling_from_norms(frobenius(H_vw), frobenius(H_vv), frobenius(H_ww), rel_tol(H_vw.dtype))


def stable_rank(H: torch.Tensor) -> float:
    """D = ‖H‖_F² / ‖H‖₂² ∈ [1, rank H]; NaN for a zero block."""
    s = spectral_norm(H)
    return frobenius(H) ** 2 / s ** 2 if s > 0 else float("nan")


def gap_reason(norm_tensor: float, norm_gn: float, tol: float = REL_TOL) -> str | None:
    """Why GN-Gap is undefined (NaN), or None when it is defined.

    Undefined for a zero block (both parts zero) and when ‖H^GN‖_F ≤ tol · ‖H^T‖_F
    (the block is pure tensor part: the ratio would only measure rounding).
    """
    if not (math.isfinite(norm_tensor) and math.isfinite(norm_gn)):
        return "a norm is not finite"
    scale = max(norm_tensor, norm_gn)
    if scale <= 0:
        return "zero block: both the Gauss–Newton and the tensor part are zero"
    if norm_gn <= tol * scale:
        return f"the Gauss–Newton part is zero relative to the tensor part (‖H^GN‖_F ≤ {tol:.0e} ‖H^T‖_F)"
    return None


def gn_gap_from_norms(norm_tensor: float, norm_gn: float, tol: float = REL_TOL) -> float:
    """GN-Gap = ‖H^T‖_F / ‖H^GN‖_F; NaN where :func:`gap_reason` says it is undefined."""
    if gap_reason(norm_tensor, norm_gn, tol) is not None:
        return float("nan")
    return norm_tensor / norm_gn


def gn_gap(H_tensor: torch.Tensor, H_gn: torch.Tensor) -> float:
    """GN-Gap(v, w) = ‖H^T_{v,w}‖_F / ‖H^GN_{v,w}‖_F for (d_v, d_w) parts (NaN if undefined)."""
    return gn_gap_from_norms(frobenius(H_tensor), frobenius(H_gn), rel_tol(H_gn.dtype))


def gap_matrix(norm_tensor: torch.Tensor, norm_gn: torch.Tensor, tol: float = REL_TOL) -> torch.Tensor:
    """Elementwise GN-Gap of (k, k) norm tables, NaN where undefined (as :func:`gn_gap_from_norms`)."""
    scale = torch.maximum(norm_tensor, norm_gn)
    ok = (scale > 0) & (norm_gn > tol * scale)
    return torch.where(ok, norm_tensor / torch.where(ok, norm_gn, torch.ones_like(norm_gn)),
                       torch.full_like(norm_gn, float("nan")))


def coupling_matrix(R: torch.Tensor, tol: float = REL_TOL) -> torch.Tensor:
    """C[i, j] = R_ij / sqrt(R_ii R_jj) for a (k, k) norm table, NaN where undefined."""
    d = R.diagonal()
    scale = torch.maximum(torch.maximum(d[:, None], d[None, :]), R)
    lo = torch.minimum(d[:, None], d[None, :])
    ok = (scale > 0) & (lo > tol * scale)
    den = torch.sqrt(torch.outer(d, d))
    return torch.where(ok, R / torch.where(ok, den, torch.ones_like(den)), torch.full_like(R, float("nan")))


def ratio_of_sums(numerators: Iterable[float], denominators: Iterable[float]) -> float:
    """Σ num / Σ den — how aggregates over many pairs are formed (not a mean of ratios)."""
    num = sum(numerators)
    den = sum(denominators)
    return num / den if den > 0 else float("nan")


def phi_from_norms(diag_sq: Iterable[float], offdiag_sq: Iterable[float]) -> float:
    """Φ = 1 − Σ_v ‖H_vv‖_F² / ‖H‖_F², ‖H‖_F² = Σ_v ‖H_vv‖_F² + 2 Σ_{v<w} ‖H_vw‖_F².

    ``offdiag_sq`` holds ‖H_vw‖_F² once per unordered pair v < w.  Φ ∈ [0, 1),
    0 for a single group; NaN for a zero Hessian.
    """
    d = sum(diag_sq)
    total = d + 2.0 * sum(offdiag_sq)
    return 1.0 - d / total if total > 0 else float("nan")
