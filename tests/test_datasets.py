"""A whole data set: products are the sample-weighted sums over its batches (uneven ones too)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hessexplore as hx
import oracles as O
from hessexplore.errors import HessExploreError, JobCancelled

F64 = torch.float64
CE = nn.CrossEntropyLoss()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 8), nn.Tanh(),
                         nn.Linear(8, 3)).to(F64).eval()


def _data(n=23):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g, dtype=F64), torch.randint(0, 3, (n,), generator=g)


def _batches(x, y, sizes):
    out, at = [], 0
    for k in sizes:
        out.append((x[at:at + k], y[at:at + k]))
        at += k
    assert at == len(x)
    return out


@pytest.fixture(scope="module")
def sessions():
    model, (x, y) = _model(), _data()
    whole = hx.Session(model, CE, (x, y))
    listed = hx.Session(model, CE, _batches(x, y, [8, 8, 5, 2]))
    loader = hx.Session(model, CE, DataLoader(TensorDataset(x, y), batch_size=6, shuffle=False))
    return whole, listed, loader


def test_blocks_of_a_data_set_equal_those_of_one_concatenated_batch(sessions):
    whole, listed, loader = sessions
    assert listed.num_samples == loader.num_samples == whole.num_samples == 23
    for s in (listed, loader):
        for v, w, space in [("1", "3", "activation"), ("4", "4", "activation"), ("0", "5", "parameter"),
                            ("3", "3", "parameter")]:
            a, b = whole.block(v, w, space=space), s.block(v, w, space=space)
            O.assert_rel(b.full, a.full, 1e-10, what=f"{v}-{w} {space}")
            O.assert_rel(b.gn, a.gn, 1e-10, scale=O.fro(a.full), what=f"{v}-{w} {space} gn")


def test_estimates_and_spectra_of_a_data_set_equal_those_of_one_batch(sessions):
    whole, listed, _ = sessions
    ea = list(whole.estimate("1", "3", probes=16, seed=3, batch_size=8))[-1]
    eb = list(listed.estimate("1", "3", probes=16, seed=3, batch_size=8))[-1]
    for name in ("resonance", "norm_gn", "norm_tensor"):
        a, b = getattr(ea, name), getattr(eb, name)
        assert abs(a.value - b.value) <= 1e-10 * abs(a.value) and abs(a.stderr - b.stderr) <= 1e-9 * a.stderr
    sa, sb = whole.spectrum("3"), listed.spectrum("3")
    O.assert_rel(sb.eigenvalues, sa.eigenvalues, 1e-10, scale=float(sa.eigenvalues.abs().max()))
    pa, pb = whole.phi(), listed.phi()
    assert abs(pa - pb) <= 1e-10


def test_a_shuffling_loader_is_refused_and_a_changing_one_is_caught():
    model, (x, y) = _model(), _data()
    with pytest.raises(HessExploreError, match="shuffle=False"):
        hx.Session(model, CE, DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True))

    class Drifting:
        """Iterates its batches in another order on every pass (like a reshuffled generator)."""

        def __init__(self):
            self.passes = 0
            self.batches = _batches(x, y, [8, 8, 7])

        def __iter__(self):
            self.passes += 1
            return iter(self.batches if self.passes % 2 else self.batches[::-1])

    with pytest.raises(HessExploreError, match="different first batch"):   # caught on the second pass
        hx.Session(model, CE, Drifting())


def test_cancel_between_batches_leaves_the_session_usable():
    model, (x, y) = _model(), _data()
    s = hx.Session(model, CE, _batches(x, y, [8, 8, 7]))
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] >= 2      # let the first batch through, stop before the second

    it = s.estimate("1", "3", probes=8, batch_size=8, should_stop=stop)
    with pytest.raises(JobCancelled):
        next(it)
    assert calls["n"] >= 2
    assert s.block("1", "3").shape == (8, 8)


def test_tracker_on_a_training_set_loader_equals_one_concatenated_batch():
    model, (x, y) = _model(), _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=False)   # 7, 7, 7, 2
    ta = hx.Tracker(model, CE, (x, y), every=1, groups=["3", "5"], coupling=False)
    tb = hx.Tracker(model, CE, loader, every=1, groups=["3", "5"], coupling=False)
    ra, rb = ta.record(0), tb.record(0)
    assert abs(ra["eval_loss"] - rb["eval_loss"]) <= 1e-12 and abs(ra["eval_acc"] - rb["eval_acc"]) <= 1e-12
    for g in ("3", "5"):
        _, va = ta.run.series("lambda_max", group=g)
        _, vb = tb.run.series("lambda_max", group=g)
        assert abs(va[0] - vb[0]) <= 1e-10 * abs(va[0])


def test_progress_in_batches():
    model, (x, y) = _model(), _data()
    s = hx.Session(model, CE, _batches(x, y, [8, 8, 7]))
    seen = []
    s.data.on_batch = lambda done, total: seen.append((done, total))
    snaps = list(s.estimate("1", "3", probes=16, batch_size=8, krylov=False))
    assert len(snaps) == 2
    # every probe round runs its products over the 3 batches: (1,3) (2,3) (3,3) per product
    assert seen and set(seen) == {(1, 3), (2, 3), (3, 3)} and len(seen) % 3 == 0
