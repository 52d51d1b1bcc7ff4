"""Streaming stochastic estimates of block metrics (SCIENCE.md §4).

For a block H = H_{v,w} (d_v, d_w) every probe round draws Rademacher
vectors z_w ∈ {±1}^{d_w} and z_v ∈ {±1}^{d_v} and computes, in one batched
product each, H_{·,w} z_w and H_{·,v} z_v for both groups at once:

    ‖H_vw‖_F² = E‖H_vw z_w‖² = E‖H_wv z_v‖²        (resonance R, two samples per probe)
    ‖H_vv‖_F² = E‖H_vv z_v‖²,  ‖H_ww‖_F² = E‖H_ww z_w‖²   (coupling C)
    ‖H^GN‖_F², ‖H^T‖_F² from the GN products of the same probes  (GN-Gap)
    tr H = E zᵀ H z                                   (diagonal blocks)

Estimates are running means with standard errors (sample covariance / m);
functions of means (R = √mean, C, GN-Gap, D) get delta-method errors.  The
square root of an unbiased estimate of ‖H‖_F² is biased low (Jensen) by
≈ se²/(8 R³) of the squared estimate — second order in the error bar and
reported, not corrected: use ``snap.squared`` for the unbiased ‖·‖_F².

‖H‖₂ comes from a Krylov method that advances one step per round with the
probes: Golub–Kahan bidiagonalisation (H x, then Hᵀ u — the adjoint is a
product with a direction in v's *perturbation* space, never a backward
through an intermediate tensor) for v ≠ w, symmetric Lanczos for v = w,
both with full re-orthogonalisation.  The Ritz value σ̂ never exceeds ‖H‖₂.
Its ``stderr`` is an error bar, not a standard error: the residual bound
β_k |p_k| (an exact singular value lies within it) once that bound is below
1e-4 σ̂; before that, max(bound, F̂ + 2 se(F̂) − σ̂), since ‖H‖₂ ≤ ‖H‖_F.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from .errors import JobCancelled
from . import metrics
from .operators import CurvatureOperator
from .probes import rademacher

NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    """A value with its standard error (or, for Krylov results, a residual bound)."""

    value: float
    stderr: float

    @property
    def relative(self) -> float:
        """stderr / |value| (NaN for a zero value)."""
        return self.stderr / abs(self.value) if self.value else NAN

    def __repr__(self) -> str:
        return f"{self.value:.6g} ± {self.stderr:.2g}"


METRICS = ("resonance", "coupling", "stable_rank", "gn_gap", "norm_full", "norm_gn",
           "norm_tensor", "spectral_norm", "trace", "trace_gn")


@dataclass
class EstimateSnapshot:
    """The state of a streaming estimate after ``probes`` probes.

    ``squared`` holds the unbiased estimates of ‖H‖_F², ‖H^GN‖_F², ‖H^T‖_F²,
    ‖H_vv‖_F², ‖H_ww‖_F².  ``trace``/``trace_gn`` are None off the diagonal.
    """

    v: str
    w: str
    space: str
    probes: int
    elapsed: float
    done: bool
    resonance: Estimate
    coupling: Estimate
    stable_rank: Estimate
    gn_gap: Estimate
    norm_full: Estimate
    norm_gn: Estimate
    norm_tensor: Estimate
    spectral_norm: Estimate
    trace: Estimate | None = None
    trace_gn: Estimate | None = None
    krylov_steps: int = 0
    squared: dict[str, Estimate] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Estimate]:
        return {k: getattr(self, k) for k in METRICS if getattr(self, k) is not None}

    def to_json(self) -> dict:
        def num(x):
            return None if x is None or not math.isfinite(x) else x
        return {"v": self.v, "w": self.w, "space": self.space, "probes": self.probes,
                "elapsed": self.elapsed, "done": self.done,
                "metrics": {k: {"value": num(e.value), "stderr": num(e.stderr)}
                            for k, e in self.metrics.items()}}


# ---- statistics of probe samples --------------------------------------------------------------
def mean_estimate(x: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of iid samples x (m,)."""
    m = x.shape[0]
    mean = float(x.mean())
    se = float(x.std(unbiased=True) / math.sqrt(m)) if m > 1 else NAN
    return mean, se


def power_estimate(S: torch.Tensor, exponents: Sequence[float]) -> Estimate:
    """Estimate of Π_k μ_k^{e_k} from samples S (m, K) of K means, delta-method error.

    Var(log f) ≈ gᵀ Σ g / m with g_k = e_k / μ_k and Σ the sample covariance.
    """
    m = S.shape[0]
    mu = S.mean(0)
    e = torch.tensor(exponents, dtype=S.dtype, device=S.device)
    if bool((mu <= 0).any()):
        value = float(torch.prod(mu.clamp_min(0) ** e))
        return Estimate(value, NAN if m < 2 else 0.0 if value == 0 else NAN)
    value = float(torch.exp((e * mu.log()).sum()))
    if m < 2:
        return Estimate(value, NAN)
    cov = torch.atleast_2d(torch.cov(S.T))
    g = e / mu
    var_log = float(g @ cov @ g) / m
    return Estimate(value, value * math.sqrt(max(var_log, 0.0)))


def sqrt_estimate(mean: float, se: float) -> Estimate:
    """√μ with delta-method error se/(2√μ)."""
    if mean <= 0:
        return Estimate(0.0, math.sqrt(se) if math.isfinite(se) and se > 0 else se)
    r = math.sqrt(mean)
    return Estimate(r, se / (2 * r))


def gap_estimate(t2: torch.Tensor, g2: torch.Tensor, tol: float = metrics.REL_TOL) -> Estimate:
    """GN-Gap = √mean(t2) / √mean(g2) with a delta-method error from the joint samples.

    Scale-free: NaN (as :func:`metrics.gap_reason`) when both means are zero or the GN
    norm is ≤ ``tol`` × the tensor norm, never a ratio against a fixed constant.
    """
    mt, mg = float(t2.mean()), float(g2.mean())
    value = metrics.gn_gap_from_norms(math.sqrt(max(mt, 0.0)), math.sqrt(max(mg, 0.0)), tol)
    if not math.isfinite(value):
        return Estimate(NAN, NAN)
    if mt <= 0 or mg <= 0 or t2.shape[0] < 2:
        return Estimate(value, NAN if t2.shape[0] < 2 else 0.0 if mt <= 0 else NAN)
    rel = power_estimate(torch.stack([t2, g2], 1), (0.5, -0.5)).relative
    return Estimate(value, value * rel)


# ---- Krylov methods for ‖H‖₂, one step per round ----------------------------------------------
def _orthonormalize(x: torch.Tensor, basis: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Remove the span of ``basis`` from x twice (CGS2); return (x̂, ‖x‖ after projection)."""
    if basis:
        Q = torch.stack(basis)
        for _ in range(2):
            x = x - Q.T @ (Q @ x)
    n = float(torch.linalg.vector_norm(x))
    return (x / n if n > 0 else x), n


class GolubKahan:
    """Bidiagonalisation H V_k = U_k B_k for the largest singular value of a (d_v, d_w) operator."""

    def __init__(self, x0: torch.Tensor, d_v: int):
        self.d_max = min(x0.numel(), d_v)
        self.V = [x0 / torch.linalg.vector_norm(x0)]
        self.U: list[torch.Tensor] = []
        self.alpha: list[float] = []
        self.beta: list[float] = []
        self.done = False

    def next_right(self) -> torch.Tensor | None:
        """Direction x (d_w) whose product H x is needed next, or None when finished."""
        return None if self.done else self.V[-1]

    def take_Hx(self, Hx: torch.Tensor) -> torch.Tensor | None:
        """Feed H v_k; return u_k (d_v) whose adjoint product Hᵀ u_k is needed next."""
        u = Hx - (self.beta[-1] * self.U[-1] if self.U else 0)
        u, a = _orthonormalize(u, self.U)
        self.alpha.append(a)
        self.U.append(u)
        if a <= 1e-14 * (max(self.alpha) if self.alpha else 1) or len(self.alpha) >= self.d_max:
            self.done = True
            self.beta.append(0.0)
            return None
        return u

    def take_HTu(self, HTu: torch.Tensor) -> None:
        v = HTu - self.alpha[-1] * self.V[-1]
        v, b = _orthonormalize(v, self.V)
        self.beta.append(b)
        if b <= 1e-14 * max(self.alpha):
            self.done = True
        else:
            self.V.append(v)

    def estimate(self) -> Estimate:
        k = len(self.alpha)
        if k == 0:
            return Estimate(NAN, NAN)
        B = torch.diag(torch.tensor(self.alpha, dtype=torch.float64))
        if k > 1:
            B += torch.diag(torch.tensor(self.beta[:k - 1], dtype=torch.float64), 1)
        P, S, _ = torch.linalg.svd(B)
        beta_k = self.beta[k - 1] if len(self.beta) >= k else 0.0
        return Estimate(float(S[0]), abs(beta_k * float(P[k - 1, 0])))


class SymmetricLanczos:
    """Lanczos tridiagonalisation of a symmetric (d, d) operator for max |λ| = ‖H‖₂."""

    def __init__(self, x0: torch.Tensor):
        self.d = x0.numel()
        self.Q = [x0 / torch.linalg.vector_norm(x0)]
        self.alpha: list[float] = []
        self.beta: list[float] = []
        self.done = False

    def next_right(self) -> torch.Tensor | None:
        return None if self.done else self.Q[-1]

    def take_Hx(self, Hq: torch.Tensor) -> None:
        q = self.Q[-1]
        a = float(q @ Hq)
        self.alpha.append(a)
        r = Hq - a * q - (self.beta[-1] * self.Q[-2] if self.beta else 0)
        r, b = _orthonormalize(r, self.Q)
        self.beta.append(b)
        scale = max(abs(x) for x in self.alpha) or 1.0
        if b <= 1e-14 * scale or len(self.alpha) >= self.d:
            self.done = True
        else:
            self.Q.append(r)

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ritz values (ascending) and residual bounds β_k |s_{k,i}|."""
        k = len(self.alpha)
        T = torch.diag(torch.tensor(self.alpha, dtype=torch.float64))
        if k > 1:
            off = torch.tensor(self.beta[:k - 1], dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        theta, S = torch.linalg.eigh(T)
        bk = 0.0 if self.done else self.beta[k - 1]
        return theta, (bk * S[k - 1, :]).abs()

    def estimate(self) -> Estimate:
        if not self.alpha:
            return Estimate(NAN, NAN)
        theta, bounds = self.ritz()
        i = int(theta.abs().argmax())
        return Estimate(float(theta[i].abs()), float(bounds[i]))


# ---- the streaming loop -------------------------------------------------------------------
def _rademacher(m: int, d: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return rademacher(m, d, generator=gen, dtype=like.dtype, device=like.device)


def _sqnorm(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(-1)


def stream_block(op: CurvatureOperator, v_atoms: Sequence[str], w_atoms: Sequence[str], *,
                 v: str, w: str, space: str, probes: int = 200, batch_size: int = 8, seed: int = 0,
                 rel_ci: float | None = None, min_probes: int = 8, krylov: bool = True,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[EstimateSnapshot]:
    """Yield an :class:`EstimateSnapshot` after every round of ``batch_size`` probes.

    Stops after ``probes`` probes, or earlier once the 95 % confidence
    interval of R is within ``rel_ci`` of its value (1.96·se/R ≤ rel_ci,
    after at least ``min_probes``).  Reproducible from ``seed``.
    """
    v_atoms, w_atoms = list(v_atoms), list(w_atoms)
    diagonal = v_atoms == w_atoms
    out = list(dict.fromkeys(v_atoms + w_atoms))
    d_v, d_w = op.dim(v_atoms), op.dim(w_atoms)
    ref = next(iter(op.problem.base.values()))
    gen = torch.Generator(device=ref.device).manual_seed(int(seed))
    x0 = torch.randn(d_w, generator=gen, device=ref.device, dtype=ref.dtype)
    kry = (SymmetricLanczos(x0) if diagonal else GolubKahan(x0, d_v)) if krylov else None
    samples: list[torch.Tensor] = []
    start = time.perf_counter()
    m = 0
    while m < probes:
        if should_stop is not None and should_stop():
            raise JobCancelled()
        k = min(batch_size, probes - m)
        Zw = _rademacher(k, d_w, gen, ref)
        x = kry.next_right() if kry is not None else None
        Tw = torch.cat([Zw, x[None]]) if x is not None else Zw
        pw = op.products(w_atoms, Tw, out)
        Hw_v, Gw_v = pw.rows("full", v_atoms), pw.rows("gn", v_atoms)   # H_vw z_w
        if diagonal:
            if x is not None:
                kry.take_Hx(Hw_v[k])
            H, G = Hw_v[:k], Gw_v[:k]
            cols = [_sqnorm(H), _sqnorm(G), _sqnorm(H - G), (Zw * H).sum(-1), (Zw * G).sum(-1)]
        else:
            u = kry.take_Hx(Hw_v[k]) if x is not None else None
            Zv = _rademacher(k, d_v, gen, ref)
            Tv = torch.cat([Zv, u[None]]) if u is not None else Zv
            pv = op.products(v_atoms, Tv, out)
            Hv_w, Gv_w = pv.rows("full", w_atoms), pv.rows("gn", w_atoms)   # H_wv z_v
            if u is not None:
                kry.take_HTu(Hv_w[k])
            a, ga = Hw_v[:k], Gw_v[:k]
            b, gb = Hv_w[:k], Gv_w[:k]
            cols = [(_sqnorm(a) + _sqnorm(b)) / 2, (_sqnorm(ga) + _sqnorm(gb)) / 2,
                    (_sqnorm(a - ga) + _sqnorm(b - gb)) / 2,
                    _sqnorm(pv.rows("full", v_atoms)[:k]), _sqnorm(pw.rows("full", w_atoms)[:k])]
        samples.append(torch.stack(cols, 1).to(torch.float64))
        m += k
        S = torch.cat(samples).cpu()   # one host transfer per round, for the snapshot
        snap = _snapshot(S, kry, diagonal, v, w, space, m, time.perf_counter() - start)
        converged = (rel_ci is not None and m >= min_probes and math.isfinite(snap.resonance.stderr)
                     and 1.96 * snap.resonance.stderr <= rel_ci * snap.resonance.value)
        snap.done = converged or m >= probes
        yield snap
        if converged:
            return


def _snapshot(S: torch.Tensor, kry, diagonal: bool, v: str, w: str, space: str, m: int,
              elapsed: float) -> EstimateSnapshot:
    g2, t2 = S[:, 1], S[:, 2]
    sq = {name: Estimate(*mean_estimate(S[:, i])) for i, name in enumerate(["full", "gn", "tensor"])}
    R = sqrt_estimate(sq["full"].value, sq["full"].stderr)
    norm_gn = sqrt_estimate(sq["gn"].value, sq["gn"].stderr)
    norm_t = sqrt_estimate(sq["tensor"].value, sq["tensor"].stderr)
    gap = gap_estimate(t2, g2)
    sn = kry.estimate() if kry is not None else Estimate(NAN, NAN)
    if math.isfinite(sn.value) and not sn.stderr <= 1e-4 * sn.value:   # top Ritz value not settled yet
        room = R.value + 2 * (R.stderr if math.isfinite(R.stderr) else R.value) - sn.value
        sn = Estimate(sn.value, max(sn.stderr, room))
    if diagonal:
        C = Estimate(1.0, 0.0) if R.value > 0 else Estimate(NAN, NAN)
        trace = Estimate(*mean_estimate(S[:, 3]))
        trace_gn = Estimate(*mean_estimate(S[:, 4]))
    else:
        sq["vv"] = Estimate(*mean_estimate(S[:, 3]))
        sq["ww"] = Estimate(*mean_estimate(S[:, 4]))
        C = power_estimate(S[:, [0, 3, 4]], (0.5, -0.25, -0.25))
        r_vv, r_ww = (math.sqrt(max(sq[k].value, 0.0)) for k in ("vv", "ww"))
        if metrics.coupling_reason(R.value, r_vv, r_ww) is not None:   # relative, scale-free
            C = Estimate(NAN, NAN)
        trace = trace_gn = None
    if sn.value > 0 and R.value > 0:
        D = sq["full"].value / sn.value ** 2
        rel = math.hypot(sq["full"].relative, 2 * sn.stderr / sn.value)
        Dest = Estimate(D, D * rel)
    else:
        Dest = Estimate(NAN, NAN)
    return EstimateSnapshot(v, w, space, m, elapsed, False, R, C, Dest, gap, R, norm_gn, norm_t, sn,
                            trace, trace_gn, krylov_steps=len(kry.alpha) if kry is not None else 0,
                            squared=sq)
