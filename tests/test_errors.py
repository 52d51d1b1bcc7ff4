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
    raises(hx.BlockTooLargeError, lambda: s.coupling_map(method="exact"), "method='estimate'", "max_exact_dim")
    assert s.coupling_map().method == "estimate"     # auto falls back to estimates with error bars
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


# ---------------------------------------------------------------------------------------------
# run files: every damaged or edited file gives one RunFileError naming the file and the place
# ---------------------------------------------------------------------------------------------
import copy as _copy      # noqa: E402
import gzip as _gzip      # noqa: E402
import json as _json      # noqa: E402


@pytest.fixture(scope="module")
def run_json():
    model = mlp()
    x, y = batch(16)
    tracker = hx.Tracker(model, CE, (x, y), every=1, parts=("full",), pairs=[("blocks.0.0", "head")])
    tracker.step(0)
    return tracker.run.to_json()


def _edit(fn):
    def make(d):
        d = _copy.deepcopy(d)
        fn(d)
        return d
    return make


def _set(path, value):
    def fn(d):
        *head, last = path
        for k in head:
            d = d[k]
        d[last] = value
    return _edit(fn)


def _drop(path):
    def fn(d):
        *head, last = path
        for k in head:
            d = d[k]
        del d[last]
    return _edit(fn)


G0 = "blocks.0.0"
BAD_RUN_JSON = {   # name -> (edit of a good run's dict, words the message must contain)
    "not an object": (lambda d: [d], "not a hessexplore tracker file"),
    "other format": (_set(["format"], "hessexplore.report/1"), "not a hessexplore tracker file"),
    "no format": (_drop(["format"]), "not a hessexplore tracker file"),
    "records not a list": (_set(["records"], {"0": {}}), "records"),
    "record not an object": (_set(["records", 0], 3), "records[0]"),
    "record without step": (_drop(["records", 0, "step"]), "records[0]", "step"),
    "step a string": (_set(["records", 0, "step"], "0"), "records[0].step", "integer"),
    "step a float": (_set(["records", 0, "step"], 1.5), "records[0].step"),
    "step a bool": (_set(["records", 0, "step"], True), "records[0].step"),
    "loss a string": (_set(["records", 0, "eval_loss"], "low"), "records[0].eval_loss"),
    "groups not names": (_set(["groups"], [1, 2]), "groups"),
    "unknown part": (_set(["parts"], ["hessian"]), "parts"),
    "bad space": (_set(["space"], "weights"), "space"),
    "pair of three": (_set(["pairs"], [["a", "b", "c"]]), "pairs"),
    "name not a string": (_set(["name"], 5), "name"),
    "config a list": (_set(["config"], []), "config"),
    "layers a list": (_set(["records", 0, "layers"], []), "records[0].layers"),
    "stat a string": (_set(["records", 0, "layers", G0, "full", "stats", "trace"], "big"),
                      "records[0].layers.blocks.0.0.full.stats.trace"),
    "eigenvalues edited": (_set(["records", 0, "layers", G0, "full", "eigenvalues"], ["x"]), "eigenvalues"),
    "coupling matrix ragged": (_set(["records", 0, "coupling", "R"], [[1.0]]), "records[0].coupling.R"),
    "coupling names missing": (_drop(["records", 0, "coupling", "names"]), "coupling.names"),
    "pair value edited": (_set(["records", 0, "pairs", f"{G0}|head", "R"], "1"), "pairs"),
    "model fingerprint edited": (_set(["model"], {"parameters": "all"}), "model"),
}


@pytest.mark.parametrize("case", list(BAD_RUN_JSON))
def test_edited_run_files_give_one_clear_error(run_json, tmp_path, case):
    edit, *words = BAD_RUN_JSON[case]
    path = tmp_path / "run.json"
    path.write_text(_json.dumps(edit(run_json)))
    msg = raises(hx.RunFileError, lambda: hx.Run.load(str(path)), *words)
    assert str(path) in msg or "tracker file" in msg


BAD_RUN_BYTES = {   # file content -> words
    "empty": (b"", "empty"),
    "truncated": (None, "not valid JSON", "truncated"),
    "not utf-8": (b"\xff\xfe\x00{", "UTF-8"),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "huge integer": (b'{"format": ' + b"9" * 5000 + b"}", "JSON"),
    "gzip without .gz": ("gz", "rename"),
}


@pytest.mark.parametrize("case", list(BAD_RUN_BYTES))
def test_damaged_run_files_give_one_clear_error(run_json, tmp_path, case):
    content, *words = BAD_RUN_BYTES[case]
    good = _json.dumps(run_json).encode()
    if content is None:
        content = good[: len(good) // 2]
    elif content == "gz":
        content = _gzip.compress(good)
    path = tmp_path / "run.json"
    path.write_bytes(content)
    raises(hx.RunFileError, lambda: hx.Run.load(str(path)), *words)


def test_missing_folder_and_truncated_gzip_run_files(run_json, tmp_path):
    raises(hx.RunFileError, lambda: hx.Run.load(str(tmp_path / "nope.json")), "no run file")
    raises(hx.RunFileError, lambda: hx.Run.load(str(tmp_path)), "folder")
    data_gz = _gzip.compress(_json.dumps(run_json).encode())
    (tmp_path / "cut.json.gz").write_bytes(data_gz[: len(data_gz) // 2])
    raises(hx.RunFileError, lambda: hx.Run.load(str(tmp_path / "cut.json.gz")), "gzip", "truncated")
    (tmp_path / "plain.json.gz").write_text(_json.dumps(run_json))
    raises(hx.RunFileError, lambda: hx.Run.load(str(tmp_path / "plain.json.gz")), "gzip")


def test_a_run_from_another_model_is_refused(run_json, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(_json.dumps(run_json))
    assert hx.Run.load(str(path), model=mlp()).records                # the same architecture: fine
    torch.manual_seed(0)
    wider = models.MLP(d_in=8, width=7, depth=2, d_out=3).eval()
    raises(hx.RunFileError, lambda: hx.Run.load(str(path), model=wider), "different model", "shape")
    other = nn.Sequential(nn.Linear(8, 3))
    raises(hx.RunFileError, lambda: hx.Run.load(str(path), model=other), "different model")
    old = dict(run_json)
    old.pop("model")                                                  # files written before fingerprints
    path.write_text(_json.dumps(old))
    assert hx.Run.load(str(path), model=mlp()).model is None
    raises(hx.RunFileError, lambda: hx.Run.load(str(path), model=other), "different model", "blocks.0.0")


# ---------------------------------------------------------------------------------------------
# issue 9: silently meaningless numbers are refused
# ---------------------------------------------------------------------------------------------
class Detached(nn.Module):
    def forward(self, z, y):
        return (z.detach() ** 2).mean() + 0 * y.float().mean()


class TimesZero(nn.Module):
    def forward(self, z, y):
        return (z * 0).sum() + 1.0


@pytest.mark.parametrize("loss", [Detached(), TimesZero(), lambda z, y: torch.tensor(1.0)],
                         ids=["detached", "times-zero", "constant"])
def test_a_loss_that_does_not_depend_on_the_output(loss):
    raises(hx.LossError, lambda: hx.Session(mlp(), loss, batch(), check_loss=False), "does not depend",
           "model output")


def test_a_loss_at_its_minimum_or_linear_is_fine():
    x, _ = batch()
    model = mlp()
    with torch.no_grad():
        z = model(x)
    hx.Session(model, nn.MSELoss(), (x, z.clone()))                    # gradient 0, curvature not
    hx.Session(model, lambda z, y: z.mean(), (x, z), check_loss=False)  # curvature 0, gradient not


def test_mse_target_that_would_broadcast():
    x, _ = batch()
    msg = raises(hx.InputError, lambda: hx.Session(mlp(), nn.MSELoss(), (x, torch.randn(8, 1))),
                 "(8, 1)", "(8, 3)", "broadcast")
    assert "view_as" in msg


def test_mse_with_long_targets():
    x, y = batch()
    raises(hx.InputError, lambda: hx.Session(mlp(), nn.MSELoss(), (x, y)), "floating-point", "y.float()")


class BNNet(nn.Module):
    def __init__(self, track=True):
        super().__init__()
        self.lin = nn.Linear(8, 6)
        self.bn = nn.BatchNorm1d(6, track_running_stats=track)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.bn(self.lin(x))))


def test_eval_batchnorm_without_running_stats():
    raises(hx.ModelStateError, lambda: hx.Session(BNNet(track=False).eval(), CE, batch()),
           "'bn'", "track_running_stats=False", "couples the samples")


def test_nan_in_a_buffer_is_named():
    m = BNNet().eval()
    m.bn.running_var[2] = float("nan")
    raises(hx.ModelStateError, lambda: hx.Session(m, CE, batch()), "bn.running_var", "NaN")
    m = BNNet().eval()
    s = hx.Session(m, CE, batch())
    m.bn.running_mean[0] = float("inf")                                # after creation: caught per call
    raises(hx.ModelStateError, lambda: s.block("lin", "head"), "bn.running_mean")


# ---------------------------------------------------------------------------------------------
# issue 9: raw library exceptions become clear errors
# ---------------------------------------------------------------------------------------------
def test_wrong_input_width():
    raises(hx.InputError, lambda: hx.Session(mlp(), CE, (torch.randn(8, 5), batch()[1])), "5 features", "8")


def test_list_inputs_and_targets():
    x, y = batch()
    raises(hx.HessExploreError, lambda: hx.Session(mlp(), CE, (x.tolist(), y)), "tensor")
    raises(hx.HessExploreError, lambda: hx.Session(mlp(), CE, (x, y.tolist())), "loss_fn", "tensor")


class RandomForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.head = nn.Linear(8, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.head(F.dropout(torch.tanh(self.lin(x)), 0.5, training=True))


def test_functional_dropout_in_train_mode_inside_forward():
    raises(hx.ModelStateError, lambda: hx.Session(RandomForward().eval(), CE, batch()), "random",
           "F.dropout(x, training=self.training)")


class Counter(nn.Module):
    def __init__(self, rebind=False):
        super().__init__()
        self.lin, self.head = nn.Linear(8, 6), nn.Linear(6, 3)
        self.register_buffer("calls", torch.zeros(()))
        self.rebind = rebind

    def forward(self, x):
        if self.rebind:
            self.calls = self.calls + 1          # a new tensor bound to the buffer's name
        else:
            self.calls += 1                      # in place
        return self.head(torch.tanh(self.lin(x)) * (1 + 0.01 * self.calls))


@pytest.mark.parametrize("rebind", [False, True], ids=["in-place", "rebound"])
def test_a_forward_that_mutates_buffers_is_refused_and_the_buffers_restored(rebind):
    m = Counter(rebind).eval()
    before = m.calls
    raises(hx.ModelStateError, lambda: hx.Session(m, CE, batch()), "changes the buffer 'calls'", "restored")
    assert m.calls is before and float(m.calls) == 0.0


def test_a_deterministic_forward_leaves_buffers_untouched():
    m = BNNet().eval()
    ids = {n: (b.data_ptr(), b._version) for n, b in m.named_buffers()}
    hx.Session(m, CE, batch())
    assert {n: (b.data_ptr(), b._version) for n, b in m.named_buffers()} == ids


def test_meta_device_model():
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(8, 3))
    raises(hx.ModelStateError, lambda: hx.Session(m, CE, batch()), "meta", "to_empty")


@pytest.mark.parametrize("how", ["dtype", "model"])
def test_half_precision_is_refused_with_the_dtype_to_use(how):
    x, y = batch()
    make = (lambda: hx.Session(mlp(), CE, (x, y), dtype=torch.float16)) if how == "dtype" else \
        (lambda: hx.Session(mlp().half(), CE, (x.half(), y)))
    raises(hx.ArgumentError, make, "float16", "dtype=torch.float32")
    raises(hx.ArgumentError, lambda: hx.Session(mlp(), CE, (x, y), dtype=torch.bfloat16), "bfloat16")
    from hessexplore.spectra import iter_spectrum
    raises(hx.ArgumentError, lambda: next(iter_spectrum(lambda V: V, 4, dtype=torch.float16)), "float16")


def test_dtype_given_as_text():
    s = hx.Session(mlp(), CE, batch(), dtype="float64")
    assert s.dtype == torch.float64
    raises(hx.ArgumentError, lambda: hx.Session(mlp(), CE, batch(), dtype="f64"), "torch.float64")
    raises(hx.ArgumentError, lambda: hx.Session(mlp(), CE, batch(), dtype=torch.int64), "floating")
    raises(hx.ArgumentError, lambda: hx.Session(mlp(), CE, batch(), dtype=64), "torch.dtype")


def test_empty_batch():
    x, y = batch()
    raises(hx.InputError, lambda: hx.Session(mlp(), CE, (x[:0], y[:0])), "empty", "0 samples")


@pytest.mark.parametrize("kw,words", [
    ({"probes": 2.5}, ("probes", "whole number")), ({"probes": "10"}, ("probes", "str")),
    ({"probes": -3}, ("probes", "at least 1")), ({"probes": True}, ("probes",)),
    ({"batch_size": 0}, ("batch_size", "at least 1")), ({"batch_size": -1}, ("batch_size",)),
    ({"batch_size": 1.5}, ("batch_size",)),
    ({"seed": None}, ("seed", "seed=0")), ({"seed": "abc"}, ("seed",)), ({"seed": 2 ** 64}, ("seed", "2**63")),
    ({"seed": -1}, ("seed",)), ({"seed": 1.0}, ("seed",)),
    ({"rel_ci": -1}, ("rel_ci", "(0, 1)")), ({"rel_ci": 2.0}, ("rel_ci",)), ({"rel_ci": "5%"}, ("rel_ci",)),
])
def test_bad_estimate_argument_values(s, kw, words):
    raises(hx.ArgumentError, lambda: s.estimate("blocks.0.0", "head", **{"probes": 4, **kw}), *words)


def test_integral_float_probes_are_accepted(s):
    snaps = list(s.estimate("blocks.0.0", "head", probes=8.0, batch_size=4.0))
    assert snaps[-1].probes == 8


def test_empty_name_lists(s):
    raises(hx.ArgumentError, lambda: s.coupling_map([]), "empty", "None")
    raises(hx.ArgumentError, lambda: s.phi([]), "empty", "None")
    raises(hx.ArgumentError, lambda: s.coupling_map([1, 2]), "names")
    cm = s.coupling_map("head")                       # one name given as a string is that node
    assert cm.names == ["head"]


@pytest.mark.parametrize("kw,words", [({"seed": "x"}, ("seed",)), ({"k": 0}, ("k",)), ({"k": 2.5}, ("k",)),
                                      ({"num_probes": 0, "method": "slq"}, ("num_probes",)),
                                      ({"tol": -1.0}, ("tol",))])
def test_bad_spectrum_arguments(s, kw, words):
    raises(hx.ArgumentError, lambda: s.spectrum("head", **kw), *words)


# ---------------------------------------------------------------------------------------------
# issue 9: exact results are refused up front when they would not fit in memory
# ---------------------------------------------------------------------------------------------
def test_exact_result_over_the_memory_cap_is_refused_before_any_work(monkeypatch):
    from hessexplore.operators import CurvatureOperator

    s = hx.Session(mlp(), CE, batch(), dtype=F64)
    need = 2 * 3 * (6 + 3) * 8           # columns of head (3) x rows of blocks.0.0 and head (9) x 8 bytes, x2
    s.max_exact_bytes = need - 1
    called = []
    monkeypatch.setattr(CurvatureOperator, "dense_columns", lambda *a, **k: called.append(1))
    msg = raises(hx.MemoryBudgetError, lambda: s.block("blocks.0.0", "head"), f"{need} bytes",
                 "s.estimate(", "max_exact_bytes")
    assert "nothing was computed" in msg
    raises(hx.BlockTooLargeError, lambda: s.coupling_map(), "max_exact_bytes")
    raises(hx.MemoryBudgetError, lambda: s.phi(), "parameter")
    assert called == []
    monkeypatch.undo()
    s.max_exact_bytes = need
    assert s.block("blocks.0.0", "head").shape == (6, 3)


def test_exact_result_budget_defaults_to_the_available_memory(monkeypatch):
    from hessexplore import checks
    s = hx.Session(mlp(), CE, batch(), dtype=F64)
    monkeypatch.setattr(checks, "available_memory", lambda device: 500)
    raises(hx.MemoryBudgetError, lambda: s.block("blocks.0.0", "head"), "memory available on cpu")
    monkeypatch.undo()
    assert checks.available_memory(torch.device("cpu")) > 0


# ---------------------------------------------------------------------------------------------
# issue 9: KLDivLoss(reduction="batchmean") is the per-sample mean: accepted, and its Hessian right
# ---------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_kldiv_batchmean_gives_the_per_sample_mean_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3), nn.LogSoftmax(dim=-1)).eval()
    x, _ = batch(12)
    t = torch.softmax(torch.randn(12, 3, dtype=F64), dim=-1)
    s = hx.Session(model, nn.KLDivLoss(reduction="batchmean"), (x, t), dtype=F64)
    H = s.block("2", "2").full                                   # logits (before LogSoftmax), 3 x 3
    with torch.no_grad():
        p = torch.softmax(s.model[2](s.model[1](s.model[0](x.to(F64)))), dim=-1)
    oracle = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0)    # (1/B) Σ_b diag p_b − p_b p_bᵀ
    assert torch.allclose(H, oracle, rtol=1e-10, atol=1e-14)
    # reduction="mean" divides by B·K: a Hessian K = 3 times smaller
    s_mean = hx.Session(model, nn.KLDivLoss(reduction="mean"), (x, t), dtype=F64)
    assert torch.allclose(s_mean.block("2", "2").full * 3, oracle, rtol=1e-10, atol=1e-14)
