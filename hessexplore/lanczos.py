"""Symmetric Lanczos on an abstract operator: extremes with error bars, and SLQ densities.

Pure linear algebra, no neural nets.  The operator is a symmetric A ∈ R^{n×n} known only through a
*batched* matvec::

    matvec(V) -> W        V, W of shape (m, n): m row vectors, W[i] = A V[i]

(A is symmetric, so W = V A = (A Vᵀ)ᵀ.)  Callers typically build it from ``torch.func.vmap`` over a
Hessian-vector product.  Everything stays on ``device``; ``matvec`` must return a tensor on the same
device and of the same dtype.  Its output is detached: Lanczos is not differentiated through.

Lanczos (k steps from a unit vector q₀) builds an orthonormal basis Q_k = [q₀ … q_{k−1}] (rows here,
shape (k, n)) of the Krylov space K_k(A, q₀) = span{q₀, A q₀, …, A^{k−1} q₀} and the symmetric
tridiagonal T_k = Q_k A Q_kᵀ (k, k) with diagonal α (k,) and off-diagonal β (k−1,):

    w_j = A q_j − α_j q_j − β_j q_{j−1},   α_j = q_jᵀ A q_j,   β_{j+1} = ‖w_j‖,   q_{j+1} = w_j / β_{j+1}

so that A Q_kᵀ = Q_kᵀ T_k + β_k q_k e_kᵀ.  Here w_j is additionally re-orthogonalised against all
stored q's (classical Gram–Schmidt, "twice is enough": a second pass whenever the first cancels,
‖w′‖ < ‖w‖/√2, the Kahan–Parlett / DGKS test), which keeps Q orthonormal to
rounding and removes the ghost copies of converged eigenvalues of plain Lanczos.

Ritz pairs: T_k = S diag(θ) Sᵀ, θ ascending.  For the Ritz vector y_i = Q_kᵀ s_i (unit norm),
‖A y_i − θ_i y_i‖ = |β_k| |S[k−1, i]|, hence (Weyl / Bauer–Fike for symmetric A) some eigenvalue of A
lies within ``residual_bounds[i] = |β_k S[k−1, i]|`` of θ_i.  The bound holds in exact arithmetic;
in floating point add O(ε·‖A‖) for rounding.  It says that *an* eigenvalue is near θ_i, not which one:
Lanczos from a single vector sees one copy of each distinct eigenvalue (in exact arithmetic), so it
can neither certify that none was missed nor resolve multiplicities (see ``restart``).

Breakdown: if β_{j+1} ≤ breakdown_tol · ‖T_j‖_G (default max(10√n·ε, 0.01√ε)) (‖·‖_G the Gershgorin bound max_i Σ_l |T_il| ≥ ‖T‖₂),
K_{j+1} is an invariant subspace of A (to that tolerance) and the Ritz values are eigenvalues of A.
The single-vector form then stops (or, with ``restart=True``, continues from a fresh random vector
orthogonal to the basis, leaving a zero in T's off-diagonal: the dropped coupling, at most
breakdown_tol·‖T‖, joins the rounding floor of the bounds); the batched SLQ form freezes that probe
(its later vectors are 0, which adds zero-weight nodes only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor

from .probes import rademacher

Matvec = Callable[[Tensor], Tensor]

#: which Ritz extremes must meet the tolerance before Lanczos stops
WHICH = ("both", "top", "bottom")
#: what must be ≤ tol·max|θ|: the residual bounds (rigorous), or the error estimates min(r, r²/gap)
CRITERIA = ("residual", "gap")

__all__ = [
    "LanczosResult", "LanczosState", "ExtremesResult", "SLQResult", "WHICH", "CRITERIA",
    "lanczos", "lanczos_iter", "extremes", "slq_density", "slq_iter",
    "tridiagonal", "ritz", "gaussian_density", "rademacher",
]


# --------------------------------------------------------------------------------------------------
# small pure helpers
# --------------------------------------------------------------------------------------------------

def _default_breakdown_tol(dtype: torch.dtype, n: int) -> float:
    """Relative β threshold for breakdown: max(10·√n·ε, 0.01·√ε) (ε of ``dtype``).

    Rounding noise is ~√n·ε·‖A‖, but after an invariant subspace the computed β lands anywhere in
    ~[0, 100·ε·‖A‖] depending on the CPU's rounding (AVX-512 or not): the √ε floor (1.5e-10 in
    float64) puts every such β on the breakdown side, so the same restarts happen on every machine.
    Dropping a coupling that small moves eigenvalues by at most that much (Weyl)."""
    eps = torch.finfo(dtype).eps
    return max(10.0 * math.sqrt(n) * eps, 0.01 * math.sqrt(eps))


def tridiagonal(alpha: Tensor, beta: Tensor) -> Tensor:
    """T = diag(α) + diag(β, +1) + diag(β, −1); α (..., k), β (..., k−1) → T (..., k, k)."""
    return torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)


def ritz(alpha: Tensor, beta: Tensor, beta_last: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz values, T's eigenvectors and residual bounds, batched over leading dims.

    α (..., k), β (..., k−1), β_k = ``beta_last`` (...) →
    θ (..., k) ascending, S (..., k, k) with T = S diag(θ) Sᵀ (columns = eigenvectors),
    bounds (..., k) = |β_k| · |S[..., k−1, :]|.
    """
    theta, s = torch.linalg.eigh(tridiagonal(alpha, beta))
    bounds = beta_last.abs().unsqueeze(-1) * s[..., -1, :].abs()
    return theta, s, bounds


def _quadrature_weights(s: Tensor) -> Tensor:
    """Gauss quadrature weights τ_j = (e₁ᵀ s_j)² from T's eigenvectors S (..., k, k) → (..., k)."""
    return s[..., 0, :] ** 2


def gaussian_density(nodes: Tensor, weights: Tensor, grid: Tensor, sigma: float) -> Tensor:
    """Gaussian-broadened density ρ(x) = Σ_i w_i · exp(−(x−θ_i)²/2σ²) / (σ√(2π)) on ``grid``.

    nodes, weights (N,) (weights summing to 1 ⇒ ∫ρ = 1 over the real line); grid (G,) → ρ (G,).
    """
    z = (grid.unsqueeze(1) - nodes.unsqueeze(0)) / sigma                      # (G, N)
    return torch.exp(-0.5 * z * z) @ weights / (sigma * math.sqrt(2.0 * math.pi))


def _unit_start(v0: Optional[Tensor], n: int, generator, dtype, device) -> Tensor:
    """Starting vector as a (1, n) unit row: ``v0`` normalised, else a standard normal draw."""
    if v0 is None:
        v0 = torch.randn(n, generator=generator, dtype=dtype, device=device)
    v0 = torch.as_tensor(v0, dtype=dtype, device=device).reshape(1, -1)
    if v0.shape[1] != n:
        raise ValueError(f"v0 has {v0.shape[1]} entries but the operator has size n={n}")
    norm = torch.linalg.vector_norm(v0)
    if not bool(norm > 0):
        raise ValueError("v0 must be a non-zero vector")
    return v0 / norm


# --------------------------------------------------------------------------------------------------
# the batched recurrence (shared by the single-vector and SLQ forms)
# --------------------------------------------------------------------------------------------------

class _Recurrence:
    """Lanczos recurrence on m starting rows at once, one batched ``matvec`` call per step.

    After j steps (row p = probe p):
      ``basis[:, :j+1]`` (m, j+1, n)  q₀ … q_j (orthonormal per row), when stored;
      ``alpha[:, :j]``   (m, j)       α₀ … α_{j−1};
      ``beta[:, :j]``    (m, j)       β₁ … β_j  (the first j−1 are T_j's off-diagonal, the last the
                                      residual norm β_j);  ``residual`` (m,): β_j before zeroing.
    A row whose β falls below ``tol``·‖T‖_G is frozen: β := 0, later q := 0 (so α = β = 0 after).
    """

    def __init__(self, matvec: Matvec, q0: Tensor, max_steps: int, *, reorth: bool,
                 breakdown_tol: float, store_basis: bool, grow: bool = True):
        m, n = q0.shape
        self.matvec, self.n, self.reorth, self.tol = matvec, n, reorth, breakdown_tol
        self.store_basis = store_basis or reorth
        self.alpha = q0.new_zeros(m, max_steps)
        self.beta = q0.new_zeros(m, max_steps)
        self.scale = q0.new_zeros(m)                       # running Gershgorin bound on ‖T‖
        self.rows = max_steps + 1                          # basis rows ever needed
        if self.store_basis:
            # ``grow``: grown geometrically, so a run that converges in a few steps never allocates
            # (max_steps + 1)·n (200 rows of a whole model's parameters by default); SLQ runs every
            # step and allocates it all at once (no copies)
            self.basis = q0.new_empty(m, min(self.rows, 16) if grow else self.rows, n)
            self.basis[:, 0] = q0
        self.q_prev, self.q = torch.zeros_like(q0), q0
        self.steps = 0

    def _store(self, j: int, q: Tensor) -> None:
        """basis[:, j] = q, growing the basis (doubling, capped at max_steps + 1 rows) when full."""
        cap = self.basis.shape[1]
        if j >= cap:
            grown = self.basis.new_empty(self.basis.shape[0], min(self.rows, max(2 * cap, j + 1)), self.n)
            grown[:, :cap] = self.basis
            self.basis = grown
        self.basis[:, j] = q

    def _project_out(self, w: Tensor, upto: int) -> Tensor:
        """w − Q Qᵀ w by classical Gram–Schmidt against each row's own q₀ … q_{upto−1}, with the
        second pass of "twice is enough" run when the first one cancelled: ‖w′‖ < ‖w‖/√2 in some row
        (Daniel, Gragg, Kaufman & Stewart 1976; Kahan–Parlett).  After the three-term recurrence w
        is already nearly orthogonal to the basis, so the second pass — half the re-orthogonalisation
        cost — is rarely needed; it runs when the first pass cancels, as at an invariant subspace or
        on a restart vector.  One device sync."""
        q = self.basis[:, :upto]                                              # (m, upto, n)
        before = torch.linalg.vector_norm(w, dim=1)
        c = torch.bmm(q, w.unsqueeze(-1))                                     # (m, upto, 1)
        w = w - torch.bmm(c.transpose(1, 2), q).squeeze(1)
        if bool((torch.linalg.vector_norm(w, dim=1) * math.sqrt(2.0) < before).any()):
            c = torch.bmm(q, w.unsqueeze(-1))
            w = w - torch.bmm(c.transpose(1, 2), q).squeeze(1)
        return w

    def step(self) -> Tensor:
        """One Lanczos step for every row; returns the (m,) bool tensor 'broke down at this step'."""
        j, q = self.steps, self.q
        w = self.matvec(q)
        if w.shape != q.shape:
            raise ValueError(f"matvec must map (m, n) to (m, n); got {tuple(q.shape)} -> {tuple(w.shape)}")
        w = w.detach()
        a = (q * w).sum(dim=1)
        b_prev = self.beta[:, j - 1] if j > 0 else torch.zeros_like(a)
        w = w - a.unsqueeze(1) * q - b_prev.unsqueeze(1) * self.q_prev
        if self.reorth:
            w = self._project_out(w, j + 1)
        b = torch.linalg.vector_norm(w, dim=1)
        self.scale = torch.maximum(self.scale, a.abs() + b_prev + b)
        broke = b <= self.tol * self.scale
        self.residual = b                                 # β_{j+1} as computed, for the bounds
        b = torch.where(broke, torch.zeros_like(b), b)
        q_next = w / torch.where(broke, math.inf, b).unsqueeze(1)      # frozen rows: w / ∞ = 0
        self.alpha[:, j], self.beta[:, j] = a, b
        self._advance(q_next)
        return broke

    def _advance(self, q_next: Tensor) -> None:
        self.steps += 1
        self.q_prev, self.q = self.q, q_next
        if self.store_basis and self.steps < self.rows:
            self._store(self.steps, q_next)

    def restart(self, v: Tensor) -> bool:
        """After a breakdown (β_j = 0), continue from v (1, n) orthogonalised against the basis.

        Returns False (and leaves the state alone) when nothing is left, i.e. the basis spans R^n.
        """
        v = v / torch.linalg.vector_norm(v)
        v = self._project_out(v, self.steps)
        norm = torch.linalg.vector_norm(v)
        if not bool(norm > self.tol):                 # Python decision, once per restart
            return False
        self.steps -= 1                               # re-point the slot of q_j, keep α, β_j = 0
        self._advance(v / norm)
        return True

    # views on the first row (the single-vector form)
    def tridiag(self, row: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(α (j,), off-diagonal β (j−1,), β_j ()) of row ``row`` after j = ``steps`` steps.

        β_j is the residual norm as computed, even when it fell below the breakdown threshold (the
        recurrence then stores 0), so residual bounds never claim more than the arithmetic showed.
        """
        j = self.steps
        return self.alpha[row, :j], self.beta[row, :j - 1], self.residual[row]


# --------------------------------------------------------------------------------------------------
# single-vector Lanczos: streaming state and result
# --------------------------------------------------------------------------------------------------

@dataclass
class LanczosResult:
    """Outcome of k Lanczos steps on symmetric A (n × n).

    alpha (k,), beta (k−1,): T_k's diagonal and off-diagonal;  beta_last (): β_k, the residual norm;
    basis (k, n) or None: Lanczos vectors q₀ … q_{k−1} as rows (Q_k A Q_kᵀ = T_k);
    ritz_values (k,) ascending; ritz_vectors_T (k, k): eigenvectors of T_k as columns;
    residual_bounds (k,) = |β_k · ritz_vectors_T[k−1, i]|: some eigenvalue of A lies within this of
    ritz_values[i] (plus rounding O(ε‖A‖));
    iterations = k actually run (< the k asked for after a breakdown);
    breakdown: an invariant subspace was hit (β ≈ 0) at least once;  restarts: how often Lanczos went
    on from a fresh vector after one;  exact: the basis spans all of R^n (k = n), so the Ritz values
    are *all* eigenvalues of A, with multiplicity.
    """
    alpha: Tensor
    beta: Tensor
    beta_last: Tensor
    basis: Optional[Tensor]
    ritz_values: Tensor
    ritz_vectors_T: Tensor
    residual_bounds: Tensor
    iterations: int
    breakdown: bool = False
    restarts: int = 0
    exact: bool = False

    @property
    def ritz_vectors(self) -> Tensor:
        """Ritz vectors of A as columns, (n, k) = Q_kᵀ S (needs the basis)."""
        if self.basis is None:
            raise ValueError("the basis was not kept: run lanczos(..., return_basis=True)")
        return self.basis.T @ self.ritz_vectors_T


@dataclass
class LanczosState:
    """What ``lanczos_iter`` yields after each step j (= ``iteration``).

    Tensors: alpha (j,), beta (j−1,), beta_last ().  Python numbers (one device sync per step), or
    None on steps that were not tracked: ``top`` (≤ k_top largest Ritz values, descending) with
    ``top_bounds``, ``bottom`` (≤ k_bottom smallest, ascending) with ``bottom_bounds``, ``converged``
    (every tracked bound ≤ tol · max|θ|; False when no tol was given).
    """
    iteration: int
    alpha: Tensor
    beta: Tensor
    beta_last: Tensor
    breakdown: bool
    restarts: int
    exact: bool
    top: Optional[list] = None
    top_bounds: Optional[list] = None
    bottom: Optional[list] = None
    bottom_bounds: Optional[list] = None
    converged: bool = False
    _basis: Optional[Tensor] = field(default=None, repr=False)

    def result(self) -> LanczosResult:
        """The full :class:`LanczosResult` at this step (one eigh of T_j)."""
        theta, s, bounds = ritz(self.alpha, self.beta, self.beta_last)
        return LanczosResult(self.alpha, self.beta, self.beta_last, self._basis, theta, s, bounds,
                             self.iteration, self.breakdown, self.restarts, self.exact)


def _error_estimates(theta: Tensor, bounds: Tensor) -> Tensor:
    """min(r_i, r_i² / gap_i): the a-posteriori eigenvalue error estimate of each Ritz value.

    gap_i = distance from θ_i to the nearest other Ritz value, standing in for the unknown distance
    to the rest of A's spectrum in the Kahan–Parlett–Jiang bound |λ − θ_i| ≤ r_i²/gap (Parlett, The
    Symmetric Eigenvalue Problem, §11.7).  An estimate, not a bound: the Ritz gap can exceed the true
    one while the Ritz values are far from converged.  With one Ritz value (no gap) it is r."""
    j = theta.shape[0]
    if j < 2:
        return bounds
    d = (theta.unsqueeze(0) - theta.unsqueeze(1)).abs()
    gap = (d + torch.diag(torch.full_like(theta, math.inf))).min(dim=1).values
    return torch.where(gap > 0, torch.minimum(bounds, bounds * bounds / gap), bounds)


def _track(alpha: Tensor, beta: Tensor, beta_last: Tensor, k_top: int, k_bottom: int,
           tol: Optional[float], which: str = "both", criterion: str = "residual") -> Tensor:
    """Flat tensor [converged, top (kt), top bounds (kt), bottom (kb), bottom bounds (kb)].

    ``which``: the extremes that must meet the tolerance for ``converged`` — "both", "top" or
    "bottom"; ``criterion``: "residual" (residual bounds ≤ tol·max|θ|) or "gap" (the error estimates
    of :func:`_error_estimates` ≤ tol·max|θ|).  The reported bounds are the residual bounds either way."""
    theta, _, bounds = ritz(alpha, beta, beta_last)
    j = theta.shape[0]
    kt, kb = min(k_top, j), min(k_bottom, j)
    top, tb = theta[j - kt:].flip(0), bounds[j - kt:].flip(0)
    bot, bb = theta[:kb], bounds[:kb]
    if tol is None or tol <= 0:     # tol = 0: run to the step limit (exact zeros certify nothing)
        conv = theta.new_zeros(())
    else:
        err = bounds if criterion == "residual" else _error_estimates(theta, bounds)
        et, eb = err[j - kt:], err[:kb]
        judged = {"both": torch.cat([et, eb]), "top": et, "bottom": eb}[which]
        conv = judged.max() <= tol * theta.abs().max()
    return torch.cat([conv.to(theta.dtype).reshape(1), top, tb, bot, bb])


def lanczos_iter(matvec: Matvec, n: int, k: int, *, v0: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None, dtype: torch.dtype = torch.float64,
                 device="cpu", reorth: bool = True, restart: bool = False, return_basis: bool = True,
                 track: bool = True, k_top: int = 1, k_bottom: int = 1, tol: Optional[float] = None,
                 check_every: int = 1, breakdown_tol: Optional[float] = None,
                 which: str = "both", criterion: str = "residual") -> Iterator[LanczosState]:
    """Run up to k Lanczos steps on A (n × n), yielding a :class:`LanczosState` after every step.

    With ``track`` (every ``check_every`` steps and on the last one) the state carries the current
    Ritz extremes and their residual bounds as Python floats: one eigh of T_j (j × j) and one device
    sync per tracked step.  ``converged`` (the ``which`` extremes — "both", "top" or "bottom"; both
    are tracked and reported either way — meet ``tol``·max|θ|: their residual bounds with
    ``criterion="residual"``, their error estimates min(r, r²/gap) with ``criterion="gap"``, see
    ``_error_estimates``) is never set on a step that broke
    down and restarts (an invariant subspace certifies its own eigenvalues, not that the extremes or
    their multiplicities are complete), nor for ``tol`` ≤ 0 (run to k steps or the whole space).  Untracked steps sync once only for the breakdown test.  The generator
    ends after k = min(k, n) steps, or at a breakdown unless ``restart`` (then it continues from a
    random vector orthogonal to the basis, drawn from ``generator``).  Breaking out of the loop early
    is fine; ``state.result()`` gives the full :class:`LanczosResult`.

    v0 (n,) or None (standard normal from ``generator``); breakdown_tol: relative, default
    max(10√n·ε, 0.01√ε) (see ``_default_breakdown_tol``).
    """
    k = min(int(k), n)
    if k < 1:
        raise ValueError("k must be >= 1")
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    tol_b = _default_breakdown_tol(dtype, n) if breakdown_tol is None else breakdown_tol
    rec = _Recurrence(matvec, _unit_start(v0, n, generator, dtype, device), k, reorth=reorth,
                      breakdown_tol=tol_b, store_basis=return_basis or restart)
    breakdown, restarts = False, 0
    while True:
        broke_t = rec.step()
        j = rec.steps
        tracked = track and (j % check_every == 0 or j >= k)
        broke, info = _sync(rec, broke_t, k_top, k_bottom, tol, which, criterion) if tracked else (bool(broke_t[0]), None)
        breakdown |= broke
        more = j < k and (not broke or (restart and rec.restart(
            torch.randn(1, n, generator=generator, dtype=dtype, device=device))))
        restarts += int(broke and more)
        state = LanczosState(j, *rec.tridiag(), breakdown, restarts, exact=j == n,
                             _basis=rec.basis[0, :j] if return_basis else None)
        if info is not None:
            _fill_tracking(state, info, min(k_top, j), min(k_bottom, j))
            # an invariant subspace was found and Lanczos goes on from a fresh vector: its Ritz values are
            # exact eigenvalues, but copies of them (multiplicities) and the rest of the spectrum may lie
            # outside it, so small bounds do not mean the requested extremes are found
            state.converged = state.converged and not (broke and more)
        yield state
        if not more:
            return


def _sync(rec: _Recurrence, broke_t: Tensor, k_top: int, k_bottom: int, tol: Optional[float], which: str = "both",
          criterion: str = "residual"):
    """(broke, tracking info) fetched from the device in one ``tolist`` — the one sync of a step."""
    flags = torch.cat([broke_t.to(rec.alpha.dtype),
                       _track(*rec.tridiag(), k_top, k_bottom, tol, which, criterion)]).tolist()
    return bool(flags[0]), flags[1:]


def _fill_tracking(state: LanczosState, info: list, kt: int, kb: int) -> None:
    """Unpack ``_track``'s flat list into the state's Python-number fields."""
    state.converged = bool(info[0])
    state.top, state.top_bounds = info[1:1 + kt], info[1 + kt:1 + 2 * kt]
    state.bottom, state.bottom_bounds = info[1 + 2 * kt:1 + 2 * kt + kb], info[1 + 2 * kt + kb:]


def lanczos(matvec: Matvec, n: int, k: int, *, v0: Optional[Tensor] = None,
            generator: Optional[torch.Generator] = None, dtype: torch.dtype = torch.float64,
            device="cpu", reorth: bool = True, restart: bool = False, return_basis: bool = True,
            breakdown_tol: Optional[float] = None) -> LanczosResult:
    """k steps of symmetric Lanczos on A (n × n) from v0 (or a normal draw from ``generator``).

    Full re-orthogonalisation (classical Gram–Schmidt, a second pass when the first cancels) when ``reorth``.  Stops early at a
    breakdown (invariant subspace found) unless ``restart``; with ``restart`` and k = n the Ritz values
    are all n eigenvalues of A with multiplicity (``exact``).  See :class:`LanczosResult`.
    Cost: k matvecs, O(k²n) for re-orthogonalisation, memory (k+1)·n for the basis.
    """
    state = None
    for state in lanczos_iter(matvec, n, k, v0=v0, generator=generator, dtype=dtype, device=device,
                              reorth=reorth, restart=restart, return_basis=return_basis, track=False,
                              breakdown_tol=breakdown_tol):
        pass
    return state.result()


# --------------------------------------------------------------------------------------------------
# extremes
# --------------------------------------------------------------------------------------------------

@dataclass
class ExtremesResult:
    """Top/bottom eigenvalue estimates of A with error bars.

    top (≤k_top,) descending and bottom (≤k_bottom,) ascending Ritz values; top_bounds / bottom_bounds
    their residual bounds (an eigenvalue of A within that distance, up to rounding).  Ritz values are
    inner estimates: θ_max ≤ λ_max and θ_min ≥ λ_min.  converged: every bound ≤ tol·max|θ|.
    """
    top: Tensor
    top_bounds: Tensor
    bottom: Tensor
    bottom_bounds: Tensor
    converged: bool
    iterations: int
    breakdown: bool
    restarts: int
    exact: bool
    lanczos: LanczosResult


def extremes(matvec: Matvec, n: int, k_top: int = 1, k_bottom: int = 1, *, max_iter: Optional[int] = None,
             tol: float = 1e-6, generator: Optional[torch.Generator] = None, v0: Optional[Tensor] = None,
             dtype: torch.dtype = torch.float64, device="cpu", reorth: bool = True, restart: bool = True,
             check_every: int = 1, breakdown_tol: Optional[float] = None,
             on_step: Optional[Callable[[LanczosState], None]] = None,
             criterion: str = "residual") -> ExtremesResult:
    """The k_top largest and k_bottom smallest eigenvalues of A with residual error bars.

    Lanczos runs until every tracked bound |β_j s_{j,i}| ≤ tol · max_i |θ_i| (checked every
    ``check_every`` steps), or max_iter steps (default min(n, 200)), or the whole space is spanned.
    After a breakdown it restarts from a random vector orthogonal to the basis (``restart``), so that
    eigenvalues outside the first invariant subspace (e.g. more zeros of a low-rank A) are reached.
    The eigenvalue error is usually far below the residual bound (≈ bound²/gap).  ``on_step`` sees
    every tracked :class:`LanczosState` (for streaming error bars).  ``criterion="gap"`` stops on
    that error estimate min(r, r²/gap) instead of the bound (see ``lanczos_iter``).  Caveat: a
    multiple eigenvalue is seen once until a breakdown/restart; converged bounds cannot certify that
    none was missed.
    """
    max_iter = min(n, 200) if max_iter is None else min(int(max_iter), n)
    k_top, k_bottom = min(k_top, n), min(k_bottom, n)
    state = None
    for state in lanczos_iter(matvec, n, max_iter, v0=v0, generator=generator, dtype=dtype, device=device,
                              reorth=reorth, restart=restart, track=True, k_top=k_top, k_bottom=k_bottom,
                              tol=tol, check_every=check_every, breakdown_tol=breakdown_tol,
                              criterion=criterion):
        if state.top is not None and on_step is not None:
            on_step(state)
        if state.converged and state.iteration >= max(k_top, k_bottom):
            break
    res = state.result()
    j = res.iterations
    kt, kb = min(k_top, j), min(k_bottom, j)
    return ExtremesResult(res.ritz_values[j - kt:].flip(0), res.residual_bounds[j - kt:].flip(0),
                          res.ritz_values[:kb], res.residual_bounds[:kb], state.converged, j,
                          res.breakdown, res.restarts, res.exact, res)


# --------------------------------------------------------------------------------------------------
# stochastic Lanczos quadrature
# --------------------------------------------------------------------------------------------------

@dataclass
class SLQResult:
    """Spectral density of A (n × n) by stochastic Lanczos quadrature over P probes, k nodes each.

    The spectral measure μ = (1/n) Σ_i δ(x − λ_i) is estimated by
    μ̂ = Σ_{p,j} weights[p·k + j] δ(x − nodes[p·k + j]).

    probe_nodes (P, k): Ritz values θ_{p,j} of probe p; probe_weights (P, k): τ_{p,j} = (S_p[0, j])²,
    each row sums to 1 (Gauss quadrature for v_pᵀ f(A) v_p, v_p = z_p/√n, z_p Rademacher);
    nodes, weights (P·k,): flattened, weights = probe_weights / P (sum 1);
    probe_steps (P,): Lanczos steps before that probe broke down (k if it did not);
    trace_per_probe (P,) = n Σ_j τ_{p,j} θ_{p,j} = z_pᵀ A z_p (Hutchinson);  trace: its mean;
    trace_stderr: sample std / √P (NaN for P = 1);  mean = trace / n (= ∫ x dμ̂), mean_stderr;
    grid (G,), density (G,): Gaussian-broadened μ̂ with standard deviation ``sigma`` — the stated
    resolution: features narrower than ~sigma are smeared out;  grid_mass: trapezoid ∫ density on
    the grid (1 up to discretisation/truncation when the grid covers the nodes ± 8σ with spacing ≲ σ).
    """
    n: int
    num_iter: int
    probe_nodes: Tensor
    probe_weights: Tensor
    probe_steps: Tensor
    trace_per_probe: Tensor
    grid: Tensor
    density: Tensor
    sigma: float
    grid_mass: float
    probes: Optional[Tensor] = field(default=None, repr=False)

    @property
    def num_probes(self) -> int:
        return self.probe_nodes.shape[0]

    @property
    def nodes(self) -> Tensor:
        return self.probe_nodes.reshape(-1)

    @property
    def weights(self) -> Tensor:
        return (self.probe_weights / self.num_probes).reshape(-1)

    @property
    def trace(self) -> float:
        return float(self.trace_per_probe.mean())

    @property
    def trace_stderr(self) -> float:
        p = self.num_probes
        return float(self.trace_per_probe.std() / math.sqrt(p)) if p > 1 else float("nan")

    @property
    def mean(self) -> float:
        return self.trace / self.n

    @property
    def mean_stderr(self) -> float:
        return self.trace_stderr / self.n


def _slq_batch(matvec: Matvec, z: Tensor, num_iter: int, reorth: bool, breakdown_tol: float):
    """Lanczos on each row of z (b, n) at once → Ritz values (b, k), weights (b, k), steps (b,)."""
    n = z.shape[1]
    rec = _Recurrence(matvec, z / math.sqrt(n), num_iter, reorth=reorth, breakdown_tol=breakdown_tol,
                      store_basis=reorth, grow=False)
    alive = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    for _ in range(num_iter):
        alive += (rec.q.abs().sum(dim=1) > 0).long()           # steps run on a live vector
        rec.step()
    alpha, beta = rec.alpha, rec.beta
    theta, s = torch.linalg.eigh(tridiagonal(alpha, beta[:, :-1]))
    return theta, _quadrature_weights(s), alive


def _default_sigma(nodes: Tensor) -> float:
    """1 % of the node range max θ − min θ (or of max|θ| if that is 0, or 0.01 if all are 0)."""
    lo, hi, big = torch.stack([nodes.min(), nodes.max(), nodes.abs().max()]).tolist()
    width = hi - lo if hi > lo else (big if big > 0 else 1.0)
    return 0.01 * width


def _broaden(nodes: Tensor, weights: Tensor, grid: Optional[Tensor], sigma: Optional[float],
             grid_size: int) -> tuple[Tensor, Tensor, float, float]:
    sigma = _default_sigma(nodes) if sigma is None else float(sigma)
    if grid is None:
        lo, hi = torch.stack([nodes.min(), nodes.max()]).tolist()
        grid = torch.linspace(lo - 8 * sigma, hi + 8 * sigma, grid_size, dtype=nodes.dtype, device=nodes.device)
    grid = torch.as_tensor(grid, dtype=nodes.dtype, device=nodes.device)
    dens = gaussian_density(nodes, weights, grid, sigma)
    return grid, dens, sigma, float(torch.trapezoid(dens, grid))


def slq_iter(matvec: Matvec, n: int, *, num_probes: int = 16, num_iter: int = 64,
             probe_batch: Optional[int] = None, generator: Optional[torch.Generator] = None,
             grid: Optional[Tensor] = None, sigma: Optional[float] = None, grid_size: int = 512,
             dtype: torch.dtype = torch.float64, device="cpu", reorth: bool = True,
             breakdown_tol: Optional[float] = None, keep_probes: bool = False) -> Iterator[SLQResult]:
    """Stochastic Lanczos quadrature, streamed: yields the cumulative :class:`SLQResult` after each
    batch of ``probe_batch`` probes (default: all ``num_probes`` in one batch → a single yield).

    All P Rademacher probes z_p ∈ {±1}^n are drawn up front from ``generator`` as one (P, n) tensor
    (so the result does not depend on ``probe_batch``).  Within a batch of b probes every Lanczos step
    is ONE ``matvec`` call on a (b, n) block; α, β are per probe and each probe is re-orthogonalised
    against its own basis.  For v = z/√n and T = S diag(θ) Sᵀ after k = min(num_iter, n) steps,

        vᵀ f(A) v ≈ Σ_j τ_j f(θ_j),   τ_j = S[0, j]²   (exact for polynomials f of degree ≤ 2k−1),

    and E[vᵀ f(A) v] = (1/n) tr f(A) = ∫ f dμ.  One small device sync per step (whether the
    re-orthogonalisation needs its second Gram–Schmidt pass).
    Memory: b·(k+1)·n for the bases.
    """
    k = min(int(num_iter), n)
    if k < 1 or num_probes < 1:
        raise ValueError("num_iter and num_probes must be >= 1")
    tol_b = _default_breakdown_tol(dtype, n) if breakdown_tol is None else breakdown_tol
    z_all = rademacher(num_probes, n, generator=generator, dtype=dtype, device=device)
    b = num_probes if probe_batch is None else max(1, int(probe_batch))
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, num_probes, b):
        parts.append(_slq_batch(matvec, z_all[start:start + b], k, reorth, tol_b))
        theta, tau, steps = (torch.cat(t) for t in zip(*parts))
        g, dens, sig, mass = _broaden(theta.reshape(-1), (tau / tau.shape[0]).reshape(-1), grid, sigma, grid_size)
        yield SLQResult(n, k, theta, tau, steps, n * (tau * theta).sum(dim=1), g, dens, sig, mass,
                        z_all[:start + b] if keep_probes else None)


def slq_density(matvec: Matvec, n: int, *, num_probes: int = 16, num_iter: int = 64,
                generator: Optional[torch.Generator] = None, grid: Optional[Tensor] = None,
                sigma: Optional[float] = None, grid_size: int = 512, dtype: torch.dtype = torch.float64,
                device="cpu", reorth: bool = True, probe_batch: Optional[int] = None,
                breakdown_tol: Optional[float] = None, keep_probes: bool = False) -> SLQResult:
    """Spectral density of A by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017).

    Returns the final :class:`SLQResult` of :func:`slq_iter`: quadrature nodes/weights (per probe
    and pooled), the trace estimate with its standard error, and the density broadened by a Gaussian
    of std ``sigma`` (default 1 % of the node range θ_max − θ_min) on ``grid`` (default ``grid_size``
    points over [θ_min − 8σ, θ_max + 8σ]).  Choose sigma ≳ (λ_max − λ_min)/num_iter: finer than the
    Lanczos resolution the density shows the individual Ritz nodes as spikes.
    """
    result = None
    for result in slq_iter(matvec, n, num_probes=num_probes, num_iter=num_iter, probe_batch=probe_batch,
                           generator=generator, grid=grid, sigma=sigma, grid_size=grid_size, dtype=dtype,
                           device=device, reorth=reorth, breakdown_tol=breakdown_tol, keep_probes=keep_probes):
        pass
    return result
