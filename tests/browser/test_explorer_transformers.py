"""The explorer on transformers (issue 8 item 5 / issue 10), in a real JupyterLab: an
nn.TransformerEncoder (d_model 16, 2 layers) is drawn with its layers and attention as
collapsible containers; a pick inside the attention streams, in activation and parameter space."""
from __future__ import annotations

import json

import pytest

from labkit import open_notebook, run_cell, shoot

pytestmark = pytest.mark.browser

ENCODER = """\
import torch, hessexplore as hx
from torch import nn
torch.manual_seed(0)
class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)
    def forward(self, x):
        return self.head(self.enc(x).mean(1))
model = Classifier().eval()
x, y = torch.randn(8, 5, 16), torch.randint(0, 3, (8,))
w = hx.explore(model, nn.CrossEntropyLoss(), (x, y), dtype=torch.float64)
w.selection = {**w.selection, "probes": 24}
import json
print(json.dumps([n["id"] for n in w.graph["nodes"] if "enc.layers.0.self_attn" in n["scope"] and n["addressable"]]))
w"""


def job(page) -> int:
    return int(page.locator("[data-hx-status]").first.get_attribute("data-hx-job") or 0)


def wait_done(page, after: int, kind="estimate", timeout=180):
    """Wait for a job newer than ``after`` (the one a pick just started) to end."""
    page.wait_for_function("([k, after]) => { const s = document.querySelector('[data-hx-status]');"
                           " return s && Number(s.dataset.hxJob) > after && s.dataset.hxKind === k"
                           " && ['done', 'error', 'cancelled'].includes(s.dataset.hxStatus); }",
                           arg=[kind, after], timeout=timeout * 1000)
    st = page.locator("[data-hx-status]").first
    assert st.get_attribute("data-hx-status") == "done", page.locator(".hx-status-msg").first.inner_text()


def ids(page) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('[data-hx-node]')].map(e => e.dataset.hxNode)")


def test_transformer_layers_and_attention_are_containers_and_a_pick_inside_streams(page, lab):
    open_notebook(page, lab, "encoder.ipynb", [ENCODER])
    run_cell(page, 0)
    page.locator("[data-hx-node]").first.wait_for()
    out = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']").first.inner_text()
    in_attn = json.loads([ln for ln in out.splitlines() if ln.startswith("[")][-1])
    assert len(in_attn) >= 3, in_attn
    # the layers are containers: collapsible, expandable
    for c in ("enc.layers.0", "enc.layers.1"):
        if page.locator(f'[data-hx-node="{c}"].hx-collapsed').count():
            page.locator(f'[data-hx-toggle="{c}"]').first.click()
        page.locator(f'[data-hx-box="{c}"]').wait_for()
    page.locator('[data-hx-toggle="enc.layers.0"]').first.click()       # collapse it again, then expand
    page.locator('[data-hx-node="enc.layers.0"].hx-collapsed').wait_for()
    page.locator('[data-hx-toggle="enc.layers.0"]').first.click()
    page.locator('[data-hx-box="enc.layers.0"]').wait_for()
    attn = "enc.layers.0.self_attn"
    if page.locator(f'[data-hx-node="{attn}"].hx-collapsed').count():
        page.locator(f'[data-hx-toggle="{attn}"]').first.click()
    page.locator(f'[data-hx-box="{attn}"]').wait_for()
    drawn = ids(page)
    inside = [i for i in in_attn if i in drawn]
    assert inside == in_attn, (in_attn, drawn)
    shoot(page, "i10-8-encoder-expanded")
    # the attention's packed Q/K/V projection against the attention's output (SDPA)
    v = next(i for i in inside if i.startswith("linear"))
    w2 = next(i for i in inside if i.startswith("scaled_dot_product_attention"))
    before = job(page)
    page.locator(f'[data-hx-node="{v}"]').first.click()
    page.locator(f'[data-hx-node="{w2}"]').first.click()
    wait_done(page, before)
    r = page.locator('[data-hx-metric="resonance"]').first
    assert r.get_attribute("data-hx-probes") == "24" and float(r.get_attribute("data-hx-value")) > 0
    shoot(page, "i10-8-encoder-attention-pick")
    # parameter space: the attention's group against the first feed-forward layer
    page.locator('[data-hx-space="parameter"]').first.click()
    before = job(page)
    page.locator(f'[data-hx-node="{attn}"], [data-hx-aliases~="{attn}"]').first.click()
    page.locator('[data-hx-node="enc.layers.0.linear1"]').first.click()
    wait_done(page, before)
    assert float(page.locator('[data-hx-metric="resonance"]').first.get_attribute("data-hx-value")) > 0
    assert not page.hx_errors, page.hx_errors
