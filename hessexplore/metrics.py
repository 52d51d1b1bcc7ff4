"""Block metrics of P1 (SCIENCE.md §2) on dense blocks, and their aggregates.

All functions take dense (d_v, d_w) tensors and return Python floats.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

GAP_EPS = 1e-12        # GN-Gap = ‖H^T‖_F / (‖H^GN‖_F + GAP_EPS)
COUPLING_EPS = 1e-12   # coupling is NaN when sqrt(‖H_vv‖‖H_ww‖) < COUPLING_EPS


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


def coupling_from_norms(r_vw: float, r_vv: float, r_ww: float) -> float:
    """C = R_vw / sqrt(R_vv · R_ww) (square root of the product of norms); NaN if that is < 1e-12.

    Never clamped: C > 1 happens when the tensor part is non-zero.
    """
    denom = math.sqrt(r_vv * r_ww)
    return r_vw / denom if denom >= COUPLING_EPS else float("nan")


def coupling(H_vw: torch.Tensor, H_vv: torch.Tensor, H_ww: torch.Tensor) -> float:
    """C(v, w) = ‖H_vw‖_F / sqrt(‖H_vv‖_F ‖H_ww‖_F)."""
    return coupling_from_norms(frobenius(H_vw), frobenius(H_vv), frobenius(H_ww))


def stable_rank(H: torch.Tensor) -> float:
    """D = ‖H‖_F² / ‖H‖₂² ∈ [1, rank H]; NaN for a zero block."""
    s = spectral_norm(H)
    return frobenius(H) ** 2 / s ** 2 if s > 0 else float("nan")


def gn_gap_from_norms(norm_tensor: float, norm_gn: float) -> float:
    """GN-Gap = ‖H^T‖_F / (‖H^GN‖_F + 1e-12)."""
    return norm_tensor / (norm_gn + GAP_EPS)


def gn_gap(H_tensor: torch.Tensor, H_gn: torch.Tensor) -> float:
    """GN-Gap(v, w) = ‖H^T_{v,w}‖_F / (‖H^GN_{v,w}‖_F + 1e-12)."""
    return gn_gap_from_norms(frobenius(H_tensor), frobenius(H_gn))


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
