"""Bad input raises a HessExploreError subclass whose message says what is wrong and what to do.

Every message is checked for key words (the fix it suggests) and for the absence of a raw
torch traceback; after an error the session must keep working.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hessexplore as hx
from hessexplore import data, models

F64 = torch.float64
CE = nn.CrossEntropyLoss()


def batch(n=8):
    return data.blobs(n, d=8, classes=3, seed=0)


def mlp(**kw):
    torch.manual_seed(0)
    return models.MLP(d_in=8, width=6, depth=2, d_out=3, **kw).eval()


def raises(exc_type, fn, *keywords):
    """Call fn, expect exc_type (a HessExploreError), check the message; return it."""
    with pytest.raises(exc_type) as info:
        fn()
    err = info.value
    assert isinstance(err, hx.HessExploreError)
    assert isinstance(err, ValueError)
    msg = str(err)
    assert msg and len(msg) < 2000
    # no raw traceback / internal frames in the message
    for marker in ("Traceback", 'File "', "site-packages", "torch/fx/", "\n  "):
        assert marker not in msg, (marker, msg)
    for kw in keywords:
        assert kw.lower() in msg.lower(), (kw, msg)
    return msg


# ---------------------------------------------------------------------------------------------
# model state
# ---------------------------------------------------------------------------------------------
def test_train_mode_batchnorm_is_refused():
    model = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    assert model.training
    msg = raises(hx.ModelStateError, lambda: hx.Session(model, CE, batch()), "eval()", "BatchNorm", "'1'")
    assert "train mode" in msg
    s = hx.Session(model.eval(), CE, batch(), dtype=F64)       # the suggested fix works
    assert s.block("1", "1").shape == (6, 6)


def test_train_mode_batchnorm_in_a_submodule_is_refused():
    model = models.randomize_batchnorm(models.SmallCNN())
    model.bn2.train()
    raises(hx.ModelStateError, lambda: hx.Session(model, CE, data.images(4)), "eval()", "bn2")


def test_train_mode_dropout_is_refused():
    model = nn.Sequential(nn.Linear(8, 6), nn.Dropout(0.2), nn.Linear(6, 3))
    raises(hx.ModelStateError, lambda: hx.Session(model, CE, batch()), "eval()", "Dropout")
    hx.Session(model.eval(), CE, batch())


def test_nan_weight_at_creation_names_the_parameter():
    model = mlp()
    with torch.no_grad():
        model.blocks[1][0].weight[2, 3] = float("nan")
    raises(hx.ModelStateError, lambda: hx.Session(model, CE, batch()), "'blocks.1.0.weight'", "NaN")
    with torch.no_grad():
        model.blocks[1][0].weight[2, 3] = 0.0
        model.head.bias[0] = float("inf")
    raises(hx.ModelStateError, lambda: hx.Session(model, CE, batch(), dtype=F64), "'head.bias'", "Inf")


def test_weights_that_become_nan_after_creation_are_caught():
    model = mlp().double()
    s = hx.Session(model, CE, batch(), dtype=F64)      # same dtype: the session reads the live weights
    ok = s.block("blocks.0.0", "head")
    ok_p = s.block("head", "head", space="parameter")
    keep = model.blocks[0][0].weight.detach().clone()
    with torch.no_grad():
        model.blocks[0][0].weight[0, 0] = float("nan")
    name = "'blocks.0.0.weight'"
    raises(hx.ModelStateError, lambda: s.block("blocks.0.0", "head"), name)
    raises(hx.ModelStateError, lambda: s.block("head", "head", space="parameter"), name)
    raises(hx.ModelStateError, lambda: next(iter(s.estimate("blocks.0.0", "head", probes=8))), name)
    raises(hx.ModelStateError, lambda: s.coupling_map(["blocks.0.0", "head"]), name)
    raises(hx.ModelStateError, lambda: s.phi(), name)
    with torch.no_grad():
        model.blocks[0][0].weight.copy_(keep)
    again = s.block("blocks.0.0", "head")
    assert torch.equal(again.full, ok.full) and torch.equal(again.gn, ok.gn)
    assert torch.equal(s.block("head", "head", space="parameter").full, ok_p.full)


def test_nan_or_inf_in_inputs():
    x, y = batch()
    x[3, 1] = float("nan")
    raises(hx.HessExploreError, lambda: hx.Session(mlp(), CE, (x, y)), "NaN")
    x[3, 1] = float("inf")
    raises(hx.HessExploreError, lambda: hx.Session(mlp(), CE, (x, y)), "Inf")


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------
def test_sum_reduced_module_loss():
    raises(hx.LossError, lambda: hx.Session(mlp(), nn.CrossEntropyLoss(reduction="sum"), batch()),
           "reduction='mean'", "sum")
    raises(hx.LossError, lambda: hx.Session(mlp(), nn.MSELoss(reduction="sum"),
                                            (batch()[0], torch.zeros(8, 3))), "mean")


def test_sum_reduced_hand_written_loss():
    def loss(z, y):
        return F.cross_entropy(z, y, reduction="sum")
    raises(hx.LossError, lambda: hx.Session(mlp(), loss, batch()), "sum", "mean")
    raises(hx.LossError, lambda: hx.Session(mlp(), lambda z, y: ((z - y) ** 2).sum(),
                                            (batch()[0], torch.randn(8, 3))), "sum", "mean")


def test_loss_returning_a_vector():
    raises(hx.LossError, lambda: hx.Session(mlp(), lambda z, y: F.cross_entropy(z, y, reduction="none"), batch()),
           "scalar", "mean", "(8,)")
    raises(hx.LossError, lambda: hx.Session(mlp(), nn.CrossEntropyLoss(reduction="none"), batch()), "mean")


def test_weighted_loss_is_not_a_per_sample_mean():
    w = torch.tensor([1.0, 2.0, 5.0])
    raises(hx.LossError, lambda: hx.Session(mlp(), nn.CrossEntropyLoss(weight=w), batch()),
           "per-sample", "check_loss=False")
    # a batch-coupled loss (depends on the batch as a whole)
    raises(hx.LossError, lambda: hx.Session(mlp(), lambda z, y: F.cross_entropy(z, y) * z.std(), batch()),
           "per-sample")
    # the escape hatch is honoured
    s = hx.Session(mlp(), nn.CrossEntropyLoss(weight=w), batch(), check_loss=False)
    assert s.block("head", "head").shape == (3, 3)


def test_loss_that_fails_on_the_outputs():
    x, _ = batch()
    bad_y = torch.zeros(8, 5)           # wrong target shape for cross-entropy on 3 logits
    raises(hx.LossError, lambda: hx.Session(mlp(), CE, (x, bad_y)), "loss_fn")


# ---------------------------------------------------------------------------------------------
# names, spaces, sizes
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s():
    return hx.Session(mlp(), CE, batch(), dtype=F64)


def test_unknown_node_suggests_the_close_match_residual(s):
    torch.manual_seed(0)
    r = hx.Session(models.ResidualMLP(8, 6, 2, 3).eval(), CE, batch(), dtype=F64)
    msg = raises(hx.UnknownNameError, lambda: r.block("blocks.O", "head"), "'blocks.0'", "Did you mean")
    assert isinstance(msg, str) and not msg.startswith('"')      # not a KeyError repr
    raises(hx.UnknownNameError, lambda: r.coupling_map(["inp", "blokcs.1"]), "'blocks.1'")


def test_unknown_node_suggests_the_close_match(s):
    # "blocks.0" (the output of Sequential block 0) is a valid name of this MLP ...
    assert s.node("blocks.0").name == "blocks.0.1"
    # ... so a typo of it must be answered with it
    raises(hx.UnknownNameError, lambda: s.block("blocks.O", "head"), "'blocks.0'", "Session.nodes")


def test_unknown_node_everywhere(s):
    raises(hx.UnknownNameError, lambda: s.block("head", "haed"), "'head'")
    raises(hx.UnknownNameError, lambda: s.estimate("haed", "head"), "'head'")
    raises(hx.UnknownNameError, lambda: s.coupling_map(["x", "haed"]), "'head'")
    raises(hx.UnknownNameError, lambda: s.coupling("x", "hed"), "'head'")
    raises(hx.UnknownNameError, lambda: s.node("nothing_like_it"), "valid nodes")
    with pytest.raises(KeyError):                  # also catchable as a KeyError
        s.node("blocks.9")


def test_unknown_parameter_group(s):
    msg = raises(hx.UnknownNameError, lambda: s.block("blocks.0.0", "haed", space="parameter"),
                 "parameter group", "'head'", "Session.groups")
    assert "'*'" in msg
    raises(hx.UnknownNameError, lambda: s.estimate("blocks.0.O", "head", space="parameter"), "'blocks.0.0'")
    raises(hx.UnknownNameError, lambda: s.phi(["head", "nope"]), "parameter group")
    # a module without parameters is named as such
    raises(hx.UnknownNameError, lambda: s.block("blocks.0.1", "head", space="parameter"), "no parameters")


@pytest.mark.parametrize("call", [
    lambda s: s.block("head", "head", space="activations"),
    lambda s: s.block("head", "head", space="param"),
    lambda s: s.estimate("head", "head", space="Parameter"),
    lambda s: s.coupling_map(space="weights"),
    lambda s: s.coupling("x", "head", space=""),
])
def test_invalid_space(s, call):
    raises(hx.HessExploreError, lambda: call(s), "'activation'", "'parameter'")


def test_block_too_large_for_exact_mode():
    s = hx.Session(mlp(), CE, batch(), dtype=F64, max_exact_dim=4)
    msg = raises(hx.BlockTooLargeError, lambda: s.block("blocks.0.0", "blocks.1.0"),
                 "s.estimate(", "max_exact_dim", "6")
    assert "'blocks.0.0'" in msg and "'blocks.1.0'" in msg
    raises(hx.BlockTooLargeError, lambda: s.coupling_map(), "estimate", "max_exact_dim")
    raises(hx.BlockTooLargeError, lambda: s.block("head", "head", space="parameter"), "estimate", "max_exact_dim")
    # a block whose swept side fits still works; and the streaming route works
    assert s.block("head", "head").shape == (3, 3)
    assert s.block("blocks.0.0", "head").shape == (6, 3)
    snap = next(iter(s.estimate("blocks.0.0", "blocks.1.0", probes=8)))
    assert snap.squared["full"].value > 0


def test_bad_estimate_arguments(s):
    raises(hx.HessExploreError, lambda: s.estimate("x", "head", probes=0), "probes")


# ---------------------------------------------------------------------------------------------
# the model and the batch
# ---------------------------------------------------------------------------------------------
class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 3)

    def forward(self, x):
        z = self.lin(x)
        return z, z.detach()


class ScalarOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 3)

    def forward(self, x):
        return self.lin(x).sum()


def test_model_returning_a_tuple_uses_its_first_tensor_or_the_selected_one():
    s = hx.Session(TupleOut(), CE, batch(), dtype=F64)
    assert s.graph.output.name == "lin"          # the first tensor of the tuple
    raises(hx.HessExploreError, lambda: hx.Session(TupleOut(), CE, batch(), output=5), "output=5", "tuple")
    raises(hx.HessExploreError, lambda: hx.Session(TupleOut(), CE, batch(), output="logits"), "output=",
           "key, an index or a callable")


def test_model_output_without_batch_dimension():
    raises(hx.HessExploreError, lambda: hx.Session(ScalarOut(), lambda z, y: z, batch()), "batch")


class Gate(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace this."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        h = self.lin(x)
        if h.sum() > 0:
            return h
        return -h


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Gate()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.inner(x)))


class BranchyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        if x.mean() > 0:
            x = x * 2
        return self.head(x)


def test_untraceable_submodule_is_named_with_the_leaf_modules_fix():
    torch.manual_seed(0)
    model = GatedNet().eval()
    raises(hx.TracingError, lambda: hx.Session(model, CE, batch()), "'inner'", "leaf_modules=['inner']")


def test_untraceable_model_fixes_work():
    torch.manual_seed(0)
    model = GatedNet().eval()
    s = hx.Session(model, CE, batch(), dtype=F64, leaf_modules=["inner"])
    assert "inner" in s.nodes and "inner.lin" not in s.nodes
    assert s.block("inner", "head").shape == (8, 3)
    raises(hx.TracingError, lambda: hx.Session(BranchyNet(), CE, batch()), "leaf_modules", "trace=False")
    s2 = hx.Session(BranchyNet(), CE, batch(), dtype=F64, trace=False)
    assert s2.block("head", "head", space="parameter").shape == (27, 27)
    raises(hx.HessExploreError, lambda: s2.block("head", "head"), "trace=False")


def test_model_must_be_a_module():
    raises(hx.HessExploreError, lambda: hx.Session(lambda x: x @ torch.ones(8, 3), CE, batch()),
           "torch.nn.Module", "function")


@pytest.mark.parametrize("bad", [
    lambda x, y: x,
    lambda x, y: (x,),
    lambda x, y: (x, y, y),
    lambda x, y: {"x": x, "y": y},
])
def test_batch_must_be_a_pair(bad):
    x, y = batch()
    raises(hx.HessExploreError, lambda: hx.Session(mlp(), CE, bad(x, y)), "pair", "(x, y)")


def test_model_without_parameters():
    raises(hx.HessExploreError, lambda: hx.Session(nn.Identity(), lambda z, y: z.pow(2).mean(), batch()),
           "no parameters")


# ---------------------------------------------------------------------------------------------
# a session survives errors
# ---------------------------------------------------------------------------------------------
def test_session_keeps_working_after_errors():
    model = mlp(activation="gelu").double()
    s = hx.Session(model, CE, batch(), dtype=F64)
    ref = s.block("blocks.0.0", "blocks.1.1")
    ref_map = s.coupling_map(["x", "blocks.0.1", "head"])
    ref_est = [e.squared["full"].value for e in s.estimate("blocks.0.0", "head", probes=16, seed=3)]
    bad_calls = [
        (hx.UnknownNameError, lambda: s.block("blocks.O", "head")),
        (hx.HessExploreError, lambda: s.block("head", "head", space="both")),
        (hx.UnknownNameError, lambda: s.estimate("head", "nope")),
        (hx.HessExploreError, lambda: s.estimate("head", "head", probes=0)),
        (hx.UnknownNameError, lambda: s.coupling_map(["x", "nope"])),
        (hx.UnknownNameError, lambda: s.block("nope", "head", space="parameter")),
    ]
    for exc, call in bad_calls:
        raises(exc, call)
        again = s.block("blocks.0.0", "blocks.1.1")
        assert torch.equal(again.full, ref.full) and torch.equal(again.gn, ref.gn)
    # an error in the middle of a computation (weights turned NaN), then recovery
    keep = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight[1, 2] = float("nan")
    raises(hx.ModelStateError, lambda: s.block("blocks.0.0", "blocks.1.1"), "'head.weight'")
    with torch.no_grad():
        model.head.weight.copy_(keep)
    cmap = s.coupling_map(["x", "blocks.0.1", "head"])
    assert torch.equal(cmap.R, ref_map.R) and torch.equal(cmap.norm_tensor, ref_map.norm_tensor)
    est = [e.squared["full"].value for e in s.estimate("blocks.0.0", "head", probes=16, seed=3)]
    assert est == ref_est
    assert math.isfinite(s.phi())


def test_a_too_large_block_leaves_the_session_usable():
    s = hx.Session(mlp(), CE, batch(), dtype=F64, max_exact_dim=6)
    raises(hx.BlockTooLargeError, lambda: s.block("x", "x"), "max_exact_dim")
    b = s.block("blocks.0.0", "blocks.1.0")
    assert b.shape == (6, 6) and b.resonance > 0
