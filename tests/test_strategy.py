"""How products run: batched or looped by measurement, short products, oneDNN only where it has derivatives."""
from __future__ import annotations

import torch
from torch import nn

import hessexplore as hx
import oracles as O
from hessexplore import operators

F64 = torch.float64


def _session(model=None):
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 6, generator=g, dtype=F64), torch.randint(0, 3, (10,), generator=g)
    return hx.Session(model.to(F64).eval(), nn.CrossEntropyLoss(), (x, y))


def _op(s, v="1", w="3"):
    atoms = s._atoms(v, "activation") + s._atoms(w, "activation")
    return atoms, s.operator(atoms, "activation", mode="double-backward")


def test_the_first_product_of_three_or_more_directions_measures_both_ways_and_keeps_the_faster():
    s = _session()
    atoms, op = _op(s)
    assert op.batched is None and op.timings == {}
    T = torch.randn(5, op.dim(atoms[1:]), dtype=F64)
    op.products(atoms[1:], T, atoms)
    assert isinstance(op.batched, bool) and set(op.timings) == {"loop", "batched"}
    assert op.batched == (op.timings["batched"] < op.timings["loop"])


def test_batched_and_looped_products_agree_with_the_oracle():
    s = _session()
    atoms, op = _op(s)
    T = torch.randn(7, op.dim(atoms[1:]), dtype=F64)
    got = {}
    for batched in (True, False):
        op.batched = batched
        got[batched] = op.products(atoms[1:], T, atoms)
    for part in ("full", "gn"):
        torch.testing.assert_close(got[True].rows(part, atoms), got[False].rows(part, atoms), rtol=1e-12, atol=1e-14)
    b = s.block("1", "3")
    o = O.ActivationOracle(s.model, s.inputs[0], s.targets, s.loss_fn).block("1", "3")
    O.assert_rel(b.full, o["full"], 1e-10)
    O.assert_rel(b.gn, o["gn"], 1e-10, scale=O.fro(o["full"]) + O.fro(o["gn"]))


def test_a_single_direction_never_takes_the_batched_path(monkeypatch):
    s = _session()
    atoms, op = _op(s)
    op.batched = True
    flags = []
    real = torch.autograd.grad

    def spy(*a, **k):
        flags.append(k.get("is_grads_batched", False))
        return real(*a, **k)
    monkeypatch.setattr(torch.autograd, "grad", spy)
    op.products(atoms[1:], torch.randn(1, op.dim(atoms[1:]), dtype=F64), atoms)
    assert flags and not any(flags)


def test_products_are_kept_short_by_the_measured_time_per_direction():
    s = _session()
    atoms, op = _op(s)
    op.batched, op.timings = False, {"loop": 0.3, "batched": 0.5}
    assert op.directions_within(1 << 40, atoms[1:], atoms, 10_000) == 4           # ≥ 4, ~1 s
    op.timings = {"loop": 0.01, "batched": 0.5}
    assert op.directions_within(1 << 40, atoms[1:], atoms, 10_001) == int(operators.CurvatureOperator.PRODUCT_SECONDS / 0.01)


def test_onednn_stays_on_without_rnn_layers_and_off_with_them():
    s = _session()
    assert _op(s)[1].problem.onednn is True
    lstm = _session(nn.Sequential(nn.Linear(6, 6)))
    lstm.model.add_module("rnn", nn.LSTM(6, 3))     # holds an RNN layer (never called: the flag is by module)
    atoms = lstm._atoms("0", "activation")
    assert lstm.operator(atoms, "activation", mode="double-backward").problem.onednn is False
