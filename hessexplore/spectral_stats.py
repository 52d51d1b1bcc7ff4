"""Statistics of a symmetric matrix's spectrum (SCIENCE.md §5), from eigenvalues or from a density.

Input is a 1-D tensor / array / list of eigenvalues λ ∈ R^n (any order), or, for stochastic Lanczos
quadrature, a discrete spectral measure μ̂ = Σ_i w_i δ(x − θ_i) estimating μ = (1/n) Σ_j δ(x − λ_j).
All statistics are computed in float64 and returned as Python numbers (JSON-ready); undefined ones
are ``nan`` (never an exception or a division warning).

Tolerance.  τ = eps · max_j |λ_j|; eigenvalues with |λ| ≤ τ count as zero.  The default eps is
n · (machine epsilon of the input's dtype) — 2.2e-16·n for float64, 1.2e-7·n for float32 (integer
input counts as float64).  Both ``eps`` and ``tol`` = τ are part of the output so users see them.
Pass a larger eps for eigenvalues computed in lower precision than their storage dtype.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

ArrayLike = Union[Tensor, Sequence[float], np.ndarray]

__all__ = ["spectrum_stats", "density_histogram", "stats_from_density", "NOT_ESTIMABLE_FROM_DENSITY"]

#: statistics of :func:`spectrum_stats` that :func:`stats_from_density` does not estimate: they need
#: individual eigenvalues (the smallest positive one, the k largest, the isolated ones), which a
#: density of finite resolution does not resolve.
NOT_ESTIMABLE_FROM_DENSITY = ("condition_number", "top_k", "outliers")


def _div(num: float, den: float) -> float:
    """num / den, or nan when den is 0 (or nan)."""
    return num / den if den != 0 and not math.isnan(den) else float("nan")


def _as_vector(values: ArrayLike, name: str) -> tuple[Tensor, torch.dtype]:
    """(1-D float64 tensor, the dtype it came in) — rejects empty, non-1-D and non-finite input."""
    # lists go through numpy so that Python floats stay float64 (torch.as_tensor would make float32)
    t = values.detach() if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))
    src = t.dtype if t.is_floating_point() else torch.float64
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinity")
    return t, src


def _tolerance(values: Tensor, src: torch.dtype, n: int, eps: Optional[float]) -> tuple[float, float]:
    """(eps, τ = eps · max|values|) with eps defaulting to n · machine-epsilon(src)."""
    eps = n * torch.finfo(src).eps if eps is None else float(eps)
    return eps, eps * float(values.abs().max())


def _entropy(p: Tensor) -> float:
    """Shannon entropy −Σ p log p (natural log) of a probability vector with p > 0; nan if empty."""
    return float(-(p * torch.log(p)).sum()) if p.numel() else float("nan")


def _outliers(lam: Tensor, tau: float, mads: float) -> tuple[list, float]:
    """Eigenvalues whose |λ| exceeds median(|λ|) + max(mads · MAD, τ), sorted by |λ| descending.

    MAD = median(| |λ| − median(|λ|) |) (unscaled; medians are midpoint medians, torch.quantile 0.5).
    The τ floor keeps exact ties (MAD = 0, e.g. a large null space) from flagging rounding noise.
    """
    a = lam.abs()
    med = torch.quantile(a, 0.5)
    mad = torch.quantile((a - med).abs(), 0.5)
    thr = float(med) + max(mads * float(mad), tau)
    out = lam[a > thr]
    return out[out.abs().argsort(descending=True)].tolist(), thr


def spectrum_stats(eigenvalues: ArrayLike, *, eps: Optional[float] = None, top_k: int = 5,
                   outlier_mads: float = 5.0) -> dict:
    """Every SCIENCE.md §5 statistic of a spectrum λ (n,), with τ = eps·max|λ|.

    Sets: N = {j : |λ_j| > τ} (numerically non-zero), N₋ = {j : λ_j < −τ}, N₊ = {j : λ_j > τ}.

    ============================  ===========================================================
    ``n``, ``eps``, ``tol``       n, eps (default n·machine-ε of the input dtype), τ
    ``lambda_max/lambda_min``     max_j λ_j, min_j λ_j
    ``trace``                     Σ_j λ_j
    ``frobenius``                 √(Σ_j λ_j²)  (= ‖A‖_F)
    ``negative_fraction``         |N₋| / |N|  — fraction of the *non-zero* eigenvalues that are
                                  negative (zeros excluded); nan if N = ∅
    ``negative_mass``             Σ_{N₋} |λ| / Σ_N |λ|;  nan if N = ∅
    ``abs_min_over_max``          |λ_min| / λ_max when λ_max > τ, else nan (taken literally: for a
                                  PSD spectrum it is λ_min/λ_max)
    ``condition_number``          λ_max / min_{N₊} λ — over the positive part; nan if N₊ = ∅
    ``spectral_entropy``          H = −Σ_N p_j log p_j,  p_j = |λ_j| / Σ_N |λ|  (nats); nan if N = ∅
    ``effective_rank``            exp(H) ∈ [1, |N|]
    ``stable_rank``               Σ_j λ_j² / max_j λ_j²  (= ‖A‖_F²/‖A‖₂² ∈ [1, rank]); nan if all 0
    ``numerical_rank``            |N|
    ``top_k``                     the min(top_k, n) largest λ, descending
    ``outliers``                  λ with |λ| > median|λ| + max(outlier_mads·MAD|λ|, τ), by |λ|
                                  descending (robust "above the bulk" rule, both signs);
                                  ``outlier_threshold`` is that cut on |λ|
    ============================  ===========================================================
    """
    lam, src = _as_vector(eigenvalues, "eigenvalues")
    n = lam.numel()
    eps, tau = _tolerance(lam, src, n, eps)
    a = lam.abs()
    nz, neg, pos = a > tau, lam < -tau, lam > tau
    lmax, lmin, trace, sq, amax = (float(x) for x in (lam.max(), lam.min(), lam.sum(), (lam * lam).sum(), a.max()))
    abs_sum = float(a[nz].sum())
    entropy = _entropy(a[nz] / abs_sum) if abs_sum > 0 else float("nan")
    outliers, thr = _outliers(lam, tau, outlier_mads)
    return {
        "n": n, "eps": eps, "tol": tau,
        "lambda_max": lmax, "lambda_min": lmin, "trace": trace, "frobenius": math.sqrt(sq),
        "negative_fraction": _div(float(neg.sum()), float(nz.sum())),
        "negative_mass": _div(float(a[neg].sum()), abs_sum),
        "abs_min_over_max": abs(lmin) / lmax if lmax > tau else float("nan"),
        "condition_number": lmax / float(lam[pos].min()) if bool(pos.any()) else float("nan"),
        "spectral_entropy": entropy, "effective_rank": math.exp(entropy),
        "stable_rank": _div(sq, amax * amax),
        "numerical_rank": int(nz.sum()),
        "top_k": lam.sort(descending=True).values[:top_k].tolist(),
        "outliers": outliers, "outlier_threshold": thr,
    }


def density_histogram(eigenvalues: ArrayLike, bins: Union[int, ArrayLike] = 50, *,
                      range: Optional[tuple[float, float]] = None) -> tuple[Tensor, Tensor]:
    """Histogram density of a dense spectrum: (edges (B+1,), density (B,)), Σ density·Δedges = 1.

    ``bins``: a count B (equal widths over ``range``, default [min λ, max λ], widened by ±½ if all λ
    are equal) or the B+1 increasing edges.  Bins are [e_i, e_{i+1}) except the last, [e_{B−1}, e_B]
    (numpy's convention); eigenvalues outside the edges are left out and the density is normalised
    over those inside (all zeros if none is inside).  density_i = count_i / (n_inside · (e_{i+1}−e_i)).
    """
    lam, _ = _as_vector(eigenvalues, "eigenvalues")
    edges = _edges(lam, bins, range)
    nb = edges.numel() - 1
    inside = (lam >= edges[0]) & (lam <= edges[-1])
    idx = (torch.bucketize(lam[inside], edges, right=True) - 1).clamp(max=nb - 1)
    counts = torch.bincount(idx, minlength=nb).to(torch.float64)
    total = counts.sum()
    dens = counts / (total * edges.diff()) if bool(total > 0) else counts
    return edges, dens


def _edges(lam: Tensor, bins: Union[int, ArrayLike], range: Optional[tuple[float, float]]) -> Tensor:
    if not isinstance(bins, int):
        edges = torch.as_tensor(bins, dtype=torch.float64, device=lam.device).reshape(-1)
        if edges.numel() < 2 or not bool((edges.diff() > 0).all()):
            raise ValueError("bin edges must be at least 2 strictly increasing values")
        return edges
    if bins < 1:
        raise ValueError("bins must be >= 1")
    lo, hi = (float(lam.min()), float(lam.max())) if range is None else (float(range[0]), float(range[1]))
    if hi < lo:
        raise ValueError(f"range must be (low, high) with low <= high, got {range}")
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return torch.linspace(lo, hi, bins + 1, dtype=torch.float64, device=lam.device)


def stats_from_density(nodes: ArrayLike, weights: ArrayLike, n: int, *, eps: Optional[float] = None) -> dict:
    """The §5 statistics estimable from a discrete spectral density (e.g. SLQ), for an n × n matrix.

    nodes θ (N,), weights w (N,) ≥ 0 (normalised here to Σ w = 1), so μ̂ = Σ_i w_i δ(x − θ_i) ≈ μ =
    (1/n) Σ_j δ(x − λ_j) and Σ_j f(λ_j) ≈ n Σ_i w_i f(θ_i).  τ = eps · max|θ| (eps default n·machine-ε
    of the nodes' dtype).  With N = {i : |θ_i| > τ}, N₋ = {i : θ_i < −τ}, S = n Σ_N w|θ|:

    - ``trace`` = n Σ w θ (unbiased for SLQ: the Hutchinson estimate);
    - ``frobenius`` = √(n Σ w θ²) (the square is unbiased, the root biased low);
    - ``negative_fraction`` = Σ_{N₋} w / Σ_N w;  ``negative_mass`` = Σ_{N₋} w|θ| / Σ_N w|θ|;
    - ``numerical_rank`` = n Σ_N w (a real number; "zero" means |θ| ≤ τ at the density's resolution);
    - ``spectral_entropy`` = −Σ_N n w (|θ|/S) log(|θ|/S), ``effective_rank`` = exp of it;
    - ``stable_rank`` = n Σ w θ² / max θ²;
    - ``lambda_max``, ``lambda_min`` = the extreme nodes: inner estimates (λ_min ≤ θ ≤ λ_max), and
      ``abs_min_over_max`` from them (nan unless θ_max > τ).

    The ratios are consistent but not unbiased.  Not estimable (listed under ``not_estimable``):
    condition number, top-k and outliers — they need individual eigenvalues; use Lanczos extremes.
    Applied to nodes = λ, weights = 1/n it reproduces :func:`spectrum_stats` on these keys.
    """
    th, src = _as_vector(nodes, "nodes")
    w, _ = _as_vector(weights, "weights")
    if w.shape != th.shape or bool((w < 0).any()) or not bool(w.sum() > 0):
        raise ValueError("weights must be non-negative, not all zero, and match nodes in shape")
    w = w / w.sum()
    eps, tau = _tolerance(th, src, n, eps)
    a = th.abs()
    nz, neg = a > tau, th < -tau
    lmax, lmin, wsq = float(th.max()), float(th.min()), float((w * th * th).sum())
    s = n * float((w * a)[nz].sum())
    p = a[nz] / s if s > 0 else a[:0]
    entropy = -float((n * w[nz] * p * torch.log(p)).sum()) if s > 0 else float("nan")
    return {
        "n": n, "eps": eps, "tol": tau,
        "lambda_max": lmax, "lambda_min": lmin,
        "trace": n * float((w * th).sum()), "frobenius": math.sqrt(n * wsq),
        "negative_fraction": _div(float(w[neg].sum()), float(w[nz].sum())),
        "negative_mass": _div(float((w * a)[neg].sum()), float((w * a)[nz].sum())),
        "abs_min_over_max": abs(lmin) / lmax if lmax > tau else float("nan"),
        "spectral_entropy": entropy, "effective_rank": math.exp(entropy),
        "stable_rank": _div(n * wsq, float(a.max()) ** 2),
        "numerical_rank": n * float(w[nz].sum()),
        "not_estimable": list(NOT_ESTIMABLE_FROM_DENSITY),
    }
