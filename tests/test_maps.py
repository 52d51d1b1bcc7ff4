"""Estimated whole-model views (hessexplore.maps): coupling maps and Φ from shared probes.

Every estimate is checked against the exact map of the same session in float64: each
value within 4 of its own standard errors (fixed seeds; the z-scores were checked to be
~N(0, 1) over seeds while writing these tests).  Also: the automatic choice, the cost
(k batched products per round, not k²), cancellation and reproducibility.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore import data, maps, models
from hessexplore.errors import JobCancelled
from hessexplore.operators import CurvatureOperator

F64 = torch.float64
CE = nn.CrossEntropyLoss()


def _mlp_session(**kw):
    torch.manual_seed(0)
    m = models.MLP(d_in=4, width=6, depth=3, d_out=3, activation="gelu", norm="layernorm").eval()
    return hx.Session(m, CE, data.blobs(16, d=4, classes=3, seed=0), dtype=F64, **kw)


def _cnn_session(**kw):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    m = models.randomize_batchnorm(models.SmallCNN(in_channels=1, size=8, channels=3, d_out=3), g)
    x = torch.randn(6, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (6,), generator=g)
    return hx.Session(m, CE, (x, y), dtype=F64, **kw)


@pytest.fixture(scope="module")
def mlp():
    return _mlp_session()


@pytest.fixture(scope="module")
def cnn():
    return _cnn_session()


def _within(est, exact, se, what, k=4.0, floor=0.0):
    """|est − exact| ≤ k·se (+ a rounding floor) entrywise where the exact value is defined."""
    ok = torch.isfinite(exact)
    assert bool(torch.isfinite(est[ok]).all()), f"{what}: estimate not finite where exact is"
    assert bool((se[ok] >= 0).all()), f"{what}: negative stderr"
    dev = (est - exact).abs()[ok]
    assert bool((dev <= k * se[ok] + floor).all()), \
        f"{what}: worst z = {float((dev / se[ok]).max()):.2f}\nexact {exact}\nest {est}\nse {se}"
    return float((dev / se[ok].clamp_min(1e-300)).max()) if dev.numel() else 0.0


CASES = [
    pytest.param("mlp", "activation", None, id="mlp-act"),
    pytest.param("mlp", "parameter", None, id="mlp-par"),
    pytest.param("cnn", "activation", ["conv1", "bn1", "conv2", "act2", "head"], id="cnn-act"),
    pytest.param("cnn", "parameter", None, id="cnn-par"),
]


@pytest.mark.parametrize("which,space,names", CASES)
def test_estimated_map_within_four_standard_errors_of_exact(request, which, space, names):
    s = request.getfixturevalue(which)
    if names is None:
        names = s.nodes[:6] if space == "activation" else s.groups
    ex = s.coupling_map(names, space=space, method="exact")
    est = s.coupling_map(names, space=space, method="estimate", probes=96, seed=3)
    assert ex.method == "exact" and est.method == "estimate" and est.probes == 96
    assert est.names == ex.names and est.done and "Hutchinson" in est.note
    assert torch.equal(est.distance, ex.distance)
    floor = 1e-12 * float(ex.R.max())     # float64 rounding of exact zeros (ReLU tensor parts)
    _within(est.R, ex.R, est.stderr["R"], "R", floor=floor)
    _within(est.norm_gn, ex.norm_gn, est.stderr["norm_gn"], "‖GN‖", floor=floor)
    _within(est.norm_tensor, ex.norm_tensor, est.stderr["norm_tensor"], "‖T‖", floor=floor)
    off = ~torch.eye(len(names), dtype=torch.bool)
    _within(est.C[off], ex.C[off], est.stderr["C"][off], "C")
    assert bool((est.C.diagonal() == 1).all()) and bool((est.stderr["C"].diagonal() == 0).all())
    ok = torch.isfinite(ex.gap) & (ex.norm_tensor > 1e-8 * ex.norm_gn)   # ReLU-exact zeros: separate test
    _within(est.gap[ok], ex.gap[ok], est.stderr["gap"][ok], "GN-Gap")
    assert bool(torch.isnan(est.D).all())                    # not estimated, and says so
    assert torch.equal(est.R, est.R.T)
    # the error bars are informative, not huge: relative se of R well below 1 with 96 probes
    rel = est.stderr["R"][ex.R > 0] / ex.R[ex.R > 0]
    assert float(rel.max()) < 0.5


def test_relu_zero_tensor_part_is_zero_in_the_estimate(cnn):
    """SCIENCE §3: piecewise-linear CNN, activation space: H^T ≡ 0, so the probes see ‖H^T z‖ ≈ 0."""
    est = cnn.coupling_map(["conv1", "bn1", "conv2"], method="estimate", probes=16)
    assert float(est.gap.max()) < 1e-12


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_estimated_phi_within_four_standard_errors(request, which):
    s = request.getfixturevalue(which)
    exact = s.phi(method="exact")
    est = s.phi(method="estimate", probes=128, seed=5)
    assert exact.method == "exact" and exact.stderr == 0.0
    assert est.method == "estimate" and est.probes == 128 and 0 < est.stderr < 0.1
    assert abs(est - exact) <= 4 * est.stderr, (est, exact)
    assert isinstance(est, float) and "± " in repr(est)


def test_phi_reports_progress_and_the_same_value_with_it(mlp):
    k = len(mlp.groups)
    seen = {"exact": [], "estimate": []}
    exact = mlp.phi(method="exact", progress=lambda *a: seen["exact"].append(a))
    est = mlp.phi(method="estimate", probes=20, progress=lambda *a: seen["estimate"].append(a))
    assert seen["exact"][-1] == (k * (k + 1) // 2,) * 2 and len(seen["exact"]) >= 2
    assert [d for d, _ in seen["exact"]] == sorted(d for d, _ in seen["exact"])
    assert seen["estimate"] == [(8, 20), (16, 20), (20, 20)]
    assert float(exact) == float(mlp.phi(method="exact")) and float(est) == float(mlp.phi(method="estimate", probes=20))


def test_phi_of_one_group_is_zero_without_products(mlp):
    assert mlp.phi(["*"], method="estimate") == 0.0


def test_automatic_choice_by_size():
    s = _mlp_session()
    assert s.coupling_map(s.nodes[:4]).method == "exact"
    assert s.phi().method == "exact"
    small = _mlp_session(max_exact_dim=4)           # nodes of 6 > 4 columns: estimate
    cm = small.coupling_map(small.nodes[:4], probes=8)
    assert cm.method == "estimate" and cm.probes == 8 and "stderr" not in cm.note
    assert small.phi(probes=8).method == "estimate"
    # many small nodes: Σ d_w over 4·max_exact_dim is estimated too
    assert maps.choose_method("auto", [6] * 10, 12) == "estimate"
    assert maps.choose_method("auto", [6] * 8, 12) == "exact"
    assert maps.choose_method("estimate", [1], 10) == "estimate"
    with pytest.raises(hx.HessExploreError, match="method must be one of"):
        s.coupling_map(method="dense")
    with pytest.raises(hx.BlockTooLargeError, match="method='estimate'"):
        small.coupling_map(small.nodes[:4], method="exact")


def test_shared_probes_cost_k_products_per_round(mlp, monkeypatch):
    calls = []
    real = CurvatureOperator.products

    def counting(self, w, T, out, full=True, gn=True):
        calls.append((tuple(w), T.shape[0], len(out), gn))
        return real(self, w, T, out, full=full, gn=gn)

    monkeypatch.setattr(CurvatureOperator, "products", counting)
    names = mlp.nodes[:5]
    snaps = list(mlp.iter_coupling_map(names, method="estimate", probes=20, batch_size=8))
    assert [c.probes for c in snaps] == [2, 10, 18, 20]    # a first map from 2 probes, then refining
    assert [T for _, T, _, _ in calls] == [2] * 5 + [8] * 10 + [2] * 5
    assert len(calls) == 5 * 4                             # k products per round, not k²
    assert all(n_out == 5 for _, _, n_out, _ in calls)     # each gives H_{u,w} z for every u
    calls.clear()
    mlp.phi(method="estimate", probes=8)
    assert len(calls) == len(mlp.groups) and not any(gn for *_, gn in calls)   # Φ: full products only


def test_estimates_are_reproducible_and_cancel(mlp):
    a = mlp.coupling_map(mlp.nodes[:3], method="estimate", probes=16, seed=7)
    b = mlp.coupling_map(mlp.nodes[:3], method="estimate", probes=16, seed=7)
    c = mlp.coupling_map(mlp.nodes[:3], method="estimate", probes=16, seed=8)
    assert torch.equal(a.R, b.R) and not torch.equal(a.R, c.R)
    polls = []

    def stop():
        polls.append(1)
        return len(polls) > 2
    with pytest.raises(JobCancelled):
        mlp.coupling_map(mlp.nodes[:3], method="estimate", probes=64, should_stop=stop)
    assert len(polls) == 3                     # stops before the third batched product


def test_stderr_shrinks_like_one_over_sqrt_probes(mlp):
    names = mlp.nodes[:3]
    snaps = list(mlp.iter_coupling_map(names, method="estimate", probes=256, batch_size=64, seed=2))
    assert [c.probes for c in snaps] == [2, 66, 130, 194, 256]
    r = float(snaps[1].stderr["R"][0, 1] / snaps[-1].stderr["R"][0, 1])
    assert 1.4 < r < 2.9, r                    # ≈ √(256/66) = 1.97
    assert not math.isnan(float(snaps[-1].stderr["C"][0, 1]))
