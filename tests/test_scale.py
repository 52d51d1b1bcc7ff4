"""Scale-aware ratios: GN-Gap and C relative to the block's own norms (issue 12, item 4).

Multiplying the loss by c > 0 multiplies every block by c; a ratio of a block's norms
must not move.  With the old absolute 1e-12 (‖H^T‖/(‖H^GN‖ + 1e-12), C NaN below 1e-12)
these tests fail: at loss × 1e-8 the gap moves in its 4th digit, at × 1e-14 C is NaN.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore import data, metrics, models

F64 = torch.float64


class Scaled(nn.Module):
    """c · CrossEntropy (a mean over the batch)."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c
        self.ce = nn.CrossEntropyLoss()

    def forward(self, z, y):
        return self.c * self.ce(z, y)


def _session(c: float, space_model="gelu"):
    torch.manual_seed(0)
    m = models.MLP(d_in=4, width=6, depth=2, d_out=3, activation=space_model, norm="layernorm").eval()
    return hx.Session(m, Scaled(c), data.blobs(12, d=4, classes=3, seed=0), dtype=F64)


@pytest.fixture(scope="module")
def pair():
    return _session(1.0), _session(1e-8), _session(1e-14)


V, W = "blocks.0.0", "blocks.1.0"


@pytest.mark.parametrize("space,v,w", [("activation", V, W), ("parameter", "blocks.0.0", "head")])
def test_exact_gap_and_coupling_are_scale_free(pair, space, v, w):
    s1, s8, s14 = pair
    b1, b8 = s1.block(v, w, space=space), s8.block(v, w, space=space)
    assert b8.resonance == pytest.approx(1e-8 * b1.resonance, rel=1e-12)        # the blocks do scale
    assert 0 < b1.gn_gap and b8.gn_gap == pytest.approx(b1.gn_gap, rel=1e-10)
    c1 = s1.coupling(v, w, space=space)
    assert math.isfinite(c1)
    assert s8.coupling(v, w, space=space) == pytest.approx(c1, rel=1e-10)
    assert s14.coupling(v, w, space=space) == pytest.approx(c1, rel=1e-10)   # NaN with an absolute 1e-12
    assert s14.block(v, w, space=space).gn_gap == pytest.approx(b1.gn_gap, rel=1e-10)
    m1, m8 = s1.coupling_map([v, w], space=space), s8.coupling_map([v, w], space=space)
    assert torch.allclose(m8.gap, m1.gap, rtol=1e-10, atol=0)
    assert torch.allclose(m8.C, m1.C, rtol=1e-10, atol=0)


def test_estimated_gap_and_coupling_are_scale_free(pair):
    s1, s8, _ = pair
    a = list(s1.estimate(V, W, probes=32, seed=3))[-1]
    b = list(s8.estimate(V, W, probes=32, seed=3))[-1]
    for name in ("gn_gap", "coupling"):
        ea, eb = getattr(a, name), getattr(b, name)
        assert math.isfinite(ea.value) and eb.value == pytest.approx(ea.value, rel=1e-9), name
        assert eb.stderr == pytest.approx(ea.stderr, rel=1e-6), name
    ma = s1.coupling_map([V, W, "head"], method="estimate", probes=16, seed=1)
    mb = s8.coupling_map([V, W, "head"], method="estimate", probes=16, seed=1)
    assert torch.allclose(mb.gap, ma.gap, rtol=1e-9, atol=0) and torch.allclose(mb.C, ma.C, rtol=1e-9, atol=0)
    assert torch.allclose(mb.stderr["C"], ma.stderr["C"], rtol=1e-6, atol=0)
    assert s8.phi(method="estimate", probes=16) == pytest.approx(s1.phi(method="estimate", probes=16), rel=1e-9)


def test_undefined_ratios_are_nan_with_a_reason():
    assert math.isnan(metrics.gn_gap_from_norms(0.0, 0.0))
    assert "zero block" in metrics.gap_reason(0.0, 0.0)
    assert math.isnan(metrics.gn_gap_from_norms(1e-30, 0.0))             # pure tensor part, any scale
    assert "Gauss–Newton part is zero" in metrics.gap_reason(1e-30, 0.0)
    assert metrics.gn_gap_from_norms(1e-30, 1e-30) == 1.0                   # tiny but well-defined
    assert metrics.gap_reason(1e-30, 1e-30) is None
    assert metrics.gn_gap_from_norms(0.0, 1e-300) == 0.0                    # GN only: gap 0
    assert math.isnan(metrics.coupling_from_norms(0.0, 0.0, 0.0))
    assert "zero block" in metrics.coupling_reason(0.0, 0.0, 0.0)
    assert math.isnan(metrics.coupling_from_norms(1.0, 0.0, 1.0))
    assert "H_vv" in metrics.coupling_reason(1.0, 0.0, 1.0)
    assert metrics.coupling_from_norms(2e-20, 1e-20, 4e-20) == pytest.approx(1.0)
    # float32 rounding is not a denominator: relative tolerance follows the dtype
    assert metrics.rel_tol(torch.float32) > 1e-6 > metrics.rel_tol(F64) == 1e-12
    assert math.isnan(metrics.gn_gap(torch.ones(2, 2), torch.full((2, 2), 1e-8)))
    assert metrics.gn_gap(torch.ones(2, 2, dtype=F64), torch.full((2, 2), 1e-8, dtype=F64)) == pytest.approx(1e8)


def test_block_notes_say_why_a_metric_is_nan():
    torch.manual_seed(0)
    # a node the loss does not depend on (multiplied by zero): its blocks are exactly zero
    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.a(x) + 0.0 * self.b(x))

    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    s = hx.Session(Dead().eval(), nn.CrossEntropyLoss(), (x, y), dtype=F64)
    b = s.block("b", "b")
    assert b.resonance == 0 and math.isnan(b.gn_gap) and "zero block" in b.notes["gn_gap"]
    assert math.isnan(s.coupling("a", "b"))
    ok = s.block("a", "head")
    assert ok.notes == {} and math.isfinite(ok.gn_gap)
