"""The user's model is never mutated, from any number of threads, and results stay right.

Parameter-space products used to swap tensors into the user's modules
(``functional_call`` on the model itself): two threads then computed wrong blocks
and could leave functorch tensors in place of the user's ``nn.Parameter``s.  Now
the captured graph takes parameters as arguments (or a private structural twin is
re-parametrised), and a job that sees the weights change says so.
"""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore.errors import ModelStateError

F64 = torch.float64
CE = nn.CrossEntropyLoss()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.LayerNorm(12), nn.Linear(12, 12), nn.GELU(),
                         nn.Linear(12, 3)).to(F64).eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 6, generator=g, dtype=F64), torch.randint(0, 3, (16,), generator=g)


@pytest.mark.parametrize("trace", [True, False])
def test_parameter_blocks_from_many_threads_are_right_and_leave_the_model_alone(trace):
    model, batch = _model(), _batch()
    params = {n: p for n, p in model.named_parameters()}
    values = {n: p.detach().clone() for n, p in params.items()}
    ref = hx.Session(model, CE, batch, trace=trace)
    pairs = [("0", "3"), ("3", "5"), ("5", "5"), ("0", "0")]
    expected = {pr: ref.block(*pr, space="parameter").full for pr in pairs}
    sessions = [hx.Session(model, CE, batch, trace=trace) for _ in range(3)] + [ref]
    errors, results = [], []

    def work(s, k):
        try:
            for i in range(6):
                pr = pairs[(i + k) % len(pairs)]
                results.append((pr, s.block(*pr, space="parameter").full))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, k)) for k, s in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == 6 * len(sessions)
    for pr, got in results:   # a race gives wrong blocks; threads may only reorder BLAS sums
        assert torch.allclose(got, expected[pr], rtol=1e-10, atol=1e-12 * float(expected[pr].abs().max())), \
            (pr, float((got - expected[pr]).abs().max()), float(expected[pr].abs().max()))
    for n, p in model.named_parameters():
        assert p is params[n] and type(p) is nn.Parameter and torch.equal(p.detach(), values[n])
    hx.Session(model, CE, batch)   # a new session still works (the parameters have storage)


def test_training_in_another_thread_during_a_job_is_detected():
    model, batch = _model(), _batch()
    s = hx.Session(model, CE, batch)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    it = s.estimate("1", "4", probes=64, batch_size=4)
    next(it)
    x, y = batch
    opt.zero_grad()
    CE(model(x), y).backward()
    opt.step()                     # the weights change between two snapshots of the stream
    with pytest.raises(ModelStateError, match="weights changed"):
        for _ in it:
            pass
    # exact work notices too: a progress callback that trains mid-sweep
    s2 = hx.Session(model, CE, batch, memory_budget=1)   # one column per chunk: many chunks

    def train_once(done, total, _state={"n": 0}):
        if _state["n"] == 0:
            opt.step()
        _state["n"] += 1

    with pytest.raises(ModelStateError, match="weights changed"):
        s2.block("3", "3", progress=train_once)
    # and a fresh computation after training is fine
    assert s2.block("3", "3").full.shape == (12, 12)
