"""Spectra of local Hessians (SCIENCE.md §5): the result object and the computation on a matvec.

The local Hessian of a parameter group (the diagonal block H_{θg,θg}: the Hessian of the loss as a
function of that group's parameters with the rest frozen), or its Gauss–Newton part, is a symmetric
A ∈ R^{n×n} known here only through a *batched* matvec ``V (m, n) -> V A (m, n)`` (rows; see
:mod:`hessexplore.lanczos`).  :class:`~hessexplore.session.Session` builds that matvec from its
recorded double-backward operator; nothing here knows about models.

Methods (``method=``):

* ``"exact"``  — the dense A from n unit-vector products (in chunks), symmetrised, ``eigvalsh``:
  every eigenvalue and every statistic of :func:`~hessexplore.spectral_stats.spectrum_stats`.
* ``"lanczos"`` — the k largest and k smallest eigenvalues by Lanczos (full re-orthogonalisation,
  restarts after breakdowns) with residual error bars; only the statistics that follow from the
  extremes (λ_max, λ_min, |λ_min|/λ_max, top-k, bottom-k).  When Lanczos spans the whole space (small
  n) its Ritz values are all eigenvalues and everything is filled in.
* ``"slq"`` — stochastic Lanczos quadrature: a spectral density broadened by a Gaussian of standard
  deviation σ (the stated resolution), and the statistics a density determines
  (:func:`~hessexplore.spectral_stats.stats_from_density`); the trace carries a standard error.
* ``"lanczos+slq"`` — both: extremes from Lanczos, the rest from the density.
* ``"auto"`` — ``exact`` for n ≤ ``dense_max`` (default 3000), else ``lanczos+slq``; the result's
  ``method`` and ``note`` say which was chosen and why.

:func:`iter_spectrum` streams: Lanczos yields after every tracked step (extremes with shrinking
error bars), SLQ after every batch of probes (the density refines), exact once.  ``should_stop`` is
polled before every matvec; when it returns True :class:`~hessexplore.errors.JobCancelled` is raised.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor

from .errors import BlockTooLargeError, HessExploreError, JobCancelled
from . import checks
from .lanczos import CRITERIA, WHICH, SLQResult, gaussian_density, lanczos_iter, slq_iter
from .probes import rademacher
from .spectral_stats import density_histogram, spectrum_stats, stats_from_density

Matvec = Callable[[Tensor], Tensor]

__all__ = ["Spectrum", "iter_spectrum", "compute_spectrum", "normalized_stats", "METHODS", "PARTS", "WHICH", "CRITERIA",
           "TraceResult", "iter_trace", "hutchinson_trace",
           "STAT_KEYS", "DENSE_MAX"]

METHODS = ("auto", "exact", "lanczos", "slq", "lanczos+slq")
PARTS = ("full", "gn", "tensor")
DENSE_MAX = 3000   # auto: dense eigh up to this many parameters

#: every statistic a :class:`Spectrum` carries (NaN / empty when the method cannot estimate it)
STAT_KEYS = ("n", "eps", "tol", "lambda_max", "lambda_min", "trace", "frobenius", "negative_fraction",
             "negative_mass", "abs_min_over_max", "condition_number", "spectral_entropy", "effective_rank",
             "stable_rank", "numerical_rank", "top_k", "bottom_k", "outliers", "outlier_threshold")
_FROM_EXTREMES = ("lambda_max", "lambda_min", "abs_min_over_max", "top_k", "bottom_k")
_NAN = float("nan")


# --------------------------------------------------------------------------------------------------
# normalised statistics
# --------------------------------------------------------------------------------------------------

def _ratio(a, b) -> float:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return _NAN
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else _NAN


def normalized_stats(stats: dict) -> dict:
    """Scale-free versions of the raw statistics (SCIENCE.md §5).

    Under cross-entropy all curvature shrinks as the training loss → 0, so raw λ_max or trace falling
    says little about *shape*.  Returned: the raw quantities divided by the trace and by λ_max
    (NaN when the divisor is ≤ 0: a trace ≤ 0 — possible for indefinite hidden-layer blocks — makes
    a ratio meaningless), next to the statistics that are scale-free already.

    ``lambda_max/trace``, ``lambda_min/trace``, ``frobenius/trace``, ``lambda_min/lambda_max``
    (signed), ``trace/lambda_max``, ``frobenius/lambda_max``; and, copied: ``negative_fraction``,
    ``negative_mass``, ``abs_min_over_max``, ``condition_number``, ``spectral_entropy``,
    ``effective_rank``, ``stable_rank``, ``numerical_rank`` (÷ n as ``rank_fraction``).
    """
    g = stats.get
    out = {
        "lambda_max/trace": _ratio(g("lambda_max"), g("trace")),
        "lambda_min/trace": _ratio(g("lambda_min"), g("trace")),
        "frobenius/trace": _ratio(g("frobenius"), g("trace")),
        "lambda_min/lambda_max": _ratio(g("lambda_min"), g("lambda_max")),
        "trace/lambda_max": _ratio(g("trace"), g("lambda_max")),
        "frobenius/lambda_max": _ratio(g("frobenius"), g("lambda_max")),
    }
    for k in ("negative_fraction", "negative_mass", "abs_min_over_max", "condition_number",
              "spectral_entropy", "effective_rank", "stable_rank", "numerical_rank"):
        v = g(k)
        out[k] = float(v) if v is not None else _NAN
    out["rank_fraction"] = _ratio(g("numerical_rank"), g("n"))
    return out


# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------

def _json_num(x):
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (list, tuple)):
        return [_json_num(v) for v in x]
    if isinstance(x, Tensor):
        return _json_num(x.detach().cpu().tolist())
    return x


def _list(t: Optional[Tensor]):
    return None if t is None else t.detach().cpu().to(torch.float64).tolist()


@dataclass
class Spectrum:
    """Spectrum of a local Hessian (or its GN part) and its statistics, possibly a streaming snapshot.

    group, part ("full" | "gn" | "tensor"), n (parameters in the group);
    method: what ran ("exact" | "lanczos" | "slq" | "lanczos+slq"); requested: what was asked
    ("auto" …); note: one readable sentence on the choice, resolution and convergence;
    stats: every key of :data:`STAT_KEYS` (see :func:`~hessexplore.spectral_stats.spectrum_stats`;
    ``bottom_k`` = the k smallest, ascending) with ``tol`` = τ = ``eps``·max|λ| the tolerance below
    which |λ| counts as zero; keys the method cannot estimate are NaN (lists empty) and named in
    ``stats["not_estimated"]``;  source: where each statistic came from ("eigenvalues", "lanczos",
    "slq", "not estimated");  errors: error bars — ``lambda_max``/``lambda_min``: Lanczos residual
    bounds (an eigenvalue lies within them); ``trace``: SLQ standard error;
    eigenvalues (n,) ascending when known (exact);  top (≤k,) descending / bottom (≤k,) ascending
    Ritz values with top_bounds / bottom_bounds;  grid, density: the eigenvalue density on a grid
    (∫ = 1), broadened by a Gaussian of std ``sigma`` — the resolution: features narrower than σ are
    not resolved (exact spectra are broadened the same way; ``histogram()`` gives the raw one);
    slq: the :class:`~hessexplore.lanczos.SLQResult` (SLQ only);  lanczos_iterations, converged
    (the extremes asked for by ``which`` met tol·max|θ| by ``criterion``; None without Lanczos);  matvecs: products A·v spent so far;
    elapsed: seconds;  done: False for intermediate streaming snapshots;  stage: the stage that
    produced this snapshot.
    eigenvectors (n, n): orthonormal eigenvectors as columns, A[:, i] ↔ eigenvalues[i] (exact with
    ``vectors=True``);  top_vectors (n, ≤k) / bottom_vectors (n, ≤k): Ritz vectors as columns
    matching ``top`` / ``bottom`` (final Lanczos results; ‖A u − θ u‖ ≤ the residual bound).
    """

    group: str
    part: str
    n: int
    method: str
    requested: str
    note: str
    stats: dict
    source: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    eigenvalues: Optional[Tensor] = None
    top: Optional[Tensor] = None
    top_bounds: Optional[Tensor] = None
    bottom: Optional[Tensor] = None
    bottom_bounds: Optional[Tensor] = None
    grid: Optional[Tensor] = None
    density: Optional[Tensor] = None
    sigma: float = _NAN
    slq: Optional[SLQResult] = field(default=None, repr=False)
    lanczos_iterations: int = 0
    converged: Optional[bool] = None
    matvecs: int = 0
    elapsed: float = 0.0
    done: bool = True
    stage: str = ""
    eigenvectors: Optional[Tensor] = field(default=None, repr=False)
    top_vectors: Optional[Tensor] = field(default=None, repr=False)
    bottom_vectors: Optional[Tensor] = field(default=None, repr=False)

    # convenient views ------------------------------------------------------------------------
    @property
    def tol(self) -> float:
        """τ = eps · max|λ|: eigenvalues with |λ| ≤ τ count as zero."""
        return self.stats["tol"]

    @property
    def eps(self) -> float:
        return self.stats["eps"]

    @property
    def resolution(self) -> float:
        """σ of the Gaussian broadening of ``density`` (NaN when there is no density)."""
        return self.sigma

    @property
    def lambda_max(self) -> float:
        return self.stats["lambda_max"]

    @property
    def lambda_min(self) -> float:
        return self.stats["lambda_min"]

    @property
    def trace(self) -> float:
        return self.stats["trace"]

    @property
    def normalized(self) -> dict:
        """:func:`normalized_stats` of ``stats``."""
        return normalized_stats(self.stats)

    def histogram(self, bins=50, range=None) -> tuple[Tensor, Tensor]:
        """(edges, density) histogram of the exact eigenvalues (needs ``eigenvalues``)."""
        if self.eigenvalues is None:
            raise HessExploreError(f"no eigenvalues ({self.method}); use .grid / .density (SLQ)")
        return density_histogram(self.eigenvalues, bins, range=range)

    def to_json(self, eigenvalues: bool = True, density: bool = True) -> dict:
        """A JSON-ready dict (NaN/inf → None; tensors → lists)."""
        out = {
            "group": self.group, "part": self.part, "n": self.n, "method": self.method,
            "requested": self.requested, "note": self.note, "done": self.done, "stage": self.stage,
            "stats": {k: _json_num(v) for k, v in self.stats.items()},
            "normalized": {k: _json_num(v) for k, v in self.normalized.items()},
            "source": dict(self.source), "errors": {k: _json_num(v) for k, v in self.errors.items()},
            "top": _json_num(_list(self.top)), "top_bounds": _json_num(_list(self.top_bounds)),
            "bottom": _json_num(_list(self.bottom)), "bottom_bounds": _json_num(_list(self.bottom_bounds)),
            "sigma": _json_num(self.sigma), "lanczos_iterations": self.lanczos_iterations,
            "converged": self.converged, "matvecs": self.matvecs, "elapsed": self.elapsed,
        }
        if eigenvalues:
            out["eigenvalues"] = _json_num(_list(self.eigenvalues))
        if density:
            out["grid"] = _json_num(_list(self.grid))
            out["density"] = _json_num(_list(self.density))
        return out

    def __repr__(self) -> str:
        s = self.stats
        return (f"Spectrum({self.group!r}, part={self.part!r}, n={self.n}, method={self.method!r}, "
                f"λ_max={s['lambda_max']:.4g}, λ_min={s['lambda_min']:.4g}, "
                f"negative_mass={s['negative_mass']:.3g}, tol={s['tol']:.2g}, done={self.done})")


# --------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------

class _Counted:
    """A matvec that polls ``should_stop`` before every call and counts the vectors it multiplies."""

    def __init__(self, matvec: Matvec, should_stop: Optional[Callable[[], bool]]):
        self.matvec, self.should_stop, self.count = matvec, should_stop, 0

    def __call__(self, V: Tensor) -> Tensor:
        if self.should_stop is not None and self.should_stop():
            raise JobCancelled()
        self.count += V.shape[0]
        return self.matvec(V).detach()


def _dense(matvec: _Counted, n: int, chunk: int, dtype, device) -> Tensor:
    """A = rows of matvec(I) in chunks of unit vectors, symmetrised."""
    rows = []
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        E = torch.zeros(k, n, dtype=dtype, device=device)
        E[torch.arange(k, device=device), torch.arange(start, start + k, device=device)] = 1
        rows.append(matvec(E))
    A = torch.cat(rows)
    return (A + A.T) / 2


def _broadened(eig: Tensor, sigma: Optional[float], grid_size: int) -> tuple[Tensor, Tensor, float]:
    """Gaussian-broadened density of exact eigenvalues, same conventions as SLQ (σ: 1 % of the range)."""
    lo, hi, big = (float(v) for v in (eig.min(), eig.max(), eig.abs().max()))
    if sigma is None:
        width = hi - lo if hi > lo else (big if big > 0 else 1.0)
        sigma = 0.01 * width
    grid = torch.linspace(lo - 8 * sigma, hi + 8 * sigma, grid_size, dtype=eig.dtype, device=eig.device)
    w = torch.full_like(eig, 1.0 / eig.numel())
    return grid, gaussian_density(eig, w, grid, sigma), float(sigma)


def _empty_stats(n: int) -> dict:
    out = {k: _NAN for k in STAT_KEYS}
    out.update(n=n, top_k=[], bottom_k=[], outliers=[])
    return out


def _weighted_median(x: Tensor, w: Tensor) -> float:
    order = x.argsort()
    cw = w[order].cumsum(0)
    i = int(torch.searchsorted(cw, cw[-1] * 0.5))
    return float(x[order][min(i, x.numel() - 1)])


def _outliers_from_density(ritz: Tensor, nodes: Tensor, weights: Tensor, tau: float,
                           mads: float = 5.0) -> tuple[list, float]:
    """Outliers among the Lanczos extremes by the rule of ``spectrum_stats`` with the bulk from SLQ.

    median |λ| and MAD are weighted medians under the SLQ measure; a Ritz value is an outlier when
    |θ| > median + max(mads·MAD, τ).  Only the k top / k bottom Ritz values can be reported.
    """
    a = nodes.abs()
    med = _weighted_median(a, weights)
    mad = _weighted_median((a - med).abs(), weights)
    thr = med + max(mads * mad, tau)
    out = sorted({float(v) for v in ritz.tolist() if abs(v) > thr}, key=abs, reverse=True)
    return out, thr


def _stats_from_eigenvalues(eig: Tensor, eps: Optional[float], k: int) -> dict:
    st = spectrum_stats(eig, eps=eps, top_k=k)
    st["bottom_k"] = eig.sort().values[:k].tolist()
    return st


def _choose(method: str, n: int, dense_max: int) -> tuple[str, str]:
    if method not in METHODS:
        raise HessExploreError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method, f"method={method!r} as requested"
    if n <= dense_max:
        return "exact", (f"auto chose exact dense eigh: {n:,} parameters ≤ dense_max={dense_max:,}")
    return "lanczos+slq", (f"auto chose Lanczos extremes + SLQ density: {n:,} parameters > "
                           f"dense_max={dense_max:,}")


# --------------------------------------------------------------------------------------------------
# the computation
# --------------------------------------------------------------------------------------------------

def iter_spectrum(matvec: Matvec, n: int, *, method: str = "auto", group: str = "", part: str = "full",
                  dense_max: int = DENSE_MAX, max_exact: Optional[int] = None, chunk: Optional[int] = None,
                  k: int = 5, tol: float = 1e-6, max_iter: Optional[int] = None, check_every: int = 1,
                  num_probes: int = 16, num_iter: int = 64, probe_batch: Optional[int] = 4,
                  sigma: Optional[float] = None, grid_size: int = 512, seed: int = 0,
                  eps: Optional[float] = None, slq_reorth: bool = True, dtype: torch.dtype = torch.float64,
                  device="cpu", should_stop: Optional[Callable[[], bool]] = None,
                  vectors: bool = False, which: str = "both", criterion: str = "residual") -> Iterator[Spectrum]:
    """Yield refining :class:`Spectrum` snapshots of the symmetric A (n × n) behind ``matvec``.

    matvec: V (m, n) -> V A (m, n) (rows).  method: see the module docstring; ``dense_max`` is auto's
    threshold, ``max_exact`` a hard limit on n for exact (BlockTooLargeError above it), ``chunk``
    the number of unit vectors per product when building the dense matrix (default min(n, 256)).
    Lanczos: ``k`` top and bottom eigenvalues, stops when every residual bound of the extremes named
    by ``which`` ("both", "top": λ_max side only, "bottom") ≤ ``tol``·max|θ| (eigenvalue errors are
    ≈ bound²/gap, far smaller) or after ``max_iter`` steps (default min(n, max(200, 4k))); both
    ends are reported either way, each with its residual bound; yields every ``check_every`` steps.
    ``criterion="gap"`` stops instead when the eigenvalue *error estimate* min(r, r²/gap) (the
    Kahan–Parlett–Jiang bound with the gap to the nearest other Ritz value) ≤ ``tol``·max|θ|:
    "λ_max to relative tolerance tol" in a handful of steps fewer, but an estimate, not a bound.  SLQ: ``num_probes`` Rademacher probes
    × ``num_iter`` Lanczos steps, yielding after every ``probe_batch`` probes (None: all at once);
    the density is broadened by σ = ``sigma`` (default 1 % of the spectral range); ``slq_reorth=False``
    skips SLQ's full re-orthogonalisation (O(num_iter²·n) per probe, which dominates for groups of
    ≳ 10⁴ parameters; the quadrature stays usable, as in Papyan 2020, but Ritz nodes may be
    duplicated — "ghosts").  ``eps``: tolerance
    factor, τ = eps·max|λ| (default n·machine-ε of ``dtype``).  ``seed`` makes the random start and
    probes reproducible (a private generator; the global RNG is untouched).  ``vectors``: exact
    spectra also return every eigenvector (``eigh`` instead of ``eigvalsh``); Lanczos results always
    carry the top/bottom Ritz vectors.
    """
    if part not in PARTS:
        raise HessExploreError(f"part must be one of {PARTS}, got {part!r}")
    dtype = checks.as_dtype(dtype)
    seed = checks.as_seed(seed)
    k = checks.positive_int(k, "k", hint="how many top and bottom eigenvalues, e.g. k=5")
    num_probes = checks.positive_int(num_probes, "num_probes", hint="SLQ probes, e.g. 16")
    num_iter = checks.positive_int(num_iter, "num_iter", hint="Lanczos steps per SLQ probe, e.g. 64")
    check_every = checks.positive_int(check_every, "check_every")
    if probe_batch is not None:
        probe_batch = checks.positive_int(probe_batch, "probe_batch")
    if max_iter is not None:
        max_iter = checks.positive_int(max_iter, "max_iter")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise checks.ArgumentError(f"tol must be a number >= 0 (relative residual bound, e.g. 1e-6), got {tol!r}")
    if which not in WHICH:
        raise checks.ArgumentError(f"which must be one of {WHICH} (the extremes that must converge), got {which!r}")
    if criterion not in CRITERIA:
        raise checks.ArgumentError(f"criterion must be one of {CRITERIA} (residual bounds or r²/gap error "
                                   f"estimates must meet tol), got {criterion!r}")
    if n < 1:
        raise HessExploreError("the group has no parameters")
    chosen, why = _choose(method, n, dense_max)
    if chosen == "exact" and max_exact is not None and n > max_exact:
        raise BlockTooLargeError(
            f"an exact spectrum of {group or 'this group'!r} needs the dense {n:,}×{n:,} matrix "
            f"({n:,} Hessian-vector products), over the limit max_exact_dim={max_exact:,}. Use "
            "method='lanczos' (extremes) or method='slq' (density), or 'auto'.")
    mv = _Counted(matvec, should_stop)
    t0 = time.perf_counter()
    what = {"full": "Hessian", "gn": "Gauss–Newton part", "tensor": "tensor part (H − GN)"}[part]
    head = f"local {what} of {group!r}" if group else f"{what}"

    def base(**kw) -> Spectrum:
        return Spectrum(group=group, part=part, n=n, method=chosen, requested=method,
                        matvecs=mv.count, elapsed=time.perf_counter() - t0, **kw)

    if chosen == "exact":
        A = _dense(mv, n, max(1, min(int(chunk or 256), n)), dtype, device)
        vecs = None
        if vectors:
            eig, vecs = torch.linalg.eigh(A)
            top_v, bot_v = vecs[:, -min(k, n):].flip(1), vecs[:, :min(k, n)]
        else:
            eig = torch.linalg.eigvalsh(A)
            top_v = bot_v = None
        st = _stats_from_eigenvalues(eig, eps, k)
        grid, dens, sig = _broadened(eig, sigma, grid_size)
        kk = min(k, n)
        note = (f"{head}: {why}; all {n:,} eigenvalues; tolerance τ = {st['tol']:.3g} "
                f"(eps {st['eps']:.3g} × max|λ|).")
        yield base(note=note, stats=st, source={key: "eigenvalues" for key in STAT_KEYS}, eigenvalues=eig,
                   top=eig.flip(0)[:kk], top_bounds=torch.zeros(kk, dtype=eig.dtype),
                   bottom=eig[:kk], bottom_bounds=torch.zeros(kk, dtype=eig.dtype),
                   grid=grid, density=dens, sigma=sig, done=True, stage="exact",
                   eigenvectors=vecs, top_vectors=top_v, bottom_vectors=bot_v)
        return

    k = max(1, min(int(k), n))
    lanczos_part: dict = {}
    if "lanczos" in chosen:
        gen = torch.Generator(device=device).manual_seed(int(seed))
        steps = min(n, max(200, 4 * k)) if max_iter is None else min(int(max_iter), n)
        final = chosen == "lanczos"
        state = None
        for state in lanczos_iter(mv, n, steps, generator=gen, dtype=dtype, device=device, restart=True,
                                  track=True, k_top=k, k_bottom=k, tol=tol, check_every=check_every,
                                  which=which, criterion=criterion):
            if state.top is None:
                continue
            stop = (state.converged and state.iteration >= k) or state.iteration >= steps or state.exact
            if stop:
                break
            top = torch.tensor(state.top, dtype=torch.float64)
            bot = torch.tensor(state.bottom, dtype=torch.float64)
            lanczos_part = dict(top=top, top_bounds=torch.tensor(state.top_bounds, dtype=torch.float64),
                                bottom=bot, bottom_bounds=torch.tensor(state.bottom_bounds, dtype=torch.float64),
                                iterations=state.iteration, converged=state.converged, exact=False,
                                which=which, criterion=criterion)
            yield _lanczos_snapshot(base, head, why, lanczos_part, eps, k, n, done=False)
        res = state.result()
        j = res.iterations
        kt = min(k, j)
        lanczos_part = dict(top=res.ritz_values[j - kt:].flip(0), top_bounds=res.residual_bounds[j - kt:].flip(0),
                            bottom=res.ritz_values[:kt], bottom_bounds=res.residual_bounds[:kt],
                            iterations=j, converged=bool(state.converged) or res.exact, exact=res.exact,
                            ritz=res.ritz_values, which=which, criterion=criterion, **_ritz_vectors(res, kt))
        if final or res.exact:
            # Lanczos spanned R^n: its Ritz values are all the eigenvalues, nothing left to estimate
            yield _lanczos_snapshot(base, head, why, lanczos_part, eps, k, n, done=True,
                                    sigma=sigma, grid_size=grid_size)
            return
        yield _lanczos_snapshot(base, head, why, lanczos_part, eps, k, n, done=False)

    gen = torch.Generator(device=device).manual_seed(int(seed) + 7919)
    it = slq_iter(mv, n, num_probes=num_probes, num_iter=num_iter, probe_batch=probe_batch, generator=gen,
                  sigma=sigma, grid_size=grid_size, dtype=dtype, device=device, reorth=slq_reorth)
    for r in it:
        done = r.num_probes >= num_probes
        yield _slq_snapshot(base, head, why, r, lanczos_part, eps, k, n, done)


def _ritz_vectors(res, kt: int) -> dict:
    """Top (descending) and bottom (ascending) Ritz vectors of a Lanczos result as (n, kt) columns."""
    if res.basis is None:
        return {}
    S = res.ritz_vectors_T
    j = S.shape[0]
    Q = res.basis.T
    return {"top_vectors": Q @ S[:, j - kt:].flip(1), "bottom_vectors": Q @ S[:, :kt]}


def _lanczos_snapshot(base, head: str, why: str, lz: dict, eps, k: int, n: int, done: bool,
                      sigma=None, grid_size: int = 512) -> Spectrum:
    if lz.get("exact"):
        eig = lz["ritz"].sort().values
        st = _stats_from_eigenvalues(eig, eps, k)
        grid, dens, sig = _broadened(eig, sigma, grid_size)
        note = (f"{head}: {why}; Lanczos spanned the whole space in {lz['iterations']} steps, so its Ritz "
                f"values are all {n:,} eigenvalues; tolerance τ = {st['tol']:.3g}.")
        return base(note=note, stats=st, source={key: "eigenvalues" for key in STAT_KEYS}, eigenvalues=eig,
                    top=lz["top"], top_bounds=lz["top_bounds"], bottom=lz["bottom"],
                    bottom_bounds=lz["bottom_bounds"], grid=grid, density=dens, sigma=sig,
                    lanczos_iterations=lz["iterations"], converged=True, done=done, stage="lanczos",
                    top_vectors=lz.get("top_vectors"), bottom_vectors=lz.get("bottom_vectors"))
    st = _extreme_stats(lz, eps, n)
    status = "converged" if lz["converged"] else ("running" if not done else "NOT converged")
    if lz.get("which", "both") != "both":
        status += f" ({lz['which']} end)"
    if lz.get("criterion", "residual") != "residual":
        status += " by the r²/gap error estimate"
    note = (f"{head}: {why}; top/bottom {k} by Lanczos after {lz['iterations']} steps ({status}: residual "
            f"bounds λ_max ± {float(lz['top_bounds'][0]):.2g}, λ_min ± {float(lz['bottom_bounds'][0]):.2g}); "
            "density statistics not estimated (use method='slq' or 'lanczos+slq').")
    source = {key: ("lanczos" if key in _FROM_EXTREMES else "not estimated") for key in STAT_KEYS}
    source.update(n="n", eps="tolerance", tol="tolerance")
    return base(note=note, stats=st, source=source,
                errors={"lambda_max": float(lz["top_bounds"][0]), "lambda_min": float(lz["bottom_bounds"][0])},
                top=lz["top"], top_bounds=lz["top_bounds"], bottom=lz["bottom"], bottom_bounds=lz["bottom_bounds"],
                lanczos_iterations=lz["iterations"], converged=lz["converged"], done=done, stage="lanczos",
                top_vectors=lz.get("top_vectors"), bottom_vectors=lz.get("bottom_vectors"))


def _extreme_stats(lz: dict, eps, n: int) -> dict:
    st = _empty_stats(n)
    top, bot = lz["top"], lz["bottom"]
    lmax, lmin = float(top[0]), float(bot[0])
    amax = max(abs(lmax), abs(lmin))
    e = n * torch.finfo(torch.float64).eps if eps is None else float(eps)
    tau = e * amax
    st.update(eps=e, tol=tau, lambda_max=lmax, lambda_min=lmin,
              abs_min_over_max=abs(lmin) / lmax if lmax > tau else _NAN,
              top_k=top.tolist(), bottom_k=bot.tolist())
    st["not_estimated"] = [key for key in STAT_KEYS if key not in _FROM_EXTREMES + ("n", "eps", "tol")]
    return st


def _slq_snapshot(base, head: str, why: str, r: SLQResult, lz: dict, eps, k: int, n: int,
                  done: bool) -> Spectrum:
    nodes, weights = r.nodes, r.weights
    st = _empty_stats(n)
    st.update(stats_from_density(nodes, weights, n, eps=eps))
    st.pop("not_estimable", None)
    source = {key: "slq" for key in STAT_KEYS}
    source.update(n="n", eps="tolerance", tol="tolerance")
    errors = {"trace": r.trace_stderr, "mean": r.mean_stderr}
    not_est = ["condition_number", "top_k", "bottom_k", "outliers", "outlier_threshold"]
    if lz:
        top, bot = lz["top"], lz["bottom"]
        lmax, lmin = float(top[0]), float(bot[0])
        st.update(lambda_max=lmax, lambda_min=lmin, top_k=top.tolist(), bottom_k=bot.tolist(),
                  abs_min_over_max=abs(lmin) / lmax if lmax > st["tol"] else _NAN)
        st["stable_rank"] = _ratio(st["frobenius"] ** 2, max(abs(lmax), abs(lmin)) ** 2)
        out, thr = _outliers_from_density(torch.cat([top, bot]), nodes, weights, st["tol"])
        st.update(outliers=out, outlier_threshold=thr)
        for key in _FROM_EXTREMES:
            source[key] = "lanczos"
        source["outliers"] = source["outlier_threshold"] = "lanczos+slq"
        source["stable_rank"] = "lanczos+slq"
        errors.update(lambda_max=float(lz["top_bounds"][0]), lambda_min=float(lz["bottom_bounds"][0]))
        not_est = ["condition_number"]
        ext = (f"top/bottom {k} by Lanczos ({lz['iterations']} steps, "
               f"{'converged' if lz['converged'] else 'NOT converged'}: λ_max ± {errors['lambda_max']:.2g}); ")
    else:
        ext = "λ_max/λ_min are the extreme quadrature nodes (inner estimates); "
    for key in not_est:
        source[key] = "not estimated"
    st["not_estimated"] = not_est
    note = (f"{head}: {why}; {ext}density by SLQ from {r.num_probes} Rademacher probes × {r.num_iter} "
            f"Lanczos steps, broadened by a Gaussian of σ = {r.sigma:.3g} (the resolution: finer features "
            f"are smeared); trace = {st['trace']:.6g} ± {r.trace_stderr:.2g} (s.e.); tolerance τ = "
            f"{st['tol']:.3g}.")
    return base(note=note, stats=st, source=source, errors=errors,
                top=lz.get("top"), top_bounds=lz.get("top_bounds"), bottom=lz.get("bottom"),
                bottom_bounds=lz.get("bottom_bounds"), grid=r.grid, density=r.density, sigma=r.sigma, slq=r,
                lanczos_iterations=lz.get("iterations", 0), converged=lz.get("converged"), done=done, stage="slq",
                top_vectors=lz.get("top_vectors"), bottom_vectors=lz.get("bottom_vectors"))


def compute_spectrum(matvec: Matvec, n: int, **kw) -> Spectrum:
    """The final :class:`Spectrum` of :func:`iter_spectrum` (same arguments)."""
    last = None
    for last in iter_spectrum(matvec, n, **kw):
        pass
    return last


# --------------------------------------------------------------------------------------------------
# Hutchinson trace
# --------------------------------------------------------------------------------------------------

@dataclass
class TraceResult:
    """Hutchinson estimate of tr A from Rademacher probes, possibly a streaming snapshot.

    value = mean of the samples zᵢᵀ A zᵢ (unbiased: E zzᵀ = I); stderr = their sample standard
    deviation / √probes (NaN for one probe); samples (probes,) float64; group, part, n (the
    dimension of A); matvecs: products spent; elapsed: seconds; done: False for intermediate
    snapshots.  ``float(result)`` is the value.
    """

    value: float
    stderr: float
    probes: int
    samples: Tensor = field(repr=False)
    group: str = ""
    part: str = "full"
    n: int = 0
    matvecs: int = 0
    elapsed: float = 0.0
    done: bool = True

    @property
    def mean(self) -> float:
        """tr A / n: the mean eigenvalue."""
        return self.value / self.n if self.n else _NAN

    def __float__(self) -> float:
        return self.value

    def to_json(self) -> dict:
        return {"group": self.group, "part": self.part, "n": self.n, "value": _json_num(self.value),
                "stderr": _json_num(self.stderr), "probes": self.probes, "matvecs": self.matvecs,
                "elapsed": self.elapsed, "done": self.done}

    def __repr__(self) -> str:
        return (f"TraceResult({self.group!r}, part={self.part!r}, {self.value:.6g} ± {self.stderr:.2g}, "
                f"probes={self.probes}, done={self.done})")


def iter_trace(matvec: Matvec, n: int, *, probes: int = 64,
               batch_size: Optional[int | Callable[[], int]] = None, seed: int = 0,
               group: str = "", part: str = "full", dtype: torch.dtype = torch.float64, device="cpu",
               should_stop: Optional[Callable[[], bool]] = None, first: Optional[int] = None
               ) -> Iterator[TraceResult]:
    """Hutchinson's estimator of tr A, streamed: a :class:`TraceResult` after every ``batch_size``
    probes (default: all in one product).

    matvec: V (m, n) -> V A (m, n) (rows).  The ``probes`` Rademacher vectors are drawn up front
    from a private generator seeded with ``seed`` (the result does not depend on ``batch_size``);
    each batch is one ``matvec`` call, and zᵢᵀ A zᵢ is summed in float64.  ``first``: the first
    batch takes only that many probes (a first estimate soon); ``batch_size`` may be a function,
    called once after that first batch (to measure what the rest may take).
    """
    probes = checks.positive_int(probes, "probes", hint="Hutchinson probes, e.g. probes=64")
    if batch_size is not None and not callable(batch_size):
        batch_size = checks.positive_int(batch_size, "batch_size")
    seed = checks.as_seed(seed)
    if n < 1:
        raise HessExploreError("the group has no parameters")
    mv = _Counted(matvec, should_stop)
    t0 = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(int(seed))
    Z = rademacher(probes, n, generator=gen, dtype=dtype, device=device)
    parts: list[Tensor] = []
    start, b = 0, None
    while start < probes:
        if start == 0 and first:
            size = min(max(1, int(first)), probes)
        else:
            if b is None:
                b = batch_size() if callable(batch_size) else batch_size
                b = probes if b is None else max(1, int(b))
            size = b
        z = Z[start:start + size]
        start += size
        parts.append((z * mv(z)).sum(dim=1, dtype=torch.float64))
        samples = torch.cat(parts).cpu()
        m = samples.numel()
        se = float(samples.std() / math.sqrt(m)) if m > 1 else _NAN
        yield TraceResult(float(samples.mean()), se, m, samples, group=group, part=part, n=n, matvecs=mv.count,
                          elapsed=time.perf_counter() - t0, done=m >= probes)


def hutchinson_trace(matvec: Matvec, n: int, **kw) -> TraceResult:
    """The final :class:`TraceResult` of :func:`iter_trace` (same arguments)."""
    last = None
    for last in iter_trace(matvec, n, **kw):
        pass
    return last
