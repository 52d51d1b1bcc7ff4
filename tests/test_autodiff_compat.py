"""Second derivatives everywhere: backend settings, substitutes, fallbacks and clear errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.function import once_differentiable

import hessexplore as hx
import oracles as O
from hessexplore.compat import curvature_mode
from hessexplore.errors import AutodiffError, JobCancelled

F64 = torch.float64
CE = nn.CrossEntropyLoss()


class Square(torch.autograd.Function):
    """x² with a differentiable backward but no jvp and no vmap rule (old-style Function)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class SquareOnce(Square):
    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class WithFunction(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.a, self.b, self.fn = nn.Linear(3, 4), nn.Linear(4, 3), fn

    def forward(self, x):
        return self.b(self.fn.apply(self.a(x)))


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, generator=g, dtype=F64), torch.randint(0, 3, (6,), generator=g)


def test_an_op_without_forward_ad_or_vmap_rule_falls_back_to_double_backward():
    torch.manual_seed(0)
    model = WithFunction(Square).to(F64).eval()
    x, y = _batch()
    s = hx.Session(model, CE, (x, y), trace=False)     # the Function runs as it is (not traced away)
    b = s.block("a", "b", space="parameter")
    o = O.ParameterOracle(model, x, y, CE).block("a", "b")
    O.assert_rel(b.full, o["full"], 1e-10)
    O.assert_rel(b.gn, o["gn"], 1e-10, scale=O.fro(o["full"]) + O.fro(o["gn"]))
    op = next(iter(s._ops.values()))
    assert op.mode == "double-backward"      # exact sweeps run on the recorded graph
    # the stateless operator has no forward-mode rule for the Function: it switches to double backward
    atoms = s._atoms("a", "parameter") + s._atoms("b", "parameter")
    fo = s.operator(atoms, "parameter", mode="forward-over-reverse")
    T = torch.eye(fo.dim(atoms), dtype=F64)[:5]
    got = fo.products(atoms, T, atoms)
    assert fo.mode == "double-backward" and "double backward" in fo.fallback
    ref = op.products(atoms, T, atoms)
    torch.testing.assert_close(got.rows("full", atoms), ref.rows("full", atoms), rtol=1e-12, atol=1e-14)


def test_an_op_without_second_derivative_is_a_clear_error_not_a_zero():
    torch.manual_seed(0)
    model = WithFunction(SquareOnce).to(F64).eval()
    s = hx.Session(model, CE, _batch(), trace=False)
    with pytest.raises(AutodiffError, match=r"'a\.weight'.*once_differentiable"):
        s.block("a", "a", space="parameter")
    # the session stays usable for what does not cross the Function
    assert s.block("b", "b", space="parameter").shape == (15, 15)


def _flags():
    return (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
            torch.backends.cuda.math_sdp_enabled(), torch.backends.mha.get_fastpath_enabled(),
            torch._C._get_mkldnn_enabled())


def test_curvature_mode_sets_math_kernels_and_restores_them_on_error_and_cancel():
    before = _flags()
    with curvature_mode():
        inside = _flags()
        with curvature_mode():          # re-entrant
            pass
        assert _flags() == inside
    assert inside[0] is False and inside[1] is False and inside[2] is True and inside[3] is False
    assert inside[4] is False
    assert _flags() == before
    with pytest.raises(ZeroDivisionError):
        with curvature_mode():
            1 / 0
    assert _flags() == before
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).to(F64).eval()
    s = hx.Session(model, CE, _batch(), memory_budget=1)
    with pytest.raises(JobCancelled):
        s.block("0", "0", should_stop=lambda: True)
    assert _flags() == before


def test_attention_models_work_with_the_fast_paths_on_outside():
    """nn.TransformerEncoderLayer's fast path and fused SDPA are on for the user's forward; blocks still work."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoder(layer, 1, enable_nested_tensor=False),
                          nn.Flatten(), nn.Linear(40, 3)).eval()
    x = torch.randn(3, 5, 4)
    y = torch.randint(0, 3, (3,))
    assert torch.backends.mha.get_fastpath_enabled()
    s = hx.Session(model, CE, (x, y))
    b = s.block("1.layers.0.self_attn", "1.layers.0")
    assert b.shape == (40, 40) and torch.isfinite(b.full).all() and b.resonance > 0
    assert torch.backends.mha.get_fastpath_enabled()


def test_hardsigmoid_is_substituted_in_the_captured_graph_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Hardsigmoid(), nn.Linear(5, 3)).to(F64).eval()
    x, y = _batch()
    x = 3 * x     # reach the flat parts too
    s = hx.Session(model, CE, (x, y))
    assert s.graph.capture.substituted and isinstance(model[1], nn.Hardsigmoid)
    b = s.block("0", "0")
    fd = O.ActivationOracle(model, x, y, CE).block_fd("0", "0")
    O.assert_rel(b.full, fd, 1e-6)
    bp = s.block("0", "2", space="parameter")
    fdp = O.ParameterOracle(model, x, y, CE).block_fd("0", "2")
    O.assert_rel(bp.full, fdp, 1e-6)


def test_a_hard_coded_batch_size_prints_no_traceback(capfd):
    """The batch-1 probe of per-sample shapes fails on such a model; it must fail quietly."""

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)).view(6, 4))

    torch.manual_seed(0)
    s = hx.Session(Fixed().to(F64).eval(), CE, _batch())
    assert "a" in s.nodes and s.block("a", "b").shape == (4, 3)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err
