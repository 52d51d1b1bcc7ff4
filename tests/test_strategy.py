"""How products run: batched or looped by measurement, short products, oneDNN only where it has derivatives."""
from __future__ import annotations

import pytest
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


@pytest.fixture
def grad_calls(monkeypatch):
    """The keyword arguments of every torch.autograd.grad call made while the test runs."""
    calls = []
    real = torch.autograd.grad

    def spy(*a, **k):
        calls.append(k)
        return real(*a, **k)
    monkeypatch.setattr(torch.autograd, "grad", spy)
    return calls


def _batched_flags(calls):
    return [k.get("is_grads_batched", False) for k in calls]


def test_a_single_direction_never_takes_the_batched_path(grad_calls):
    s = _session()
    atoms, op = _op(s)
    op.batched = True
    op.products(atoms[1:], torch.randn(1, op.dim(atoms[1:]), dtype=F64), atoms)
    assert grad_calls and not any(_batched_flags(grad_calls))


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


def _long_sweeps(s, monkeypatch, margin):
    """Every sweep counts as long (so the session times the stateless operator), with a fixed verdict:
    margin=inf picks the stateless operator whenever it works, margin=0 never."""
    s.SWEEP_MEASURE_COLUMNS, s.SWEEP_MEASURE_SECONDS = 0, 0.0
    calls = []
    real = operators.faster_sweep

    def judged(*a, **k):
        calls.append(a[2])
        return real(*a, **{**k, "margin": margin})
    monkeypatch.setattr("hessexplore.session.faster_sweep", judged)
    return calls


def test_a_long_exact_sweep_runs_on_the_stateless_operator_when_it_is_faster(monkeypatch):
    s = _session()
    calls = _long_sweeps(s, monkeypatch, float("inf"))
    o = O.ActivationOracle(s.model, s.inputs[0], s.targets, s.loss_fn).block("1", "3")
    b = s.block("1", "3")
    assert calls == [s._atoms("3", "activation")]             # the swept side (equal sizes: the later) timed once
    O.assert_rel(b.full, o["full"], 1e-10)
    O.assert_rel(b.gn, o["gn"], 1e-10, scale=O.fro(o["full"]) + O.fro(o["gn"]))
    (choice,) = {c for t in s._tunings.values() for c in t.sweeps.values()}
    assert choice[0] == "forward-over-reverse" and choice[1] >= 4
    again = s.block("3", "1")                                  # the choice is kept: no second measurement
    assert len(calls) == 1
    assert torch.equal(again.full, b.full.T) and torch.equal(again.gn, b.gn.T)
    p = s.block("2", "2", space="parameter")                   # parameter space (a Linear) likewise
    po = O.ParameterOracle(s.model, s.inputs[0], s.targets, s.loss_fn).block("2", "2")
    O.assert_rel(p.full, po["full"], 1e-10)
    O.assert_rel(p.gn, po["gn"], 1e-10, scale=O.fro(po["full"]) + O.fro(po["gn"]))


def test_a_long_exact_sweep_stays_on_the_recorded_operator_when_it_is_not_slower(monkeypatch):
    s = _session()
    _long_sweeps(s, monkeypatch, 0.0)
    b = s.block("1", "3")
    (choice,) = {c for t in s._tunings.values() for c in t.sweeps.values()}
    assert choice[0] == "double-backward"
    o = O.ActivationOracle(s.model, s.inputs[0], s.targets, s.loss_fn).block("1", "3")
    O.assert_rel(b.full, o["full"], 1e-10)


def test_short_sweeps_measure_nothing_more(monkeypatch):
    s = _session()
    calls = []
    monkeypatch.setattr("hessexplore.session.faster_sweep", lambda *a, **k: calls.append(a) or ("double-backward", 1))
    s.block("1", "3")
    s.coupling_map(["1", "3"], method="exact")
    assert calls == []


def test_an_exact_map_shows_its_first_partial_result_before_choosing_the_sweep_operator(monkeypatch):
    s = _session()
    s.SWEEP_MEASURE_COLUMNS, s.SWEEP_MEASURE_SECONDS = 0, 0.0
    events = []
    real = operators.faster_sweep
    monkeypatch.setattr("hessexplore.session.faster_sweep",
                        lambda *a, **k: events.append("choose") or real(*a, **{**k, "margin": float("inf")}))
    maps = []
    for m in s.iter_coupling_map(["1", "3"], method="exact", first_chunk=2):
        events.append("map")
        maps.append(m)
    assert events[0] == "map" and "choose" in events and maps[0].columns_done == 2
    o = O.ActivationOracle(s.model, s.inputs[0], s.targets, s.loss_fn).block("1", "3")
    assert abs(maps[-1].R[0, 1] - O.fro(o["full"])) <= 1e-10 * O.fro(o["full"])


def test_the_stateless_operator_failing_keeps_the_recorded_sweep(monkeypatch):
    from test_autodiff_compat import CE, Square, WithFunction, _batch
    torch.manual_seed(0)
    model = WithFunction(Square).to(F64).eval()
    x, y = _batch()
    s = hx.Session(model, CE, (x, y), trace=False)     # the Function has no forward-mode rule
    _long_sweeps(s, monkeypatch, float("inf"))
    b = s.block("a", "b", space="parameter")
    (choice,) = {c for t in s._tunings.values() for c in t.sweeps.values()}
    assert choice[0] == "double-backward"
    o = O.ParameterOracle(model, x, y, CE).block("a", "b")
    O.assert_rel(b.full, o["full"], 1e-10)


def test_each_product_shape_is_measured_on_its_own_and_a_forced_way_overrides_them(grad_calls):
    s = _session()
    atoms, op = _op(s)
    shapes = [(tuple(atoms[1:]), tuple(atoms), True, True), (tuple(atoms[:1]), tuple(atoms[:1]), True, True)]
    for w, out, _, _ in shapes:
        op.products(list(w), torch.randn(8, op.dim(w), dtype=F64), list(out))
    assert set(op.tuning.ways) == set(shapes)
    for key, (batched, timings) in op.tuning.ways.items():
        assert op.way(*key) == (batched, timings) and batched == (timings["batched"] < timings["loop"])
    op.tuning.ways[shapes[0]] = (True, {"loop": 2.0, "batched": 1.0})
    op.tuning.ways[shapes[1]] = (False, {"loop": 1.0, "batched": 2.0})

    def ways_taken(w, out):
        grad_calls.clear()
        op.products(list(w), torch.randn(5, op.dim(w), dtype=F64), list(out))
        return set(_batched_flags(grad_calls))
    assert ways_taken(*shapes[0][:2]) == {True}        # each shape runs its own measured way
    assert ways_taken(*shapes[1][:2]) == {False}
    op.batched = False                                 # forced: every shape
    assert ways_taken(*shapes[0][:2]) == {False}


def test_a_product_records_only_what_it_needs_and_records_more_when_asked():
    """H-only products skip the GN recording; gradients are taken only for the atoms products start from.
    Every stage still agrees with the dense oracle: H_{1,3} t, then GN_{1,3} t, then H_{3,1} s."""
    s = _session()
    (a1, a3), op = _op(s)
    o13 = O.ActivationOracle(s.model, s.inputs[0], s.targets, s.loss_fn).block("1", "3")
    T = torch.randn(2, op.dim([a3]), dtype=F64)
    full = op.products([a3], T, [a1], gn=False).rows("full", [a1])
    rec = op._recorded
    assert not rec.gn and set(rec.grads) == {a3}
    O.assert_rel(full, T @ o13["full"].T, 1e-10)

    both = op.products([a3], T, [a1])                  # a GN part: recorded again, with γ
    assert op._recorded is not rec and op._recorded.gn and set(op._recorded.grads) == {a3}
    O.assert_rel(both.rows("full", [a1]), T @ o13["full"].T, 1e-10)
    O.assert_rel(both.rows("gn", [a1]), T @ o13["gn"].T, 1e-10, scale=O.fro(o13["full"]) + O.fro(o13["gn"]))

    rec = op._recorded
    S = torch.randn(2, op.dim([a1]), dtype=F64)
    back = op.products([a1], S, [a3], gn=False)        # H-only on a GN recording: kept, one more gradient
    assert op._recorded is rec and set(rec.grads) == {a1, a3}
    O.assert_rel(back.rows("full", [a3]), S @ o13["full"], 1e-10)


@pytest.mark.parametrize("k", [3, 4, 6, 8, 12])
@pytest.mark.parametrize("winner", ["loop", "batched"])
def test_the_measuring_product_returns_what_the_chosen_way_computes_bitwise(monkeypatch, k, winner):
    """The first product of a shape is timed both ways; what it returns is the product run the chosen way,
    bitwise what every later product of the same directions returns (its timed runs are reused, not redone)."""
    s = _session()
    atoms, op = _op(s)
    fake = {"loop": 1.0, "batched": 0.01} if winner == "batched" else {"loop": 0.01, "batched": 1.0}
    order = iter(["loop", "batched"] * 2)
    monkeypatch.setattr(operators, "_timed", lambda fn, device: (fake[next(order)], fn()))
    T = torch.randn(k, op.dim(atoms[1:]), dtype=F64)
    first = op.products(atoms[1:], T, atoms)
    assert op.way(atoms[1:], atoms)[0] == (winner == "batched")
    again = op.products(atoms[1:], T, atoms)
    for part in ("full", "gn"):
        for a in atoms:
            assert getattr(first, part)[a].shape == (k, op.dim([a]))
            assert torch.equal(getattr(first, part)[a], getattr(again, part)[a]), (part, a)
