"""The explorer as a demanding user finds it (issue 10), in JupyterLab AND Notebook 7 (headless
Chromium): notebook shortcuts never fire inside the widget, panels never show a stale pick,
Export writes next to the notebook, big graphs fit / scroll / search, inputs are validated in
the page with the kernel's limits.

Screenshots of each state go to artifacts/screenshots/ (git-ignored)."""
from __future__ import annotations

import time

import pytest

from labkit import open_notebook, run_cell, shoot

pytestmark = pytest.mark.browser

SETUP = """\
import torch, hessexplore as hx
from hessexplore import models, data
torch.manual_seed(0)
model = models.MLP(8, 16, 2, 3, activation="gelu").eval()
x, y = data.blobs(64, 8, 3, seed=0)
w = hx.explore(model, torch.nn.CrossEntropyLoss(), (x, y), dtype=torch.float64)
w"""


def start(page, lab, name: str, cells: list[str] | None = None) -> None:
    open_notebook(page, lab, name, cells or [SETUP, "1 + 1"])
    run_cell(page, 0)
    page.locator(".hx-root").wait_for(timeout=90_000)   # a cold kernel imports torch first
    page.locator("[data-hx-node]").first.wait_for()


def cells(page):
    return page.locator(".jp-Notebook .jp-Cell")


def status(page) -> str:
    return page.locator("[data-hx-status]").first.get_attribute("data-hx-status")


def wait_status(page, state: str, kind: str | None = None, timeout: float = 120) -> None:
    js = ("([st, kind]) => { const s = document.querySelector('[data-hx-status]');"
          " return s && s.dataset.hxStatus === st && (!kind || s.dataset.hxKind === kind); }")
    page.wait_for_function(js, arg=[state, kind], timeout=timeout * 1000)


def notebook_intact(page, n_cells: int) -> None:
    assert cells(page).count() == n_cells, f"cells: {cells(page).count()} (a/b inserted one?)"
    first = cells(page).nth(0)
    assert "jp-CodeCell" in (first.get_attribute("class") or ""), "the explorer's cell turned into Markdown"
    assert page.locator(".hx-root").count() == 1, "the explorer disappeared"


def test_notebook_shortcuts_never_fire_inside_the_widget(page, frontend):
    start(page, frontend, f"keys-{frontend.app}.ipynb")
    n = cells(page).count()
    targets = [
        ("a graph node", '[data-hx-node="blocks.0.1"]'),
        ("a toolbar button", '[data-hx-mode="exact"]'),
        ("the Stream button", '[data-hx-mode="stream"]'),
        ("a zoom button", '[data-hx-action="zoom-in"]'),
        ("the search box", '[data-hx-control="search"]'),
        ("a collapse toggle", '[data-hx-action="fit"]'),
    ]
    for what, sel in targets:
        page.locator(sel).first.click()
        for key in ("m", "a", "b", "y", "Shift+M", "x", "c", "v", "d", "z"):
            page.keyboard.press(key)
        time.sleep(0.2)
        notebook_intact(page, n)
        assert page.evaluate("() => !!document.activeElement.closest('.hx-root')"), f"focus left the widget after {what}"
    page.locator('[data-hx-control="search"]').first.fill("")
    # every focusable element carries the marker itself (lumino stops at the first match)
    bare = page.evaluate("""() => [...document.querySelectorAll('.hx-root button, .hx-root input, .hx-root select,'
        + ' .hx-root textarea, .hx-root [tabindex]')].filter(e => !e.hasAttribute('data-lm-suppress-shortcuts'))
        .map(e => e.outerHTML.slice(0, 80))""")
    assert bare == [], bare
    shoot(page, f"i10-1-keys-{frontend.app}")
    assert not page.hx_errors, page.hx_errors


def current(page, panel: str) -> str | None:
    return page.locator(f'[data-hx-panel="{panel}"]').first.get_attribute("data-hx-current")


def banner(page, panel: str) -> str:
    return page.locator(f'[data-hx-panel="{panel}"] [data-hx-stale]').first.inner_text()


def test_panels_never_show_a_stale_pick_and_export_writes_what_is_current(page, frontend):
    start(page, frontend, f"stale-{frontend.app}.ipynb")
    page.locator('[data-hx-mode="exact"]').first.click()
    for node in ("blocks.1.0", "blocks.1.0"):                  # diagonal: block, then its local spectrum
        page.locator(f'[data-hx-node="{node}"]').first.click()
    wait_status(page, "done", "spectrum")
    assert current(page, "block") == "true" and current(page, "spectrum") == "true"
    assert current(page, "metrics") == "true"
    # a new pick starts: everything on screen is from the earlier pick, and says so
    page.locator('[data-hx-node="blocks.0.1"]').first.click()
    page.wait_for_function("() => document.querySelector('[data-hx-panel=\"block\"]').dataset.hxCurrent === 'false'")
    assert current(page, "spectrum") == "false" and current(page, "metrics") == "false"
    assert "H[blocks.1.0, blocks.1.0]" in banner(page, "block")
    assert "current pick is H[blocks.0.1, …]" in banner(page, "block")
    shoot(page, f"i10-2-stale-{frontend.app}")
    # stream another pair: the metrics are current, the old block and spectrum still say they are not
    page.locator('[data-hx-mode="stream"]').first.click()
    box = page.locator('[data-hx-control="probes"]').first
    box.fill("40")
    box.press("Enter")
    page.locator('[data-hx-node="head"]').first.click()
    wait_status(page, "done", "estimate")
    assert current(page, "metrics") == "true"
    assert current(page, "block") == "false" and current(page, "spectrum") == "false"
    assert "H[blocks.1.0, blocks.1.0] (activation)" in banner(page, "block")
    # Export: the kernel writes both files next to the notebook and the page says where
    page.locator('[data-hx-action="export"]').first.click()
    note = page.locator("[data-hx-export-result]").first
    page.wait_for_function("() => document.querySelector('[data-hx-export-result]').textContent.startsWith('Saved')",
                           timeout=30_000)
    text = note.inner_text()
    assert str(frontend.root) in text.replace("\n", ""), text
    title = note.get_attribute("data-hx-export-title")
    assert title.startswith("hessexplore · H[blocks.0.1, head] (activation)\nstreamed · 40/40 probes"), title
    assert "…" not in title and "block of an earlier pick left out" in title
    written = sorted(p.name for p in frontend.root.glob("hessexplore-*"))
    assert len(written) == 2 and written[0].startswith("hessexplore-graph-") and written[0].endswith(".svg"), written
    png = next(frontend.root.glob("hessexplore-panels-*.png")).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert b"<svg" in next(frontend.root.glob("hessexplore-graph-*.svg")).read_bytes()[:400]
    shoot(page, f"i10-2-exported-{frontend.app}")
    for f in frontend.root.glob("hessexplore-*"):
        f.unlink()
    assert not page.hx_errors, page.hx_errors


RESNET = """\
import torch, hessexplore as hx
from torch import nn
torch.manual_seed(0)

class BasicBlock(nn.Module):          # torchvision's, with its reused ReLU
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)
    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)

class ResNet(nn.Module):
    def __init__(self, w=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU()
        chans = [w, w, 2 * w, 2 * w, 2 * w]
        for i in range(1, 5):
            stride = 1 if i == 1 else 2 if i < 4 else 1
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(chans[i - 1], chans[i], stride), BasicBlock(chans[i], chans[i])))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * w, 3)
    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))

model = ResNet().eval()
x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
w = hx.explore(model, nn.CrossEntropyLoss(), (x, y))
print(len(w.graph["nodes"]), "nodes")
w"""


def viewport_scale(page) -> float:
    t = page.locator(".hx-viewport").first.get_attribute("transform")
    return float(t.split("scale(")[1].rstrip(")"))


def test_big_graph_fits_scrolls_collapses_by_shape_and_finds(page, frontend):
    start(page, frontend, f"resnet-{frontend.app}.ipynb", [RESNET])
    n_nodes = int(page.locator(".jp-OutputArea-output").first.inner_text().split()[0])
    assert n_nodes > 40
    # ResNet's stages have no trailing index: they are grouped by shape, drawn collapsed
    for s in range(1, 5):
        page.locator(f'[data-hx-node="layer{s}"].hx-collapsed').wait_for()
    assert int(page.locator(".hx-graph-panel").get_attribute("data-hx-visible-nodes")) <= 40
    for s in range(1, 5):                                         # expand everything, stage by stage
        page.locator(f'[data-hx-toggle="layer{s}"]').first.scroll_into_view_if_needed()
        y0 = page.locator(f'[data-hx-node="layer{s}"]').first.bounding_box()["y"]
        page.locator(f'[data-hx-toggle="layer{s}"]').first.click()
        # the toggled stage stays where it was on screen (no jump back to the top)
        y1 = page.locator(f'[data-hx-box="layer{s}"]').first.bounding_box()["y"]
        assert abs(y1 - y0) < 6, (s, y0, y1)          # (the collapsed node's stacked look sits 4 px higher)
    while page.locator(".hx-collapsed [data-hx-toggle]").count():
        page.locator(".hx-collapsed [data-hx-toggle]").first.click()
    assert int(page.locator(".hx-graph-panel").get_attribute("data-hx-visible-nodes")) == n_nodes
    # ⤢ fits the whole graph, height included
    page.locator('[data-hx-action="fit"]').first.click()
    area = page.locator(".hx-graph").first.bounding_box()
    drawn = page.locator(".hx-viewport").first.bounding_box()
    assert drawn["height"] <= area["height"] + 1 and drawn["width"] <= area["width"] + 1, (drawn, area)
    shoot(page, f"i10-3-fit-{frontend.app}")
    # the plain wheel scrolls, it does not zoom; Ctrl + wheel zooms
    page.locator('[data-hx-action="zoom-in"]').first.click()
    page.locator('[data-hx-action="zoom-in"]').first.click()
    k = viewport_scale(page)
    box = page.locator(".hx-graph").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    top0 = page.evaluate("document.querySelector('.hx-graph').scrollTop")
    page.mouse.wheel(0, 300)
    time.sleep(0.3)
    assert viewport_scale(page) == k
    assert page.evaluate("document.querySelector('.hx-graph').scrollTop") > top0
    page.keyboard.down("Control")
    page.mouse.wheel(0, -200)
    page.keyboard.up("Control")
    time.sleep(0.3)
    assert viewport_scale(page) > k
    # collapse again, then find a node inside a collapsed stage by name
    page.locator('[data-hx-toggle="layer3"]').first.click()
    page.locator('[data-hx-node="layer3"].hx-collapsed').wait_for()
    search = page.locator('[data-hx-control="search"]').first
    search.fill("layer3.1.conv2")
    search.press("Enter")
    found = page.locator('[data-hx-node="layer3.1.conv2"]')
    found.wait_for()
    assert "hx-found" in found.first.get_attribute("class")
    nb = found.first.bounding_box()
    area = page.locator(".hx-graph").first.bounding_box()
    assert area["y"] <= nb["y"] and nb["y"] + nb["height"] <= area["y"] + area["height"], "scrolled into view"
    assert page.locator("[data-hx-search-count]").first.inner_text() == "1/1"
    shoot(page, f"i10-3-search-{frontend.app}")
    assert not page.hx_errors, page.hx_errors


def test_inputs_are_checked_in_the_page_with_the_kernels_limits(page, frontend):
    start(page, frontend, f"inputs-{frontend.app}.ipynb")
    probes = page.locator('[data-hx-control="probes"]').first
    err = page.locator("[data-hx-field-error]").first
    for typed, needle in (("5000000", "at most 1,000,000, the kernel's limit"), ("0", "at least 1"),
                          ("2.5", "whole number"), ("", "type a whole number")):
        probes.fill(typed)
        probes.press("Enter")
        err.wait_for(state="visible")
        assert needle in err.inner_text(), err.inner_text()
        assert probes.get_attribute("aria-invalid") == "true"
        assert probes.input_value() == typed, "what was typed stays to be fixed"
    # a pick while the field is wrong starts nothing
    page.locator('[data-hx-node="blocks.0.1"]').first.click()
    page.locator('[data-hx-node="blocks.1.1"]').first.click()
    time.sleep(1.0)
    assert status(page) == "idle"
    shoot(page, f"i10-6-invalid-{frontend.app}")
    probes.fill("1000000")
    probes.press("Enter")
    err.wait_for(state="hidden")
    assert page.evaluate("() => JSON.stringify(document.querySelector('[data-hx-control=\"probes\"]').value)") == '"1000000"'
    ci = page.locator('[data-hx-control="rel_ci"]').first
    ci.fill("250")
    ci.press("Enter")
    err.wait_for(state="visible")
    assert "at most 100 %" in err.inner_text()
    ci.fill("20")
    ci.press("Enter")
    err.wait_for(state="hidden")
    # the kernel's limit itself is accepted and runs (target ±20 % stops it early); the metric
    # cards keep their height while values stream in (empty, streaming, done)
    heights = "() => [...document.querySelectorAll('[data-hx-metric]')].map(e => e.getBoundingClientRect().height)"
    before = page.evaluate(heights)
    page.evaluate("""(js) => { window.__hxHeights = new Set();
        const f = eval(js); new MutationObserver(() => f().forEach(h => window.__hxHeights.add(Math.round(h))))
          .observe(document.querySelector('.hx-metrics'), {subtree: true, attributes: true, childList: true}); }""", heights)
    page.locator('[data-hx-node="blocks.0.1"]').first.click()
    page.locator('[data-hx-node="blocks.1.1"]').first.click()
    wait_status(page, "done", "estimate", 120)
    seen = page.evaluate("[...window.__hxHeights]")
    assert seen == [round(before[0])] and len(set(before)) == 1, (before, seen)
    msg = page.locator(".hx-status-msg").first.inner_text()
    assert "target ±20 % reached" in msg, msg
    assert not page.hx_errors, page.hx_errors
