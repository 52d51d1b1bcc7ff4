"""Estimated whole-model views: a coupling map and Φ from shared Hutchinson probes.

For k nodes (or parameter groups) with atoms u_1 … u_k, one round draws, for every
node w, a batch of m Rademacher probes Z_w (m, d_w) and takes **one** batched product
with them.  A direction in w's space gives the whole column block at once,

    H_{·,w} z = (H_{1,w} z, …, H_{k,w} z)        (and its GN part J_·ᵀ H_z J_w z),

so a round costs k batched products (k probe streams), not k² pair streams.  From
the same products, for every pair (i, j):

    ‖H_ij‖_F²    = E ‖H_ij z_j‖²           (and = E ‖H_ji z_i‖²: the two are averaged)
    ‖H^GN_ij‖_F² = E ‖H^GN_ij z_j‖²,  ‖H^T_ij‖_F² = E ‖(H_ij − H^GN_ij) z_j‖²
    ‖H‖_F²       = E Σ_w ‖H_{·,w} z_w‖²,   Σ_v ‖H_vv‖_F² = E Σ_v ‖H_vv z_v‖²      (Φ)

Every ratio (R = √F, C = R_ij/√(R_ii R_jj), GN-Gap = √T/√G, Φ = 1 − A/‖H‖_F²) is a
smooth function of means of *joint* per-round samples; its standard error is the
delta method with the sample covariance across rounds (probes of one round are
independent, products of one round are correlated and that correlation is used).
Square roots of unbiased estimates are biased low by ≈ se²/(8R³) (Jensen): reported,
not corrected.

:func:`choose_method` picks "exact" (dense column sweeps, Σ_w d_w products) or
"estimate" from the sizes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from . import metrics
from .errors import HessExploreError, JobCancelled
from .operators import CurvatureOperator
from .probes import rademacher
from .results import CouplingMap

METHODS = ("auto", "exact", "estimate")
EXACT_MAP_FACTOR = 4   # auto: exact while Σ_w d_w ≤ 4 · max_exact_dim and every d_w ≤ max_exact_dim


def choose_method(method: str, dims: Sequence[int], max_exact_dim: int) -> str:
    """Resolve ``method`` ("auto" | "exact" | "estimate") for nodes of sizes ``dims``.

    "auto" is "exact" when every node has at most ``max_exact_dim`` columns and all of
    them together at most ``EXACT_MAP_FACTOR · max_exact_dim`` (an exact map costs
    Σ_w d_w Hessian-vector products), else "estimate" (k probe streams, O(P) each).
    """
    if method not in METHODS:
        raise HessExploreError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    dims = list(dims)
    small = max(dims, default=0) <= max_exact_dim and sum(dims) <= EXACT_MAP_FACTOR * max_exact_dim
    return "exact" if small else "estimate"


class PhiResult(float):
    """Φ as a float, with ``.value``, ``.stderr`` (0 for exact), ``.method`` and ``.probes``.

    A float subclass so exact Φ keeps comparing and formatting as a number.
    """

    method: str
    stderr: float
    probes: int | None

    def __new__(cls, value: float, method: str = "exact", stderr: float = 0.0, probes: int | None = None):
        obj = super().__new__(cls, value)
        obj.method, obj.stderr, obj.probes = method, float(stderr), probes
        return obj

    @property
    def value(self) -> float:
        return float(self)

    def __repr__(self) -> str:
        if self.method == "exact":
            return f"PhiResult({float(self)!r}, method='exact')"
        return f"PhiResult({float(self):.6g} ± {self.stderr:.2g}, method='estimate', probes={self.probes})"


@dataclass
class _Samples:
    """Per-probe samples (m, k, k) of squared norms of column products, symmetrised."""

    full: torch.Tensor
    gn: torch.Tensor | None
    tensor: torch.Tensor | None


def _rademacher(m: int, d: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return rademacher(m, d, generator=gen, dtype=like.dtype, device=like.device)


def _round(op: CurvatureOperator, groups: list[list[str]], m: int, gen: torch.Generator, want_gn: bool,
           should_stop: Callable[[], bool] | None) -> _Samples:
    """One probe round: k batched products; raw samples (m, i, j) = ‖H_ij z_j‖² etc."""
    k = len(groups)
    out = list(dict.fromkeys(a for g in groups for a in g))
    ref = next(iter(op.problem.base.values()))
    F = torch.zeros(m, k, k, dtype=torch.float64)
    G = torch.zeros(m, k, k, dtype=torch.float64) if want_gn else None
    T = torch.zeros(m, k, k, dtype=torch.float64) if want_gn else None
    for j, wa in enumerate(groups):
        if should_stop is not None and should_stop():
            raise JobCancelled()
        Z = _rademacher(m, op.dim(wa), gen, ref)
        P = op.products(wa, Z, out, full=True, gn=want_gn)
        for i, va in enumerate(groups):
            h = P.rows("full", va)
            F[:, i, j] = (h * h).sum(-1).to(torch.float64).cpu()
            if want_gn:
                g = P.rows("gn", va)
                G[:, i, j] = (g * g).sum(-1).to(torch.float64).cpu()
                t = h - g
                T[:, i, j] = (t * t).sum(-1).to(torch.float64).cpu()
    return _Samples(F, G, T)


def _sym(X: torch.Tensor) -> torch.Tensor:
    """(X + Xᵀ)/2 over the last two axes: two unbiased samples of ‖H_ij‖² = ‖H_ji‖² averaged."""
    return (X + X.transpose(-1, -2)) / 2


def _mean_se(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error over rounds of symmetric samples, made bitwise symmetric."""
    m = X.shape[0]
    mu = X.mean(0)
    se = X.std(0, unbiased=True) / math.sqrt(m) if m > 1 else torch.full_like(mu, float("nan"))
    return (mu + mu.T) / 2, (se + se.T) / 2


def _rel_dev(X: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Relative deviations (X − μ)/μ (0 where μ = 0): the linearised log of a mean."""
    safe = torch.where(mu > 0, mu, torch.ones_like(mu))
    return torch.where(mu > 0, (X - mu) / safe, torch.zeros_like(X))


def _log_se(L: torch.Tensor) -> torch.Tensor:
    """Standard error of a mean of linearised log-samples L (m, …): sqrt(var/m)."""
    m = L.shape[0]
    if m < 2:
        return torch.full(L.shape[1:], float("nan"), dtype=L.dtype)
    se = torch.sqrt(L.var(0, unbiased=True) / m)
    return (se + se.transpose(-1, -2)) / 2 if se.dim() == 2 else se


def map_from_samples(names: list[str], space: str, S: _Samples, distance: torch.Tensor, probes: int,
                     tol: float = metrics.REL_TOL) -> CouplingMap:
    """An estimated :class:`CouplingMap` (values and standard errors) from raw round samples."""
    k = len(names)
    F = _sym(S.full)
    muF, seF = _mean_se(F)
    R = muF.clamp_min(0).sqrt()
    safeR = torch.where(R > 0, R, torch.ones_like(R))
    seR = torch.where(R > 0, seF / (2 * safeR), seF.clamp_min(0).sqrt())
    YF = _rel_dev(F, muF)
    Yd = YF.diagonal(dim1=1, dim2=2)                                        # (m, k)
    C = metrics.coupling_matrix(R, tol)
    seC = C.abs() * _log_se(0.5 * YF - 0.25 * Yd[:, :, None] - 0.25 * Yd[:, None, :])
    seC.diagonal().zero_()
    nan = torch.full((k, k), float("nan"), dtype=torch.float64)
    if S.gn is not None:
        G, T = _sym(S.gn), _sym(S.tensor)
        muG, seG = _mean_se(G)
        muT, seT = _mean_se(T)
        ng, nt = muG.clamp_min(0).sqrt(), muT.clamp_min(0).sqrt()
        gap = metrics.gap_matrix(nt, ng, tol)
        seGap = gap.abs() * _log_se(0.5 * _rel_dev(T, muT) - 0.5 * _rel_dev(G, muG))
        se_ng = torch.where(ng > 0, seG / (2 * torch.where(ng > 0, ng, torch.ones_like(ng))), seG.sqrt())
        se_nt = torch.where(nt > 0, seT / (2 * torch.where(nt > 0, nt, torch.ones_like(nt))), seT.sqrt())
    else:
        ng = nt = gap = seGap = se_ng = se_nt = nan
    stderr = {"R": seR, "C": seC, "gap": seGap, "norm_gn": se_ng, "norm_tensor": se_nt, "R2": seF}
    return CouplingMap(list(names), space, R, ng.clone(), nt.clone(), nan.clone(), distance,
                       torch.ones(k, k, dtype=torch.bool), method="estimate", probes=probes, stderr=stderr,
                       tol=tol, note=f"Hutchinson estimate, {probes} Rademacher probes per node shared by all "
                                     "pairs; D not estimated (NaN)")


def phi_from_samples(S: _Samples, probes: int) -> PhiResult:
    """Φ = 1 − A/N with A = Σ_v ‖H_vv‖_F², N = ‖H‖_F², from joint round samples; delta-method error."""
    A = S.full.diagonal(dim1=1, dim2=2).sum(-1)      # (m,) samples of Σ_v ‖H_vv z_v‖²
    N = S.full.sum((1, 2))                           # (m,) samples of Σ_w ‖H_{·,w} z_w‖²
    a, n = float(A.mean()), float(N.mean())
    if n <= 0:
        return PhiResult(float("nan"), "estimate", float("nan"), probes)
    ratio = a / n
    if A.shape[0] < 2 or a <= 0:
        se = float("nan") if A.shape[0] < 2 else 0.0
    else:
        L = (A - a) / a - (N - n) / n
        se = ratio * math.sqrt(float(L.var(unbiased=True)) / A.shape[0])
    return PhiResult(1.0 - ratio, "estimate", se, probes)


def iter_estimate(op: CurvatureOperator, groups: Sequence[Sequence[str]], *, probes: int = 64,
                  batch_size: int = 8, seed: int = 0, gn: bool = True,
                  should_stop: Callable[[], bool] | None = None, first: int | None = None
                  ) -> Iterator[tuple[_Samples, int]]:
    """Yield (accumulated samples, probes so far) after every round of ``batch_size`` probes per node.

    ``groups`` are the atom lists of the k nodes; all must be atoms of ``op``.  With ``first``,
    the first round takes only that many probes per node (a first result soon: products of
    fewer than 3 directions run as plain backwards and wait for no measurement of the batched
    way).  Reproducible from ``seed`` (and ``first``).  ``should_stop()`` is polled before every
    batched product.
    """
    if probes < 1:
        raise HessExploreError("probes must be at least 1")
    groups = [list(g) for g in groups]
    ref = next(iter(op.problem.base.values()))
    gen = torch.Generator(device=ref.device).manual_seed(int(seed))
    acc: list[_Samples] = []
    done = 0
    while done < probes:
        m = min(batch_size if done or not first else max(1, int(first)), probes - done)
        acc.append(_round(op, groups, m, gen, gn, should_stop))
        done += m
        cat = _Samples(torch.cat([s.full for s in acc]),
                       torch.cat([s.gn for s in acc]) if gn else None,
                       torch.cat([s.tensor for s in acc]) if gn else None)
        yield cat, done


#: probes per node in an estimated map's first round: a first map (with error bars) after 2k plain
#: Hessian-vector products, before the batched-or-looped measurement of the later rounds
FIRST_ROUND = 2


def iter_estimated_map(op: CurvatureOperator, names: Sequence[str], groups: Sequence[Sequence[str]], *,
                       space: str, distance: torch.Tensor, probes: int = 64, batch_size: int = 8, seed: int = 0,
                       tol: float = metrics.REL_TOL, should_stop: Callable[[], bool] | None = None
                       ) -> Iterator[CouplingMap]:
    """Yield an estimated :class:`CouplingMap` (with ``stderr``) after every probe round: a first
    round of :data:`FIRST_ROUND` probes per node, then rounds of ``batch_size``."""
    t0 = time.perf_counter()
    for S, m in iter_estimate(op, groups, probes=probes, batch_size=batch_size, seed=seed, gn=True,
                              should_stop=should_stop, first=FIRST_ROUND):
        cm = map_from_samples(list(names), space, S, distance, m, tol)
        cm.note += f"; {time.perf_counter() - t0:.3g} s"
        yield cm
