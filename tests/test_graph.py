"""Graph extraction: node names, per-sample shapes, aliases, edges, scopes, groups, distances, JSON, errors.

Shapes are checked against values measured on the untraced model (forward hooks /
an fx interpreter in tests/oracles.py), and a few addressing rules are checked by
comparing engine blocks with oracle blocks perturbed at the module the name means.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import oracles as O
from hessexplore import HessExploreError, Session, TracingError, UnknownNameError, models

pytestmark = pytest.mark.usefixtures("single_thread")

CE = nn.CrossEntropyLoss()


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _session(model, x, B=4, K=3, seed=0, **kw):
    torch.manual_seed(seed)
    y = torch.randint(0, K, (B,), generator=_gen(seed))
    return Session(model.eval(), CE, (x, y), dtype=torch.float64, **kw), y


def mlp_ln():
    torch.manual_seed(0)
    m = models.MLP(4, 5, 2, 3, activation="relu", norm="layernorm")
    return _session(m, torch.randn(4, 4, generator=_gen(1)))[0]


def resmlp():
    torch.manual_seed(1)
    m = models.ResidualMLP(4, 5, 2, 3, activation="gelu", norm="layernorm")
    return _session(m, torch.randn(4, 4, generator=_gen(2)))[0]


def diamond(merge):
    torch.manual_seed(2)
    m = models.DiamondMLP(4, 5, 3, merge=merge)
    return _session(m, torch.randn(4, 4, generator=_gen(3)))[0]


def attention():
    torch.manual_seed(3)
    return _session(models.ToyAttention(4, 3), torch.randn(4, 3, 4, generator=_gen(4)))[0]


def cnn():
    torch.manual_seed(4)
    m = models.randomize_batchnorm(models.SmallCNN(1, size=8, channels=2, d_out=3), _gen(5))
    return _session(m, torch.randn(4, 1, 8, 8, generator=_gen(6)))[0]


BUILDERS = {"mlp_ln": mlp_ln, "resmlp": resmlp, "diamond_sum": lambda: diamond("sum"),
            "diamond_concat": lambda: diamond("concat"), "attention": attention, "cnn": cnn}


def _edges(s):
    return {tuple(e) for e in s.graph.to_json()["edges"]}


# ------------------------------------------------------------------------- names and shapes
def test_node_names_in_topological_order():
    s = mlp_ln()
    assert s.nodes == ["x", "blocks.0.0", "blocks.0.1", "blocks.0.2", "blocks.1.0", "blocks.1.1", "blocks.1.2", "head"]
    assert s.graph.output.name == "head"
    assert attention().nodes == ["x", "norm", "W_Q", "W_K", "W_V", "transpose", "matmul", "mul", "softmax",
                                 "matmul_1", "proj", "add", "mean", "head"]
    assert cnn().nodes == ["x", "conv1", "bn1", "act1", "pool1", "conv2", "bn2", "act2", "pool2", "flatten", "head"]
    assert diamond("concat").nodes[-2:] == ["cat", "head"] and diamond("sum").nodes[-2:] == ["add", "head"]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_per_sample_shapes_match_the_running_model(name):
    """Every addressable node's shape = the measured value's shape without the batch dim; d = prod."""
    s = BUILDERS[name]()
    oracle = O.ActivationOracle(s.model, s.inputs[0], s.targets, CE)
    fx_names = {n.name for n in oracle.gm.graph.nodes}
    for n in s.graph.addressable:
        site = n.name if n.kind in ("module", "input") else n.fx_name
        assert site in oracle.modules or site == "x" or site in fx_names
        assert n.shape == oracle.shape(site), n.name
        assert s.dim(n.name) == n.numel == math.prod(n.shape)


def test_conv_nodes_are_flattened_chw():
    s = cnn()
    assert s.node("conv1").shape == (2, 8, 8) and s.dim("conv1") == 128
    assert s.node("pool1").shape == (2, 4, 4) and s.dim("pool2") == 2 * 2 * 2
    assert s.node("flatten").shape == (8,)
    assert s.block("conv1", "pool2").shape == (128, 8)
    assert s.node("x").shape == (1, 8, 8) and s.node("x").kind == "input"


# ------------------------------------------------------------------------------ addressing
def test_container_alias_resolves_to_last_child_output():
    s = mlp_ln()
    assert s.node("blocks.0") is s.node("blocks.0.2")
    assert s.node("blocks.0").name == "blocks.0.2" and "blocks.0" in s.node("blocks.0.2").aliases
    assert s.node("blocks.1") is s.node("blocks.1.2")
    assert s.node("blocks_0_0") is s.node("blocks.0.0")  # fx names address nodes too
    b_alias, b_child = s.block("blocks.0", "head"), s.block("blocks.0.2", "head")
    assert torch.equal(b_alias.full, b_child.full) and torch.equal(b_alias.gn, b_child.gn)
    # what the alias means: the Sequential's forward output (hook on the container itself)
    oracle = O.ActivationOracle(s.model, s.inputs[0], s.targets, CE)
    O.assert_rel(b_alias.full, oracle.block("blocks.0", "head")["full"], 1e-8)


def test_residual_block_name_is_stream_after_add_and_f_is_branch():
    s = resmlp()
    stream, branch = s.node("blocks.0"), s.node("blocks.0.f")
    assert stream.op == "add" and stream.kind == "function" and stream.fx_name == "add"
    assert set(stream.inputs) == {s.node("inp").fx_name, s.node("blocks.0.f.2").fx_name}
    assert branch is s.node("blocks.0.f.2") and "blocks.0.f" in branch.aliases
    assert s.node("blocks.1").fx_name == "add_1" and s.node("blocks.0").fx_name in s.node("blocks.1").inputs
    assert "blocks.0" in stream.scope
    # the residual stream = the ResidualBlock module's output = fx node "add": two oracle mechanisms
    oracle = O.ActivationOracle(s.model, s.inputs[0], s.targets, CE)
    b = s.block("blocks.0", "blocks.0")
    O.assert_rel(b.full, oracle.block("blocks.0", "blocks.0")["full"], 1e-8)   # forward hook on the module
    O.assert_rel(b.full, oracle.block("add", "add")["full"], 1e-8)             # fx interpreter on "add"
    bf = s.block("blocks.0.f", "blocks.1")
    O.assert_rel(bf.full, oracle.block("blocks.0.f", "blocks.1")["full"], 1e-8)


def test_edges_include_residual_skips():
    e = _edges(resmlp())
    assert {("inp", "blocks.0"), ("blocks.0.f.2", "blocks.0"), ("inp", "blocks.0.f.0"),
            ("blocks.0", "blocks.1"), ("blocks.1.f.2", "blocks.1"), ("blocks.0", "blocks.1.f.0"),
            ("blocks.1", "head")} <= e


@pytest.mark.parametrize("merge,node", [("sum", "add"), ("concat", "cat")])
def test_edges_include_both_merge_inputs(merge, node):
    s = diamond(merge)
    e = _edges(s)
    assert {("stem.1", "branch_a.0.0"), ("stem.1", "branch_b.0.0"), ("branch_a.1", node), ("branch_b.1", node),
            (node, "head")} <= e
    assert s.node(node).shape == ((10,) if merge == "concat" else (5,))
    assert set(s.node(node).inputs) == {s.node("branch_a.1").fx_name, s.node("branch_b.1").fx_name}


def test_attention_siblings_share_input_and_skip_edge():
    s = attention()
    q, k, v = (s.node(n) for n in ("W_Q", "W_K", "W_V"))
    assert q.inputs == k.inputs == v.inputs == (s.node("norm").fx_name,)
    e = _edges(s)
    assert {("norm", "W_Q"), ("norm", "W_K"), ("norm", "W_V"), ("W_Q", "matmul"), ("W_K", "transpose"),
            ("transpose", "matmul"), ("mul", "softmax"), ("softmax", "matmul_1"), ("W_V", "matmul_1"),
            ("x", "add"), ("proj", "add")} <= e
    assert s.node("softmax").shape == (3, 3) and s.node("matmul_1").shape == (3, 4)


def test_module_scopes():
    s = mlp_ln()
    assert s.node("blocks.0.0").scope == ("blocks.0",) and s.node("blocks.1.1").scope == ("blocks.1",)
    assert s.node("head").scope == () and s.node("x").scope == ()
    r = resmlp()
    assert r.node("blocks.0.f.0").scope == ("blocks.0", "blocks.0.f")   # outermost first
    assert r.node("blocks.1.f.2").scope == ("blocks.1", "blocks.1.f")
    mods = {m["name"]: m for m in r.graph.to_json()["modules"]}
    assert mods["blocks.0"]["type"] == "ResidualBlock" and mods["blocks.0.f"]["type"] == "Sequential"
    assert mods["blocks.0.f"]["parent"] == "blocks.0"
    assert mods["blocks.0"]["params"] == sum(p.numel() for p in r.model.blocks[0].parameters())
    assert mods["blocks.0.f"]["children"] == ["blocks.0.f.0", "blocks.0.f.1", "blocks.0.f.2"]


# ---------------------------------------------------------------------------------- groups
def test_groups_are_modules_owning_parameters():
    assert mlp_ln().groups == ["blocks.0.0", "blocks.0.1", "blocks.1.0", "blocks.1.1", "head"]
    assert cnn().groups == ["conv1", "bn1", "conv2", "bn2", "head"]
    assert attention().groups == ["norm", "W_Q", "W_K", "W_V", "proj", "head"]
    assert resmlp().groups == ["inp", "blocks.0.f.0", "blocks.0.f.1", "blocks.1.f.0", "blocks.1.f.1", "head"]


def test_parameter_group_resolution():
    s = mlp_ln()
    pg = s.param_groups
    all_names = [n for n, _ in s.model.named_parameters()]
    assert pg.resolve("blocks.0") == ["blocks.0.0.weight", "blocks.0.0.bias", "blocks.0.1.weight", "blocks.0.1.bias"]
    assert pg.resolve("blocks") == [n for n in all_names if n.startswith("blocks.")]
    assert pg.resolve("head.weight") == ["head.weight"]
    assert pg.resolve("*") == all_names
    assert s.dim("blocks.0", "parameter") == 4 * 5 + 5 + 5 + 5
    assert s.dim("*", "parameter") == sum(p.numel() for p in s.model.parameters())
    assert s.dim("head.bias", "parameter") == 3
    assert s.block("blocks.0", "head.bias", space="parameter").shape == (35, 3)
    with pytest.raises(UnknownNameError, match=r"has no parameters"):
        pg.resolve("blocks.0.2")  # a ReLU
    with pytest.raises(UnknownNameError, match=r"Did you mean .*'blocks\.0\.0'"):
        s.block("blokcs.0.0", "head", space="parameter")


# ------------------------------------------------------------------------------- distances
def test_distances_chain_is_index_difference():
    s = mlp_ln()
    names = ["x", "blocks.0", "blocks.1", "head"]
    i = torch.arange(len(names))
    assert torch.equal(s.graph.distances(names), (i[None] - i[:, None]).abs())
    r = resmlp()  # skips do not shorten a chain of chosen stream nodes
    assert torch.equal(r.graph.distances(["inp", "blocks.0", "blocks.1", "head"]), (i[None] - i[:, None]).abs())


@pytest.mark.parametrize("merge,node", [("sum", "add"), ("concat", "cat")])
def test_distances_diamond(merge, node):
    s = diamond(merge)
    d = s.graph.distances(["stem", "branch_a", "branch_b", node, "head"])
    want = torch.tensor([[0, 1, 1, 2, 3], [1, 0, 2, 1, 2], [1, 2, 0, 1, 2], [2, 1, 1, 0, 1], [3, 2, 2, 1, 0]])
    assert torch.equal(d, want)
    assert int(d[1, 2]) == 2  # parallel branches


def test_distances_attention_siblings_and_coupling_map_uses_them():
    s = attention()
    names = ["norm", "W_Q", "W_K", "W_V", "softmax"]
    d = s.graph.distances(names)
    assert int(d[1, 2]) == int(d[1, 3]) == int(d[2, 3]) == 2 and int(d[0, 1]) == 1
    assert int(d[1, 4]) == 1  # W_Q → matmul → mul → softmax
    # W_V and softmax only meet at matmul_1 (neither reaches the other): W_V – norm – W_Q – softmax
    assert int(d[3, 4]) == 3
    cm = s.coupling_map(names)
    assert torch.equal(cm.distance, d)


# ------------------------------------------------------------------------------------ JSON
@pytest.mark.parametrize("name", list(BUILDERS))
def test_to_json_structure(name):
    s = BUILDERS[name]()
    j = s.graph.to_json()
    assert set(j) == {"nodes", "edges", "modules", "batch_size"} and j["batch_size"] == 4
    json.dumps(j)  # plain JSON
    ids = [n["id"] for n in j["nodes"]]
    assert len(ids) == len(set(ids))
    assert [i for i, n in zip(ids, j["nodes"]) if n["addressable"]] == s.nodes
    keys = {"id", "label", "op", "kind", "shape", "numel", "scope", "aliases", "addressable", "params"}
    for n in j["nodes"]:
        assert set(n) == keys
        assert n["kind"] in ("module", "function", "method", "input")
        if n["addressable"]:
            assert n["numel"] == math.prod(n["shape"]) and s.dim(n["id"]) == n["numel"]
        if n["kind"] == "module":
            mod = s.model.get_submodule(n["id"])
            assert n["op"] == type(mod).__name__
            assert n["params"] == sum(p.numel() for p in mod.parameters(recurse=False))
    for a, b in j["edges"]:
        assert a in ids and b in ids and ids.index(a) < ids.index(b)  # topological
    for m in j["modules"]:
        assert set(m) == {"name", "type", "parent", "params", "children"}
        mod = s.model.get_submodule(m["name"])
        assert m["type"] == type(mod).__name__ and m["params"] == sum(p.numel() for p in mod.parameters())


# ---------------------------------------------------------------------------------- errors
def test_unknown_node_lists_close_matches():
    s = mlp_ln()
    with pytest.raises(UnknownNameError, match=r"Did you mean 'head'") as ei:
        s.node("haed")
    assert isinstance(ei.value, KeyError) and isinstance(ei.value, HessExploreError)
    with pytest.raises(UnknownNameError, match=r"Did you mean"):
        s.block("blocks.0.0", "blocks.1.9")
    a = attention()
    with pytest.raises(UnknownNameError, match=r"'W_Q'"):
        a.block("W_q", "W_K")


def test_unknown_node_suggests_container_aliases():
    """'blocks.O' (letter O) is one keystroke from the valid name 'blocks.0' (a container alias)."""
    s = mlp_ln()
    with pytest.raises(UnknownNameError) as ei:
        s.node("blocks.O")
    assert "'blocks.0'" in str(ei.value), str(ei.value)


class Gate(nn.Module):
    """Data-dependent control flow: not traceable by torch.fx."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, h):
        if h.sum() > 0:
            return torch.tanh(self.lin(h))
        return torch.sigmoid(self.lin(h))


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 5)
        self.gate = Gate(5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.gate(self.inp(x)))


class TopLevelBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.inp(x)
        return -self.inp(x)


def _gated():
    torch.manual_seed(7)
    x = torch.randn(4, 4, generator=_gen(7))
    return Gated().eval(), x, torch.randint(0, 3, (4,), generator=_gen(8))


def test_tracing_error_names_the_module_and_suggests_leaf_modules():
    model, x, y = _gated()
    with pytest.raises(TracingError) as ei:
        Session(model, CE, (x, y))
    msg = str(ei.value)
    assert "'gate'" in msg, msg
    assert "leaf_modules=['gate']" in msg, msg


def test_tracing_error_at_top_level_suggests_leaf_modules():
    torch.manual_seed(0)
    with pytest.raises(TracingError, match=r"TopLevelBranch.*leaf_modules=\[") as ei:
        Session(TopLevelBranch(), CE, (torch.randn(4, 4), torch.randint(0, 3, (4,))))
    assert "control flow" in str(ei.value)


def test_leaf_modules_makes_untraceable_model_work():
    model, x, y = _gated()
    s = Session(model, CE, (x, y), dtype=torch.float64, leaf_modules=["gate"])
    assert s.nodes == ["x", "inp", "gate", "head"]
    assert s.node("gate").op == "Gate" and s.node("gate").kind == "module"
    with pytest.raises(UnknownNameError):
        s.node("gate.lin")  # internals are opaque now
    assert "gate.lin" in s.groups  # ... but its parameters are not
    act, par = O.ActivationOracle(model, x, y, CE), O.ParameterOracle(model, x, y, CE)
    for v, w in [("inp", "gate"), ("gate", "gate"), ("x", "head")]:
        b, o = s.block(v, w), act.block(v, w)
        O.assert_rel(b.full, o["full"], 1e-8, what=f"{v}-{w}")
        O.assert_rel(b.gn, o["gn"], 1e-8, what=f"{v}-{w} gn")
    b, o = s.block("gate", "inp", space="parameter"), par.block("gate", "inp")
    O.assert_rel(b.full, o["full"], 1e-8)
    O.assert_rel(b.gn, o["gn"], 1e-8)


def test_trace_false_gives_parameter_space_only():
    model, x, y = _gated()
    s = Session(model, CE, (x, y), dtype=torch.float64, trace=False)
    with pytest.raises(HessExploreError, match="trace=False"):
        s.nodes
    O.assert_rel(s.block("gate", "gate", space="parameter").full,
                 O.ParameterOracle(model, x, y, CE).block("gate", "gate")["full"], 1e-8)
