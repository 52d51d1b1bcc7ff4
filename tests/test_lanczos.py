"""Lanczos, extremes and SLQ against dense torch.linalg.eigh (float64)."""
from __future__ import annotations

import math

import pytest
import torch

from hessexplore import lanczos as lz
from hessexplore.lanczos import extremes, gaussian_density, lanczos, lanczos_iter, slq_density, slq_iter

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sym(lams, seed: int = 0) -> torch.Tensor:
    """Q diag(λ) Qᵀ with a Haar-ish random orthogonal Q, exactly symmetrised."""
    lams = torch.as_tensor(lams, dtype=F64)
    n = lams.numel()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen(seed), dtype=F64))
    a = (q * lams) @ q.T
    return (a + a.T) / 2


class Op:
    """Batched matvec V ↦ V A that records the shape of every call."""

    def __init__(self, a: torch.Tensor):
        self.a, self.calls = a, []

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(v.shape))
        return v @ self.a


def spectra():
    g = gen(123)
    return {
        "distinct_n5": torch.tensor([-2.0, -0.5, 0.3, 1.0, 4.0], dtype=F64),
        "indefinite_n60": torch.randn(60, generator=g, dtype=F64),
        "outliers_n200": torch.cat([torch.rand(195, generator=g, dtype=F64),
                                    torch.tensor([10.0, 20.0, 35.0, -8.0, -15.0], dtype=F64)]),
        "uniform_n400": torch.linspace(-1.0, 3.0, 400, dtype=F64),
    }


def nearest_gap(theta: torch.Tensor, lams: torch.Tensor) -> torch.Tensor:
    """min_j |θ_i − λ_j| for each Ritz value (k,)."""
    return (theta.unsqueeze(1) - lams.unsqueeze(0)).abs().min(dim=1).values


# ------------------------------------------------------------------------------------------ lanczos

@pytest.mark.parametrize("name", list(spectra()))
def test_full_lanczos_reproduces_every_eigenvalue(name):
    lams = spectra()[name]
    n = lams.numel()
    a = sym(lams, seed=n)
    truth = torch.linalg.eigvalsh(a)
    res = lanczos(Op(a), n, n, generator=gen(1))
    assert res.iterations == n and res.exact
    assert torch.allclose(res.ritz_values, truth, rtol=0, atol=1e-8)
    # the basis is orthonormal and Q A Qᵀ is the tridiagonal T
    q = res.basis
    assert torch.allclose(q @ q.T, torch.eye(n, dtype=F64), atol=1e-10)
    t = lz.tridiagonal(res.alpha, res.beta)
    assert torch.allclose(q @ a @ q.T, t, atol=1e-9 * truth.abs().max())
    assert res.residual_bounds.max() < 1e-8 * truth.abs().max()


@pytest.mark.parametrize("name", list(spectra()))
@pytest.mark.parametrize("k", [3, 8, 20, 45])
def test_residual_bounds_bound_the_error(name, k):
    lams = spectra()[name]
    n = lams.numel()
    a = sym(lams, seed=n + 1)
    truth = torch.linalg.eigvalsh(a)
    res = lanczos(Op(a), n, k, generator=gen(k))
    slack = 1e-12 * truth.abs().max()                     # rounding in eigh and in the recurrence
    gaps = nearest_gap(res.ritz_values, truth)
    assert bool((gaps <= res.residual_bounds + slack).all())
    # the bound is the true residual norm ‖A y − θ y‖ of the Ritz vectors (so it is not vacuous)
    y = res.ritz_vectors                                               # (n, k)
    resid = torch.linalg.vector_norm(a @ y - y * res.ritz_values, dim=0)
    assert torch.allclose(resid, res.residual_bounds, atol=1e-10 * truth.abs().max())
    # Cauchy interlacing: Ritz values lie inside [λ_min, λ_max]
    assert res.ritz_values.min() >= truth.min() - slack and res.ritz_values.max() <= truth.max() + slack


def test_bounds_are_exercised_when_not_converged():
    """A partial run on a clustered spectrum leaves Ritz values far from eigenvalues: the bound must
    then be large too (guards against a test that only ever sees converged values)."""
    lams = spectra()["uniform_n400"]
    a = sym(lams, seed=7)
    res = lanczos(Op(a), 400, 10, generator=gen(0))
    gaps = nearest_gap(res.ritz_values, lams)
    assert gaps.max() > 1e-3
    assert bool((gaps <= res.residual_bounds + 1e-12).all())


def test_low_rank_breakdown_stops_early():
    n, r = 80, 5
    lams = torch.zeros(n, dtype=F64)
    lams[:r] = torch.tensor([1.0, 2.0, 3.0, -4.0, 5.0], dtype=F64)
    a = sym(lams, seed=3)
    op = Op(a)
    res = lanczos(op, n, n, generator=gen(2))
    assert res.breakdown and not res.exact
    assert res.iterations <= r + 2 and len(op.calls) == res.iterations    # Krylov dim r + 1 (+1 rounding)
    assert bool((nearest_gap(res.ritz_values, lams) < 1e-8).all())       # every Ritz value is exact
    for lam in lams[:r]:
        assert (res.ritz_values - lam).abs().min() < 1e-8
    assert res.residual_bounds.max() < 1e-8
    # restart: continue from fresh orthogonal vectors until the whole space is spanned
    full = lanczos(Op(a), n, n, generator=gen(2), restart=True)
    assert full.exact and full.iterations == n and full.restarts >= 1
    assert torch.allclose(full.ritz_values, lams.sort().values, atol=1e-8)


def test_repeated_eigenvalues_seen_once_without_restart():
    lams = torch.tensor([2.0] * 10 + [-1.0] * 10 + [0.5] * 5 + [7.0], dtype=F64)
    a = sym(lams, seed=4)
    res = lanczos(Op(a), 26, 26, generator=gen(5))
    assert res.breakdown and res.iterations <= 5
    distinct = torch.tensor([-1.0, 0.5, 2.0, 7.0], dtype=F64)
    assert torch.allclose(res.ritz_values[:4], distinct, atol=1e-8)
    full = lanczos(Op(a), 26, 26, generator=gen(5), restart=True)
    assert full.exact and torch.allclose(full.ritz_values, lams.sort().values, atol=1e-8)


def test_eigenvector_start_and_zero_operator():
    lams = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    res = lanczos(lambda v: v * lams, 4, 4, v0=torch.tensor([0.0, 0.0, 2.0, 0.0], dtype=F64))
    assert res.iterations == 1 and res.breakdown
    assert torch.allclose(res.ritz_values, torch.tensor([3.0], dtype=F64))
    zero = lanczos(lambda v: torch.zeros_like(v), 6, 6, generator=gen(0))
    assert zero.iterations == 1 and zero.breakdown and float(zero.ritz_values[0]) == 0.0


def test_input_errors():
    with pytest.raises(ValueError):
        lanczos(lambda v: v, 3, 3, v0=torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError):
        lanczos(lambda v: v[:, :2], 3, 3, generator=gen(0))
    with pytest.raises(ValueError):
        lanczos(lambda v: v, 3, 0)


def test_deterministic_given_generator_and_k_clamped():
    a = sym(spectra()["indefinite_n60"], seed=9)
    r1 = lanczos(Op(a), 60, 30, generator=gen(11))
    r2 = lanczos(Op(a), 60, 30, generator=gen(11))
    assert torch.equal(r1.alpha, r2.alpha) and torch.equal(r1.beta, r2.beta)
    assert lanczos(Op(a), 60, 500, generator=gen(0)).iterations == 60


def test_no_reorth_still_runs_and_keeps_no_basis():
    a = sym(spectra()["outliers_n200"], seed=2)
    res = lanczos(Op(a), 200, 40, generator=gen(0), reorth=False, return_basis=False)
    assert res.basis is None and res.iterations == 40
    assert abs(float(res.ritz_values[-1]) - 35.0) < 1e-8


# ------------------------------------------------------------------------------------------ streaming

def test_lanczos_iter_streams_refining_extremes():
    lams = spectra()["outliers_n200"]
    a = sym(lams, seed=5)
    lmax, lmin = float(lams.max()), float(lams.min())
    states = list(lanczos_iter(Op(a), 200, 30, generator=gen(3), k_top=2, k_bottom=2, tol=1e-8))
    assert [s.iteration for s in states] == list(range(1, 31))
    prev = -math.inf
    for s in states:
        top, bound = s.top[0], s.top_bounds[0]
        assert top <= lmax + 1e-12 and top >= prev - 1e-12       # θ_max increases towards λ_max
        prev = top
        assert float(nearest_gap(torch.tensor([top], dtype=F64), lams)) <= bound + 1e-12
        assert s.bottom[0] >= lmin - 1e-12
    assert abs(states[-1].top[0] - lmax) < 1e-10 and states[-1].converged
    final = lanczos(Op(a), 200, 30, generator=gen(3)).ritz_values
    assert torch.allclose(states[-1].result().ritz_values, final, atol=1e-12)


# ------------------------------------------------------------------------------------------ extremes

def test_extremes_outliers_converge_fast():
    lams = spectra()["outliers_n200"]
    a = sym(lams, seed=6)
    op = Op(a)
    seen = []
    ex = extremes(op, 200, 3, 2, tol=1e-6, max_iter=200, generator=gen(4), on_step=seen.append)
    scale = float(lams.abs().max())
    assert ex.converged and ex.iterations <= 60 and len(op.calls) == ex.iterations
    top_true = lams.sort(descending=True).values[:3]
    bot_true = lams.sort().values[:2]
    assert torch.allclose(ex.top, top_true, rtol=0, atol=1e-6 * scale)
    assert torch.allclose(ex.bottom, bot_true, rtol=0, atol=1e-6 * scale)
    assert bool((ex.top_bounds <= 1e-6 * scale).all()) and bool((ex.bottom_bounds <= 1e-6 * scale).all())
    assert bool(((ex.top - top_true).abs() <= ex.top_bounds + 1e-12).all())
    assert len(seen) == ex.iterations


@pytest.mark.parametrize("name", ["indefinite_n60", "uniform_n400"])
def test_extremes_hard_spectra(name):
    lams = spectra()[name]
    n = lams.numel()
    a = sym(lams, seed=8)
    ex = extremes(Op(a), n, 2, 2, tol=1e-6, max_iter=200, generator=gen(9))
    truth = lams.sort().values
    scale = float(truth.abs().max())
    assert ex.converged and ex.iterations < min(n, 150)
    assert torch.allclose(ex.top, truth.flip(0)[:2], rtol=0, atol=1e-6 * scale)
    assert torch.allclose(ex.bottom, truth[:2], rtol=0, atol=1e-6 * scale)
    assert bool((nearest_gap(ex.top, truth) <= ex.top_bounds + 1e-12).all())


def test_extremes_low_rank_finds_repeated_zeros_by_restarting():
    n = 50
    lams = torch.zeros(n, dtype=F64)
    lams[:2] = torch.tensor([3.0, 1.0], dtype=F64)
    ex = extremes(Op(sym(lams, seed=1)), n, 5, 1, generator=gen(0))
    assert ex.breakdown and ex.restarts >= 2
    assert torch.allclose(ex.top, torch.tensor([3.0, 1.0, 0.0, 0.0, 0.0], dtype=F64), atol=1e-8)


# ------------------------------------------------------------------------------------------ SLQ

def test_slq_batched_is_one_matvec_per_step_and_equals_per_probe_loop():
    n, probes, k = 120, 6, 25
    a = sym(spectra()["outliers_n200"][:n], seed=10)
    op = Op(a)
    res = slq_density(op, n, num_probes=probes, num_iter=k, generator=gen(12), keep_probes=True)
    assert op.calls == [(probes, n)] * k
    one = slq_density(Op(a), n, num_probes=probes, num_iter=k, generator=gen(12), probe_batch=1)
    assert torch.allclose(res.probe_nodes, one.probe_nodes, atol=1e-10)
    assert torch.allclose(res.probe_weights, one.probe_weights, atol=1e-10)
    assert torch.allclose(res.density, one.density, atol=1e-10)
    for p in range(probes):                                # independent single-vector Lanczos runs
        single = lanczos(Op(a), n, k, v0=res.probes[p])
        assert torch.allclose(res.probe_nodes[p], single.ritz_values, atol=1e-10)
        assert torch.allclose(res.probe_weights[p], single.ritz_vectors_T[0] ** 2, atol=1e-10)


@pytest.mark.parametrize("name", list(spectra()))
def test_slq_density_integrates_to_one(name):
    lams = spectra()[name]
    n = lams.numel()
    res = slq_density(Op(sym(lams, seed=11)), n, num_probes=8, num_iter=30, generator=gen(13))
    assert torch.allclose(res.probe_weights.sum(dim=1), torch.ones(8, dtype=F64), atol=1e-12)
    assert abs(float(res.weights.sum()) - 1.0) < 1e-12
    assert abs(res.grid_mass - 1.0) < 1e-6
    assert abs(float(torch.trapezoid(res.density, res.grid)) - 1.0) < 1e-6
    width = float(res.nodes.max() - res.nodes.min())
    assert res.sigma == pytest.approx(0.01 * width)                      # the stated resolution


def test_slq_quadrature_is_exact_for_low_degree_moments():
    """Σ_j τ_j θ_j^m = vᵀ A^m v for m ≤ 2k − 1 (Gauss quadrature); fails if the weights are wrong."""
    n, k = 40, 4
    a = sym(spectra()["indefinite_n60"][:n], seed=12)
    res = slq_density(Op(a), n, num_probes=3, num_iter=k, generator=gen(14), keep_probes=True)
    v = res.probes / math.sqrt(n)
    for m in range(2 * k):
        exact = ((v @ torch.linalg.matrix_power(a, m)) * v).sum(dim=1)
        quad = (res.probe_weights * res.probe_nodes ** m).sum(dim=1)
        assert torch.allclose(quad, exact, rtol=1e-9, atol=1e-10)
    # the trace estimate is exactly Hutchinson's zᵀ A z per probe
    assert torch.allclose(res.trace_per_probe, ((res.probes @ a) * res.probes).sum(dim=1), rtol=1e-10)


SEEDS = range(6)


def _mean_z_scores(a: torch.Tensor, n: int) -> list[float]:
    truth = float(a.trace()) / n
    out = []
    for seed in SEEDS:
        res = slq_density(Op(a), n, num_probes=30, num_iter=15, generator=gen(100 + seed))
        mean = float((res.weights * res.nodes).sum())          # ∫ x dμ̂
        out.append(abs(mean - truth) / res.mean_stderr)
    return out


def _stat_matrix():
    lams = torch.cat([1.0 + torch.rand(95, generator=gen(7), dtype=F64), torch.tensor([9.0, 12.0, -3.0, -5.0, 20.0],
                                                                                         dtype=F64)])
    return sym(lams, seed=13), 100


def test_slq_mean_matches_trace_within_four_standard_errors():
    a, n = _stat_matrix()
    z = _mean_z_scores(a, n)
    assert max(z) < 4.0, z


def test_statistical_test_detects_dropped_weight_squaring(monkeypatch):
    """Mutation check: with τ_j = |S[0, j]| instead of S[0, j]² the same test must fail."""
    a, n = _stat_matrix()
    monkeypatch.setattr(lz, "_quadrature_weights", lambda s: s[..., 0, :].abs())
    z = _mean_z_scores(a, n)
    assert min(z) > 4.0, z


def test_slq_low_rank_breakdown_is_masked():
    n = 50
    lams = torch.zeros(n, dtype=F64)
    lams[:3] = torch.tensor([4.0, 1.5, -2.0], dtype=F64)
    a = sym(lams, seed=14)
    res = slq_density(Op(a), n, num_probes=5, num_iter=20, generator=gen(15), keep_probes=True)
    assert bool((res.probe_steps <= 5).all())
    heavy = res.probe_weights > 1e-12
    assert bool((nearest_gap(res.probe_nodes[heavy], lams) < 1e-8).all())
    v = res.probes / math.sqrt(n)
    for m in range(6):                                      # exact for every degree: μ_v has 4 atoms
        exact = ((v @ torch.linalg.matrix_power(a, m)) * v).sum(dim=1)
        assert torch.allclose((res.probe_weights * res.probe_nodes ** m).sum(dim=1), exact, atol=1e-10)
    assert abs(res.grid_mass - 1.0) < 1e-6


def test_slq_density_resembles_true_density():
    lams = spectra()["uniform_n400"]
    n = lams.numel()
    res = slq_density(Op(sym(lams, seed=15)), n, num_probes=20, num_iter=60, generator=gen(16), sigma=0.1)
    true = gaussian_density(lams, torch.full((n,), 1.0 / n, dtype=F64), res.grid, 0.1)
    l1 = float(torch.trapezoid((res.density - true).abs(), res.grid))
    assert res.sigma == 0.1 and l1 < 0.1


def test_slq_iter_streams_probe_batches():
    a = sym(spectra()["indefinite_n60"], seed=16)
    parts = list(slq_iter(Op(a), 60, num_probes=10, num_iter=12, probe_batch=4, generator=gen(17)))
    assert [p.num_probes for p in parts] == [4, 8, 10]
    assert math.isfinite(parts[0].trace_stderr)
    full = slq_density(Op(a), 60, num_probes=10, num_iter=12, generator=gen(17))
    assert torch.allclose(parts[-1].probe_nodes, full.probe_nodes, atol=1e-10)
    assert parts[-1].trace == pytest.approx(full.trace, rel=1e-12)
    single = slq_density(Op(a), 60, num_probes=1, num_iter=12, generator=gen(17))
    assert math.isnan(single.trace_stderr)


def test_vmapped_matvec_and_float32():
    """The caller's pattern: a single-vector product vmapped into a batched matvec; float32 works."""
    lams = spectra()["outliers_n200"]
    a32 = sym(lams, seed=17).float()
    mv = torch.func.vmap(lambda v: a32 @ v)
    ex = extremes(mv, 200, 1, 1, tol=1e-5, dtype=torch.float32, generator=gen(0))
    assert ex.top.dtype == torch.float32 and ex.converged
    assert abs(float(ex.top[0]) - 35.0) < 1e-4 and abs(float(ex.bottom[0]) + 15.0) < 1e-4
    res = slq_density(mv, 200, num_probes=4, num_iter=20, dtype=torch.float32, generator=gen(1))
    assert res.density.dtype == torch.float32 and abs(res.grid_mass - 1.0) < 1e-5


# ------------------------------------------------------------------- breakdown: restart, never "converged"
def test_extremes_find_every_copy_of_a_repeated_top_eigenvalue():
    """A breakdown (invariant subspace) is not convergence: Lanczos restarts and finds the copies."""
    lams = torch.tensor([3.0, 3.0, 3.0, 1.0, 1.0, 0.5, 0.5, -2.0], dtype=F64)
    ex = extremes(Op(sym(lams, seed=6)), 8, 3, 2, tol=1e-10, generator=gen(1))
    assert ex.breakdown and ex.restarts >= 1
    assert torch.allclose(ex.top, torch.tensor([3.0, 3.0, 3.0], dtype=F64), atol=1e-8), ex.top
    assert torch.allclose(ex.bottom, torch.tensor([-2.0, 0.5], dtype=F64), atol=1e-8), ex.bottom


@pytest.mark.parametrize("n", [1, 6, 15])
def test_an_exact_zero_residual_restarts_until_the_space_is_spanned(n):
    """The zero operator breaks down at every step with an exactly-zero residual (bounds exactly 0, on
    any CPU): with tol=0 Lanczos must still span R^n and return all n eigenvalues."""
    states = list(lanczos_iter(lambda v: torch.zeros_like(v), n, n, generator=gen(0), restart=True,
                               track=True, k_top=2, k_bottom=2, tol=0.0))
    assert not any(s.converged for s in states)
    assert states[-1].exact and states[-1].iteration == n and states[-1].restarts == n - 1
    res = states[-1].result()
    assert res.exact and torch.equal(res.ritz_values, torch.zeros(n, dtype=F64))
    # with tol > 0 a breakdown step is still not "converged" while a restart follows
    for s in lanczos_iter(lambda v: torch.zeros_like(v), n, n, generator=gen(0), restart=True, track=True,
                          tol=1e-6):
        assert not s.converged or s.iteration == n
