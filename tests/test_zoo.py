"""Models other people wrote (HF transformers) and faithful replicas of torchvision blocks.

For every model of ``tests/zoo.py``, with default arguments: nodes by module name,
exact blocks in both spaces against the float64 autograd oracles of
``tests/zoo_oracle.py`` (1e-8 relative), estimates within 4 standard errors of
exact, ``phi()``, a spectrum, the default coupling map; and the user's model is
left exactly as it was.
"""
from __future__ import annotations

import math

import pytest
import torch

import hessexplore as hx
import oracles as O
import zoo
from zoo_oracle import ZooOracle, ZooParameterOracle

F64 = torch.float64
pytest.importorskip("transformers")

CASES = list(zoo.CASES)
_sessions: dict[str, tuple] = {}


def session(name):
    if name not in _sessions:
        case = zoo.CASES[name]()
        s = hx.Session(case.model, case.loss_fn, (case.x, case.y), dtype=F64, output=case.output)
        _sessions[name] = (case, s)
    return _sessions[name]


def _scale(b_full, b_gn):
    return O.fro(b_full) + O.fro(b_gn)


@pytest.mark.parametrize("name", CASES)
def test_capture_names_modules_and_groups(name):
    case, s = session(name)
    if case.backend is not None:
        assert s.graph.backend == case.backend
    for n in case.nodes:
        node = s.node(n)
        assert node.addressable, n
        assert n == node.name or n in node.aliases, (n, node.name, node.aliases)
    # default groups: disjoint, cover every parameter tensor, each resolves
    canon = dict(case.model.named_parameters())
    seen = [p for g in s.groups for p in s.param_groups.resolve(g)]
    assert sorted(seen) == sorted(canon) and len(seen) == len(set(seen))
    assert "" not in s.groups
    # every module owning a parameter resolves, tied owners included
    for mod_name, m in case.model.named_modules():
        if mod_name and any(True for _ in m.parameters(recurse=False)):
            assert s.param_groups.resolve(mod_name)
    # no container named after a module's own (repeated) call
    mods = {m["name"] for m in s.graph.to_json()["modules"]}
    for node in s.graph.nodes:
        assert node.name not in mods or node.name in node.scope or node.kind != "module" or \
            any(n.name != node.name and node.name in n.scope for n in s.graph.nodes)


@pytest.mark.parametrize("name", CASES)
def test_activation_blocks_match_the_oracle(name):
    case, s = session(name)
    oracle = ZooOracle(case)
    for v, w in case.act:
        b = s.block(v, w)
        o = oracle.block(s.node(v).name if v in case.nodes or v in s.nodes else v, w)
        O.assert_rel(b.full, o["full"], case.rtol, what=f"{name} {v}-{w} full")
        O.assert_rel(b.gn, o["gn"], case.rtol, scale=_scale(o["full"], o["gn"]), what=f"{name} {v}-{w} gn")


@pytest.mark.parametrize("name", CASES)
def test_parameter_blocks_match_the_oracle(name):
    case, s = session(name)
    oracle = ZooParameterOracle(case)
    for v, w in case.par:
        b = s.block(v, w, space="parameter")
        o = oracle.block(s.param_groups.resolve(v), s.param_groups.resolve(w))
        O.assert_rel(b.full, o["full"], case.rtol, what=f"{name} {v}-{w} full")
        O.assert_rel(b.gn, o["gn"], case.rtol, scale=_scale(o["full"], o["gn"]), what=f"{name} {v}-{w} gn")


@pytest.mark.parametrize("name", CASES)
def test_estimates_agree_with_exact(name):
    case, s = session(name)
    v, w = case.est
    b = s.block(v, w)
    snap = None
    for snap in s.estimate(v, w, probes=48, seed=0, krylov=False):
        pass
    for est, exact in ((snap.resonance, b.resonance), (snap.norm_gn, b.norm_gn)):
        assert abs(est.value - exact) <= 4 * est.stderr + 1e-9 * max(exact, 1e-300), (name, est, exact)
        assert est.stderr < 0.5 * max(exact, 1e-300) or exact < 1e-12


@pytest.mark.parametrize("name", CASES)
def test_phi_spectrum_and_default_coupling_map(name):
    case, s = session(name)
    phi = s.phi()
    assert 0.0 <= phi < 1.0
    g = min(s.groups, key=lambda g: s.dim(g, "parameter"))
    spec = s.spectrum(g)
    dense = s.block(g, g, space="parameter").full
    ev = torch.linalg.eigvalsh(dense)
    O.assert_rel(spec.eigenvalues.to(F64), ev, case.rtol, scale=float(ev.abs().max()), what=f"{name} spectrum")
    cmap = s.coupling_map()
    assert bool(cmap.filled.all()) and cmap.names == s.nodes
    assert torch.isfinite(cmap.R).all()


@pytest.mark.parametrize("name", ["gpt2", "lstm", "mobilenet_se", "resnet_basic"])
def test_the_users_model_is_left_untouched(name):
    case = zoo.CASES[name]()
    model = case.model
    before = {n: (p, p.detach().clone(), p._version) for n, p in model.named_parameters(remove_duplicate=False)}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    s = hx.Session(model, case.loss_fn, (case.x, case.y), output=case.output)   # model's own dtype
    g = s.groups[-1]
    s.block(g, g, space="parameter")
    s.block(case.est[0], case.est[1])
    for n, p in model.named_parameters(remove_duplicate=False):
        obj, val, ver = before[n]
        assert p is obj and isinstance(p, torch.nn.Parameter) and torch.equal(p, val) and p._version == ver
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n])
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    assert not model.training


def test_analyze_runs_on_a_hugging_face_model(tmp_path, monkeypatch, capsys):
    from hessexplore import cli
    (tmp_path / "hf_factory.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(__import__('os').path.dirname(__file__))!r})\n"
        "import zoo\n"
        "def make():\n"
        "    c = zoo.gpt2()\n"
        "    return {'model': c.model, 'loss_fn': c.loss_fn, 'batch': (c.x, c.y), 'output': c.output}\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report"
    rc = cli.main(["analyze", "hf_factory.py:make", "--out", str(out), "--quiet"])
    assert rc == 0
    import json
    rep = json.loads((out / "report.json").read_text())
    text = json.dumps(rep)
    assert "transformer.h.0.attn.c_attn" in text and "phi" in text
    assert 0.0 <= rep["phi"] < 1.0
