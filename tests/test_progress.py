"""First results in seconds: exact maps stream within a node, cancel within one product (issue 12, item 2)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore import data, models
from hessexplore.errors import JobCancelled
from hessexplore.operators import CurvatureOperator

F64 = torch.float64


@pytest.fixture(scope="module")
def s():
    torch.manual_seed(0)
    m = models.MLP(d_in=4, width=200, depth=2, d_out=3, activation="gelu", norm=None).eval()
    return hx.Session(m, nn.CrossEntropyLoss(), data.blobs(8, d=4, classes=3, seed=0), dtype=F64)


NODES = ["blocks.0.0", "blocks.1.0"]          # 200 columns each


def test_partial_results_arrive_before_a_long_node_ends(s):
    maps = list(s.iter_coupling_map(NODES, method="exact", first_chunk=16))
    final = maps[-1]
    assert final.done and final.columns_done == final.columns_total == 400
    early = maps[0]
    assert early.columns_done == 16 and not early.filled.any()            # nothing finished yet ...
    assert float(early.partial["R"][0, 0]) > 0                             # ... but the swept node has a value
    mid = next(cm for cm in maps if 200 < cm.columns_done < 400)           # inside the second node's columns
    assert not mid.filled.any() and bool((mid.partial["R"] > 0).all())
    # partial norms grow monotonically to the exact ones, which they never exceed
    prev = torch.zeros(2, 2, dtype=F64)
    for cm in maps:
        assert bool((cm.partial["R"] >= prev * (1 - 1e-12)).all())
        assert bool((cm.partial["R"] <= final.R * (1 + 1e-12)).all())
        prev = cm.partial["R"]
    assert [cm.columns_done for cm in maps[:-1]] == sorted(cm.columns_done for cm in maps[:-1])
    assert len(maps) >= 4                                                  # 16, 48, 112, 240, 400 columns
    assert torch.equal(final.partial["R"], final.R)
    exact = s.coupling_map(NODES, method="exact", first_chunk=None)
    assert torch.allclose(final.R, exact.R, rtol=1e-12, atol=0)
    assert torch.allclose(final.gap, exact.gap, rtol=1e-10, atol=0)
    assert torch.allclose(final.D, exact.D, rtol=1e-10, atol=0)


def test_cancel_stops_within_one_batched_product(s, monkeypatch):
    calls = []
    real = CurvatureOperator.products

    def counting(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(CurvatureOperator, "products", counting)
    stop = {"now": False}
    seen = []
    with pytest.raises(JobCancelled):
        for cm in s.iter_coupling_map(NODES, method="exact", first_chunk=8, should_stop=lambda: stop["now"]):
            seen.append((cm.columns_done, len(calls)))
            stop["now"] = True           # the user clicks cancel after the first partial map
    assert len(seen) == 1 and seen[0][0] == 8
    assert len(calls) == seen[0][1]      # no product after the cancel request


def test_the_first_partial_map_waits_for_no_measurement(s, monkeypatch):
    """Measuring (the memory line, batched or looped) costs many products on a large model; the first partial
    map comes from plain backwards before any of it, and the finished map is the same as without it."""
    measured = []
    for name in ("memory_cost", "_measure"):
        real = getattr(CurvatureOperator, name)
        monkeypatch.setattr(CurvatureOperator, name,
                            lambda self, *a, _real=real, _name=name, **kw: measured.append(_name) or _real(self, *a, **kw))
    fresh = hx.Session(s.model, s.loss_fn, (s.inputs[0], s.targets), dtype=F64)
    maps = []
    for cm in fresh.iter_coupling_map(NODES, method="exact", first_chunk=8):
        maps.append((cm, list(measured)))
    first, before = maps[0]
    assert first.columns_done == 8 and before == []
    assert float(first.partial["R"][0, 0]) > 0 and not first.filled.any()
    assert "memory_cost" in maps[-1][1]            # the rest of the sweep is memory-budgeted as before
    exact = s.coupling_map(NODES, method="exact", first_chunk=None)
    assert torch.allclose(maps[-1][0].R, exact.R, rtol=1e-12, atol=0)
    assert torch.allclose(maps[-1][0].gap, exact.gap, rtol=1e-10, atol=0)
