"""spectrum_stats / density_histogram / stats_from_density on hand-computed spectra."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from hessexplore.lanczos import slq_density
from hessexplore.spectral_stats import (NOT_ESTIMABLE_FROM_DENSITY, density_histogram, spectrum_stats,
                                        stats_from_density)

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
SCALARS = ["lambda_max", "lambda_min", "trace", "frobenius", "negative_fraction", "negative_mass",
           "abs_min_over_max", "condition_number", "spectral_entropy", "effective_rank", "stable_rank",
           "numerical_rank"]


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-14)


def nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def test_hand_computed_3_1_0_minus1():
    s = spectrum_stats(torch.tensor([3.0, 1.0, 0.0, -1.0], dtype=F64))
    assert s["n"] == 4 and s["eps"] == 4 * EPS64 and s["tol"] == approx(4 * EPS64 * 3.0)
    assert s["lambda_max"] == 3.0 and s["lambda_min"] == -1.0
    assert s["trace"] == 3.0
    assert s["frobenius"] == approx(math.sqrt(11.0))
    assert s["numerical_rank"] == 3                       # {3, 1, −1}; the 0 is below τ
    assert s["negative_fraction"] == approx(1 / 3)        # 1 of the 3 non-zero
    assert s["negative_mass"] == approx(1 / 5)            # |−1| / (3 + 1 + 1)
    assert s["abs_min_over_max"] == approx(1 / 3)
    assert s["condition_number"] == approx(3.0)           # 3 / 1 (positive part)
    # p = (3, 1, 1)/5: H = −(0.6 ln 0.6 + 2 · 0.2 ln 0.2)
    assert s["spectral_entropy"] == approx(0.9502705392332347)
    assert s["effective_rank"] == approx(2.586409289858933)
    assert s["stable_rank"] == approx(11 / 9)
    assert s["top_k"] == [3.0, 1.0, 0.0, -1.0]            # k = 5 > n
    # |λ| = (3, 1, 0, 1): median 1, MAD = median(2, 0, 1, 0) = 0.5 → cut 1 + 5·0.5 = 3.5
    assert s["outlier_threshold"] == approx(3.5) and s["outliers"] == []


def test_hand_computed_with_tiny_eigenvalue_and_explicit_eps():
    lam = [2.0, -3.0, 1.0, 1e-9]
    s = spectrum_stats(lam, eps=1e-6)                     # τ = 3e-6: 1e-9 counts as zero
    assert s["tol"] == approx(3e-6) and s["numerical_rank"] == 3
    assert s["negative_fraction"] == approx(1 / 3) and s["negative_mass"] == approx(0.5)
    assert s["condition_number"] == approx(2.0)           # 2 / 1
    assert s["abs_min_over_max"] == approx(1.5)
    assert s["spectral_entropy"] == approx(1.0114042647073516)   # p = (2, 3, 1)/6
    assert s["effective_rank"] == approx(2.749459273997205)
    assert s["stable_rank"] == pytest.approx((14 + 1e-18) / 9, rel=1e-12)
    s0 = spectrum_stats(lam, eps=0.0)                     # no tolerance: 1e-9 is a 4th eigenvalue
    assert s0["numerical_rank"] == 4 and s0["condition_number"] == approx(2e9)


def test_outliers_robust_rule():
    lam = [100.0, 1.0, 1.1, 0.9, 1.05, 0.95, -1.0]
    s = spectrum_stats(lam)
    # |λ| sorted (0.9, 0.95, 1, 1, 1.05, 1.1, 100): median 1; deviations median 0.05 → cut 1.25
    assert s["outlier_threshold"] == approx(1.25)
    assert s["outliers"] == [100.0]
    s2 = spectrum_stats([1.0, 1.0, 1.0, 1.0, -40.0, 30.0, 1.0])   # MAD = 0; both signs count
    assert s2["outliers"] == [-40.0, 30.0]
    assert spectrum_stats([1.0] * 6)["outliers"] == []              # exact ties: τ floor


def test_top_k_order_and_size():
    lam = torch.tensor([0.5, 4.0, -2.0, 3.0, 1.0, 2.0, 7.0], dtype=F64)
    assert spectrum_stats(lam, top_k=3)["top_k"] == [7.0, 4.0, 3.0]
    assert spectrum_stats(lam)["top_k"] == [7.0, 4.0, 3.0, 2.0, 1.0]


def _no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            return fn(*args, **kwargs)


def test_all_zero_spectrum_gives_nan_not_errors():
    s = _no_warnings(spectrum_stats, torch.zeros(4, dtype=F64))
    assert s["tol"] == 0.0 and s["numerical_rank"] == 0
    assert s["lambda_max"] == 0.0 and s["lambda_min"] == 0.0 and s["trace"] == 0.0 and s["frobenius"] == 0.0
    for key in ["negative_fraction", "negative_mass", "abs_min_over_max", "condition_number",
                "spectral_entropy", "effective_rank", "stable_rank"]:
        assert nan(s[key]), key
    assert s["outliers"] == [] and s["top_k"] == [0.0] * 4


def test_single_eigenvalue():
    s = _no_warnings(spectrum_stats, [3.0])
    assert s["n"] == 1 and s["numerical_rank"] == 1 and s["trace"] == 3.0 and s["frobenius"] == 3.0
    assert s["negative_fraction"] == 0.0 and s["negative_mass"] == 0.0
    assert s["abs_min_over_max"] == 1.0 and s["condition_number"] == 1.0
    assert s["spectral_entropy"] == 0.0 and s["effective_rank"] == 1.0 and s["stable_rank"] == 1.0
    assert s["top_k"] == [3.0] and s["outliers"] == []
    neg = _no_warnings(spectrum_stats, [-2.0])
    assert neg["negative_fraction"] == 1.0 and neg["negative_mass"] == 1.0
    assert nan(neg["abs_min_over_max"]) and nan(neg["condition_number"])


def test_all_negative_spectrum():
    s = _no_warnings(spectrum_stats, np.array([-1.0, -2.0, -3.0]))
    assert s["lambda_max"] == -1.0 and s["lambda_min"] == -3.0 and s["trace"] == -6.0
    assert s["negative_fraction"] == 1.0 and s["negative_mass"] == 1.0
    assert nan(s["abs_min_over_max"]) and nan(s["condition_number"])     # no positive part
    assert s["stable_rank"] == approx(14 / 9)
    assert s["spectral_entropy"] == approx(-sum(p * math.log(p) for p in (1 / 6, 2 / 6, 3 / 6)))


def test_default_eps_follows_input_dtype():
    lam32 = torch.tensor([1.0, 1e-7, -0.5], dtype=torch.float32)
    s = spectrum_stats(lam32)
    eps32 = torch.finfo(torch.float32).eps
    assert s["eps"] == approx(3 * eps32) and s["tol"] == approx(3 * eps32)
    assert s["numerical_rank"] == 2                       # τ = 3·1.19e-7 = 3.6e-7 > 1e-7: a zero
    s64 = spectrum_stats(lam32.double())
    assert s64["numerical_rank"] == 3 and s64["eps"] == 3 * EPS64
    assert spectrum_stats([1, 0, -2])["eps"] == 3 * EPS64          # integers count as float64


def test_input_validation():
    for bad in ([], [[1.0, 2.0]], [1.0, float("nan")], [float("inf")]):
        with pytest.raises(ValueError):
            spectrum_stats(bad)


def test_dense_matrix_identities_and_order_invariance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 30, generator=g, dtype=F64)
    a = (x + x.T) / 2
    lam = torch.linalg.eigvalsh(a)
    s = spectrum_stats(lam)
    assert s["trace"] == pytest.approx(float(a.trace()), rel=1e-12, abs=1e-12)
    assert s["frobenius"] == pytest.approx(float(torch.linalg.matrix_norm(a)), rel=1e-12)
    assert s["stable_rank"] == pytest.approx(float(torch.linalg.matrix_norm(a) ** 2 /
                                                   torch.linalg.matrix_norm(a, ord=2) ** 2), rel=1e-12)
    assert 1.0 <= s["effective_rank"] <= s["numerical_rank"] == 30
    shuffled = spectrum_stats(lam[torch.randperm(30, generator=g)].numpy())
    for key in SCALARS:
        assert shuffled[key] == pytest.approx(s[key], rel=1e-12), key


def test_entropy_of_flat_spectrum_is_log_rank():
    s = spectrum_stats([2.0, -2.0, 2.0, 0.0, 0.0])
    assert s["spectral_entropy"] == approx(math.log(3)) and s["effective_rank"] == approx(3.0)


# ------------------------------------------------------------------------------------------ histogram

def test_histogram_hand_computed():
    edges, dens = density_histogram([0.0, 1.0, 1.0, 2.0, 3.0], 3)
    # bins [0,1), [1,2), [2,3] → counts 1, 2, 2; density = count / (5 · 1)
    assert torch.equal(edges, torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=F64))
    assert torch.allclose(dens, torch.tensor([0.2, 0.4, 0.4], dtype=F64))


def test_histogram_integrates_to_one_and_edge_cases():
    lam = torch.randn(1000, generator=torch.Generator().manual_seed(1), dtype=F64)
    edges, dens = density_histogram(lam, 37)
    assert float((dens * edges.diff()).sum()) == pytest.approx(1.0, abs=1e-12)
    edges, dens = density_histogram(lam, torch.tensor([-10.0, -1.0, 0.0, 0.5, 10.0]))  # uneven edges
    assert float((dens * edges.diff()).sum()) == pytest.approx(1.0, abs=1e-12)
    edges, dens = density_histogram([2.0, 2.0, 2.0], 4)    # all equal: range widened by ±½
    assert float(edges[0]) == 1.5 and float(edges[-1]) == 2.5
    assert float((dens * edges.diff()).sum()) == pytest.approx(1.0)
    edges, dens = density_histogram([0.0, 1.0, 5.0], 2, range=(0.0, 2.0))   # 5 is outside
    assert torch.allclose(dens, torch.tensor([0.5, 0.5], dtype=F64))
    with pytest.raises(ValueError):
        density_histogram([1.0], torch.tensor([1.0, 0.0]))


# ------------------------------------------------------------------------------------------ density stats

def test_stats_from_density_hand_computed():
    # atoms 3 (w 0.25), 1 (0.25), 0 (0.25), −1 (0.25), n = 4: same spectrum as the first test
    d = stats_from_density([3.0, 1.0, 0.0, -1.0], [1.0, 1.0, 1.0, 1.0], 4)   # weights normalised
    assert d["trace"] == approx(3.0) and d["frobenius"] == approx(math.sqrt(11.0))
    assert d["negative_fraction"] == approx(1 / 3) and d["negative_mass"] == approx(1 / 5)
    assert d["numerical_rank"] == approx(3.0)
    assert d["spectral_entropy"] == approx(0.9502705392332347)
    assert d["stable_rank"] == approx(11 / 9) and d["abs_min_over_max"] == approx(1 / 3)
    assert d["not_estimable"] == list(NOT_ESTIMABLE_FROM_DENSITY)
    # a density for n = 100 with atoms at 2 (w 0.3) and −1 (w 0.7)
    d = stats_from_density([2.0, -1.0], [0.3, 0.7], 100)
    assert d["trace"] == approx(100 * (0.6 - 0.7))
    assert d["negative_mass"] == approx(0.7 / 1.3) and d["negative_fraction"] == approx(0.7)
    p2, p1 = 2.0 / 130.0, 1.0 / 130.0                     # S = 100 · 1.3; 30 eigenvalues of p2, 70 of p1
    assert d["spectral_entropy"] == approx(-(30 * p2 * math.log(p2) + 70 * p1 * math.log(p1)))


def test_stats_from_density_reproduces_dense_stats():
    lam = torch.cat([torch.linspace(-1.0, 2.0, 40, dtype=F64), torch.zeros(10, dtype=F64)])
    s = spectrum_stats(lam)
    d = stats_from_density(lam, torch.full((50,), 1 / 50, dtype=F64), 50)
    for key in SCALARS:
        if key in NOT_ESTIMABLE_FROM_DENSITY:
            assert key not in d
        else:
            assert d[key] == pytest.approx(s[key], rel=1e-10), key


def test_stats_from_slq_density():
    g = torch.Generator().manual_seed(3)
    n = 80
    lam = torch.cat([torch.rand(76, generator=g, dtype=F64) - 0.3, torch.tensor([6.0, 9.0, -4.0, 12.0], dtype=F64)])
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    a = (q * lam) @ q.T
    res = slq_density(lambda v: v @ a, n, num_probes=40, num_iter=30, generator=g)
    d = stats_from_density(res.nodes, res.weights, n)
    assert d["trace"] == pytest.approx(res.trace, rel=1e-10)
    s = spectrum_stats(lam)
    assert abs(d["trace"] - s["trace"]) < 4 * res.trace_stderr
    assert d["negative_mass"] == pytest.approx(s["negative_mass"], abs=0.1)
    assert d["lambda_max"] <= s["lambda_max"] + 1e-10 and d["lambda_max"] == pytest.approx(12.0, abs=1e-6)
    assert d["frobenius"] == pytest.approx(s["frobenius"], rel=0.15)


def test_stats_from_density_validation():
    with pytest.raises(ValueError):
        stats_from_density([1.0, 2.0], [0.5], 2)
    with pytest.raises(ValueError):
        stats_from_density([1.0, 2.0], [0.5, -0.1], 2)
    d = _no_warnings(stats_from_density, [0.0, 0.0], [0.5, 0.5], 10)
    assert d["trace"] == 0.0 and nan(d["negative_mass"]) and nan(d["spectral_entropy"]) and nan(d["stable_rank"])
