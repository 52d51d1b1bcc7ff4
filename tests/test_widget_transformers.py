"""The explorer's Python side on transformers captured by the new capture layer (issue 8 item 5):
HF GPT-2's blocks, attention and MLP are containers of the graph trait, and picks on them stream
in activation and parameter space, checked against the library's own estimate."""
from __future__ import annotations

import pytest
import torch

import hessexplore as hx

from test_widget import compute, make, send

pytestmark = pytest.mark.usefixtures("single_thread")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gpt2_session():
    from zoo import gpt2
    case = gpt2()
    return hx.Session(case.model, case.loss_fn, (case.x, case.y), dtype=torch.float64, output=case.output)


def test_gpt2_blocks_attention_and_mlp_are_containers(gpt2_session, monkeypatch):
    w = make(gpt2_session, monkeypatch)
    g = w.graph
    scopes = {s for n in g["nodes"] for s in n["scope"]}
    for c in ("transformer.h.0", "transformer.h.0.attn", "transformer.h.0.mlp", "transformer.h.1"):
        assert c in scopes, c
    # each container has an output node the page can stand it on (its id or an alias)
    ids = {n["id"] for n in g["nodes"]} | {a for n in g["nodes"] for a in n["aliases"]}
    assert {"transformer.h.0", "transformer.h.0.attn", "transformer.h.0.mlp"} <= ids
    assert {"transformer.h.0.attn", "transformer.h.0.mlp"} <= set(g["groups"]) | {m["name"] for m in g["modules"]}
    w.close()


@pytest.mark.parametrize("space,v,w2", [
    ("activation", "transformer.h.0.attn", "transformer.h.0.mlp"),
    ("parameter", "transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_fc"),
])
def test_gpt2_pick_inside_a_block_streams_like_the_library(gpt2_session, monkeypatch, space, v, w2):
    w = make(gpt2_session, monkeypatch)
    send(w, {**compute(v, w2, probes=16, seed=3), "space": space})
    assert w.status["state"] == "done", w.status
    ref = list(gpt2_session.estimate(v, w2, space, probes=16, seed=3))[-1]
    got = w.estimate["metrics"]["resonance"]
    assert got["value"] == pytest.approx(ref.resonance.value, rel=1e-12)
    assert got["stderr"] == pytest.approx(ref.resonance.stderr, rel=1e-12)
    w.close()


def test_gpt2_diagonal_pick_of_a_block_gets_its_local_spectrum(gpt2_session, monkeypatch):
    w = make(gpt2_session, monkeypatch)
    group, why = w.spectrum_group("transformer.h.0.mlp", "activation")
    assert group == "transformer.h.0.mlp", why
    send(w, {**compute("transformer.h.0.mlp", probes=8), "spectrum": True})
    assert w.status["state"] == "done" and w.status["kind"] == "spectrum", w.status
    assert w.spectrum["group"] == "transformer.h.0.mlp" and w.spectrum["done"]
    assert w.spectrum["stats"]["n"] == gpt2_session.dim("transformer.h.0.mlp", "parameter")
    w.close()
