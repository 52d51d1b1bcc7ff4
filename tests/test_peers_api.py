"""What PyHessian, hessian-eigenthings and curvlinops compute, the hessexplore way: the whole-model
group ``"*"``, ``Session.trace`` (Hutchinson with a standard error), λ_max by Lanczos that stops as
soon as the top end meets the tolerance (``which="top"``, ``criterion="gap"``).

Oracle: the dense float64 Hessian over every parameter from an explicit per-row double-backward
loop (tests/oracles.py ``ParameterOracle.full_loop``) and its GN part, on a tiny tanh MLP; then
``eigvalsh`` / ``trace``.  Nothing here depends on timing or on the peers being installed.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore.operators import CurvatureOperator
from hessexplore import ArgumentError, Session, models
from hessexplore.errors import JobCancelled
from hessexplore.lanczos import extremes, rademacher
from hessexplore.spectra import TraceResult, hutchinson_trace

from oracles import ParameterOracle

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = models.MLP(4, 6, 2, 3, activation="tanh").to(F64).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, generator=g, dtype=F64)
    y = torch.randint(0, 3, (16,), generator=g)
    lf = nn.CrossEntropyLoss()
    s = Session(model, lf, (x, y))
    oracle = ParameterOracle(model, x, y, lf)
    H = oracle.full_loop
    H = (H + H.T) / 2
    return s, H, oracle.gn, oracle


def _probes(seed: int, m: int, n: int) -> torch.Tensor:
    """The probes Session.trace draws: a private generator seeded with ``seed``."""
    return rademacher(m, n, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --------------------------------------------------------------------------- the group "*"
def test_star_is_every_parameter(problem):
    s, H, _, _ = problem
    n = sum(p.numel() for p in s.model.parameters())
    assert s.dim("*", "parameter") == n == H.shape[0]
    sp = s.spectrum("*", method="exact")
    ev = torch.linalg.eigvalsh(H)
    assert float((sp.eigenvalues - ev).abs().max()) <= 1e-9 * float(ev.abs().max())
    assert sp.trace == pytest.approx(float(H.trace()), rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- Session.trace
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trace_within_four_standard_errors(problem, seed):
    s, H, _, _ = problem
    r = s.trace("*", probes=64, seed=seed)
    exact = float(H.trace())
    assert isinstance(r, TraceResult) and r.done and r.probes == 64 and r.matvecs == 64
    assert r.stderr > 0
    assert abs(r.value - exact) <= 4 * r.stderr, (r, exact)
    assert float(r) == r.value and r.mean == pytest.approx(r.value / H.shape[0])


@pytest.mark.parametrize("part", ["full", "gn", "tensor"])
def test_trace_samples_are_exact_quadratic_forms(problem, part):
    """Deterministic: every sample is zᵀ A z for the session's probes, A the oracle's part."""
    s, H, GN, _ = problem
    A = {"full": H, "gn": GN, "tensor": H - GN}[part]
    r = s.trace("*", probes=10, part=part, seed=3)
    Z = _probes(3, 10, H.shape[0])
    want = ((Z @ A) * Z).sum(1)
    assert torch.allclose(r.samples, want, rtol=1e-9, atol=1e-12 * float(A.abs().max()))
    assert r.value == pytest.approx(float(want.mean()), rel=1e-9, abs=1e-12)
    assert r.stderr == pytest.approx(float(want.std() / math.sqrt(10)), rel=1e-7)
    assert r.part == part and r.group == "*"


def test_trace_of_a_group_is_its_diagonal_block(problem):
    s, H, _, oracle = problem
    idx = oracle.indices("blocks.1")
    r = s.trace("blocks.1", probes=8, seed=0)
    A = H[idx][:, idx]
    Z = _probes(0, 8, idx.numel())
    assert r.n == idx.numel()
    assert r.value == pytest.approx(float(((Z @ A) * Z).sum(1).mean()), rel=1e-9, abs=1e-12)


def test_trace_streams_and_does_not_depend_on_batching(problem):
    s, _, _, _ = problem
    snaps = list(s.iter_trace("*", probes=10, batch_size=4, seed=5))
    assert [t.probes for t in snaps] == [4, 8, 10]
    assert [t.done for t in snaps] == [False, False, True]
    assert [t.matvecs for t in snaps] == [4, 8, 10]
    whole = s.trace("*", probes=10, seed=5)
    assert torch.allclose(snaps[-1].samples, whole.samples, rtol=1e-12, atol=1e-14)
    one = s.trace("*", probes=1, seed=5)
    assert math.isnan(one.stderr) and one.probes == 1


def test_a_first_trace_estimate_waits_for_no_measurement(problem, monkeypatch):
    """Where products must be sized by measuring (a tight memory budget here), the first estimate comes from
    2 plain products before any measurement; the batches after it do not change the samples."""
    s, _, _, _ = problem
    monkeypatch.setattr(s, "memory_budget", 64 * 1024)
    assert not s._fits_unmeasured(10)
    measured = []
    real = CurvatureOperator.memory_cost
    monkeypatch.setattr(CurvatureOperator, "memory_cost",
                        lambda self, *a, **kw: measured.append(1) or real(self, *a, **kw))
    snaps = []
    for t in s.iter_trace("*", probes=10, seed=5):
        snaps.append((t, len(measured)))
    assert snaps[0][0].probes == 2 and snaps[0][1] == 0 and snaps[-1][0].probes == 10
    assert snaps[-1][1] >= 1                       # the rest was sized by the memory model
    whole = s.trace("*", probes=10, seed=5, batch_size=10)
    assert torch.allclose(snaps[-1][0].samples, whole.samples, rtol=1e-12, atol=1e-14)


def test_trace_cancels_and_validates(problem):
    s, _, _, _ = problem
    with pytest.raises(JobCancelled):
        s.trace("*", probes=4, should_stop=lambda: True)
    with pytest.raises(ArgumentError):
        s.trace("*", probes=0)
    with pytest.raises(hx.HessExploreError):
        s.trace("*", part="diagonal")
    with pytest.raises(hx.UnknownNameError):
        s.trace("no_such_module")


def test_hutchinson_on_a_plain_matrix():
    """The matvec-level estimator: unbiased within 4 s.e. on a fixed symmetric matrix; exact for a diagonal
    one (zᵀ D z = tr D for every Rademacher z)."""
    g = torch.Generator().manual_seed(0)
    B = torch.randn(30, 30, generator=g, dtype=F64)
    A = B + B.T
    r = hutchinson_trace(lambda V: V @ A, 30, probes=200, seed=1)
    assert abs(r.value - float(A.trace())) <= 4 * r.stderr
    D = torch.diag(torch.arange(1.0, 31.0, dtype=F64))
    d = hutchinson_trace(lambda V: V @ D, 30, probes=5, seed=1)
    assert d.value == pytest.approx(float(D.trace()), rel=1e-14) and d.stderr == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- λ_max
def test_lambda_max_exact_to_tolerance(problem):
    s, H, _, _ = problem
    lam = float(torch.linalg.eigvalsh(H)[-1])
    sp = s.spectrum("*", method="lanczos", k=1, tol=1e-10, which="top")
    assert sp.converged and sp.method == "lanczos"
    assert abs(float(sp.top[0]) - lam) <= 1e-9 * abs(lam)


@pytest.mark.parametrize("criterion", ["residual", "gap"])
def test_lambda_max_meets_tol_and_stops_early(problem, criterion):
    s, H, _, _ = problem
    ev = torch.linalg.eigvalsh(H)
    lam, scale = float(ev[-1]), float(ev.abs().max())
    tol = 1e-4
    top = s.spectrum("*", method="lanczos", k=1, tol=tol, which="top", criterion=criterion)
    both = s.spectrum("*", method="lanczos", k=1, tol=tol, which="both", criterion=criterion)
    assert top.converged and both.converged
    theta, bound = float(top.top[0]), float(top.top_bounds[0])
    assert theta <= lam + 1e-12 * scale                      # a Ritz value is an inner estimate
    assert lam - theta <= tol * scale                        # the answer meets the tolerance
    assert top.stats["lambda_max"] == theta and top.errors["lambda_max"] == bound
    if criterion == "residual":
        assert bound <= tol * scale * (1 + 1e-12)
    assert top.matvecs <= both.matvecs
    assert "top end" in top.note


def test_gap_criterion_stops_no_later_than_residual(problem):
    s, _, _, _ = problem
    res = s.spectrum("*", method="lanczos", k=1, tol=1e-6, which="top")
    gap = s.spectrum("*", method="lanczos", k=1, tol=1e-6, which="top", criterion="gap")
    assert gap.lanczos_iterations <= res.lanczos_iterations
    assert "r²/gap" in gap.note


def test_extremes_top_only_with_gap_criterion():
    """The matvec-level λ_max: k_bottom=0 and criterion='gap' on a matrix with a known spectrum."""
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=F64))
    lam = torch.cat([torch.tensor([10.0, 6.0], dtype=F64), torch.linspace(-1, 3, 198, dtype=F64)])
    A = (Q * lam) @ Q.T
    r = extremes(lambda V: V @ A, 200, k_top=1, k_bottom=0, tol=1e-8, criterion="gap",
                 generator=torch.Generator().manual_seed(1))
    assert r.converged and abs(float(r.top[0]) - 10.0) <= 1e-8 * 10.0
    assert r.iterations < 200


def test_which_and_criterion_are_checked(problem):
    s, _, _, _ = problem
    with pytest.raises(ArgumentError):
        s.spectrum("*", method="lanczos", which="sideways")
    with pytest.raises(ArgumentError):
        s.spectrum("*", method="lanczos", criterion="vibes")
