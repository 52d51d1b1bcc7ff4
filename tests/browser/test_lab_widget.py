"""The explorer in a real JupyterLab 4 in headless Chromium: click two nodes, watch metrics
stream, compare an exact pick with the library, cancel, and keep the kernel responsive.

Screenshots of each state go to artifacts/screenshots/ (git-ignored)."""
from __future__ import annotations

import time

import pytest

from labkit import open_notebook, run_cell, shoot

pytestmark = pytest.mark.browser

# The same problem is built in the notebook's kernel and in this test process.
SETUP = """\
import torch, hessexplore as hx
from hessexplore import models, data
torch.manual_seed(0)
model = models.MLP(8, 16, 2, 3, activation="gelu").eval()
x, y = data.blobs(64, 8, 3, seed=0)
"""
V, W = "blocks.0.1", "blocks.1.1"


def notebook_cells(probes: int) -> list[str]:
    return [SETUP + "w = hx.explore(model, torch.nn.CrossEntropyLoss(), (x, y), dtype=torch.float64)\n"
            f"w.selection = {{**w.selection, 'probes': {probes}}}\nw", "1 + 1"]


def start(page, lab, name: str, probes: int):
    open_notebook(page, lab, name, notebook_cells(probes))
    run_cell(page, 0)
    page.locator(".hx-root").wait_for(timeout=90_000)   # a cold kernel imports torch first
    page.locator(f'[data-hx-node="{V}"]').wait_for()
    assert page.locator('[data-hx-status="idle"]').count() == 1


def status(page) -> str:
    return page.locator("[data-hx-status]").first.get_attribute("data-hx-status")


def metric(page, name="resonance") -> dict:
    el = page.locator(f'[data-hx-metric="{name}"]').first
    return {k: el.get_attribute(f"data-hx-{k}") for k in ("value", "stderr", "probes")}


def watch_metric(page, name="resonance") -> None:
    """Record every change of a metric card's data attributes in window.__hxLog."""
    page.evaluate("""(name) => {
      const el = document.querySelector(`[data-hx-metric="${name}"]`);
      window.__hxLog = [];
      new MutationObserver(() => window.__hxLog.push({v: el.dataset.hxValue, e: el.dataset.hxStderr,
          p: el.dataset.hxProbes, s: document.querySelector('[data-hx-status]').dataset.hxStatus}))
        .observe(el, {attributes: true});
    }""", name)


def pick(page, v=V, w=W):
    page.locator(f'[data-hx-node="{v}"]').first.click()
    page.locator(f'[data-hx-node="{w}"]').first.click()


def wait_status(page, state: str, timeout: float = 120) -> None:
    page.locator(f'[data-hx-status="{state}"]').wait_for(timeout=timeout * 1000)


def wait_probes(page, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while True:
        p = metric(page)["probes"]
        if p and int(p) >= n:
            return int(p)
        assert time.monotonic() < deadline, f"no {n} probes after {timeout} s: status {status(page)}"
        time.sleep(0.05)


def test_stream_two_nodes(page, lab):
    start(page, lab, "stream.ipynb", probes=1200)
    shoot(page, "01-stream-idle")
    watch_metric(page)
    pick(page)
    wait_status(page, "running", 30)
    wait_probes(page, 16)
    shoot(page, "02-stream-running")
    wait_status(page, "done", 240)
    shoot(page, "03-stream-done")
    log = page.evaluate("window.__hxLog")
    rows = [r for r in log if r["v"] not in ("", None, "NaN")]
    values = {r["v"] for r in rows}
    assert len(values) >= 3, rows
    errs = [float(r["e"]) for r in rows if r["e"] not in ("", None)]
    assert errs and errs[-1] < 0.5 * errs[0], errs
    final = metric(page)
    assert final["probes"] == "1200" and float(final["stderr"]) == errs[-1]
    assert not page.hx_errors, page.hx_errors


def test_exact_pick_matches_library(page, lab):
    start(page, lab, "exact.ipynb", probes=200)
    page.locator('[data-hx-mode="exact"]').first.click()
    pick(page)
    wait_status(page, "done", 120)
    page.locator("[data-hx-heatmap]").first.wait_for()
    shoot(page, "04-exact-done")
    page.locator('[data-hx-node="blocks.1.0"]').first.click()      # a diagonal block: eigenvalues
    page.locator('[data-hx-node="blocks.1.0"]').first.click()
    page.locator("[data-hx-eigenvalues]").first.wait_for()
    wait_status(page, "done", 120)
    shoot(page, "04b-exact-diagonal")
    page.locator('[data-hx-node="blocks.0.1"]').first.click()      # back to the off-diagonal pick
    page.locator('[data-hx-node="blocks.1.1"]').first.click()
    page.wait_for_function("() => document.querySelector('.hx-block-panel .hx-panel-sub').textContent.includes('blocks.1.1')")
    wait_status(page, "done", 120)
    ns: dict = {}
    exec(SETUP, ns)
    torch, hx = ns["torch"], ns["hx"]
    s = hx.Session(ns["model"], torch.nn.CrossEntropyLoss(), (ns["x"], ns["y"]), dtype=torch.float64)
    b = s.block(V, W)
    shown = metric(page)
    assert float(shown["value"]) == pytest.approx(b.resonance, rel=1e-12)
    assert float(metric(page, "gn_gap")["value"]) == pytest.approx(b.gn_gap, rel=1e-10)
    assert shown["stderr"] == "0"
    page.wait_for_function("() => document.querySelector('[data-hx-metric=\"coupling\"]').dataset.hxValue !== ''")
    assert float(metric(page, "coupling")["value"]) == pytest.approx(s.coupling(V, W), rel=1e-10)
    assert page.locator('[data-hx-status]').first.get_attribute("data-hx-kind") == "block"
    assert not page.hx_errors, page.hx_errors


def test_cancel_then_pick_again(page, lab):
    start(page, lab, "cancel.ipynb", probes=1_000_000)
    pick(page)
    wait_status(page, "running", 30)
    wait_probes(page, 16)
    shoot(page, "05-cancel-running")
    page.locator('[data-hx-action="cancel"]').first.click()
    wait_status(page, "cancelled", 30)
    shoot(page, "06-cancelled")
    msg = page.locator(".hx-status-msg").first.inner_text()
    assert msg.startswith("Cancelled after"), msg
    # a new pick works: smaller budget through the toolbar
    box = page.locator('[data-hx-control="probes"]').first
    box.fill("48")
    box.press("Enter")
    box.blur()
    pick(page, W, V)
    wait_status(page, "done", 120)
    shoot(page, "07-after-cancel-done")
    assert metric(page)["probes"] == "48"
    assert not page.hx_errors, page.hx_errors


def test_kernel_stays_responsive_while_streaming(page, lab):
    start(page, lab, "responsive.ipynb", probes=1_000_000)
    pick(page)
    wait_status(page, "running", 30)
    wait_probes(page, 8)
    run_cell(page, 1, wait_done=False)
    out = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea-output")
    out.first.wait_for(timeout=20_000)
    assert out.first.inner_text().strip() == "2"
    assert status(page) == "running"          # the job still streams while the other cell ran
    p1 = wait_probes(page, 8)
    shoot(page, "08-other-cell-while-streaming")
    time.sleep(1.0)
    assert int(metric(page)["probes"]) > p1    # ... and keeps streaming
    page.locator('[data-hx-action="cancel"]').first.click()
    wait_status(page, "cancelled", 30)
    assert not page.hx_errors, page.hx_errors


def test_coupling_map_and_local_spectrum(page, lab):
    start(page, lab, "map.ipynb", probes=200)
    page.locator('[data-hx-action="map"]').first.click()
    page.wait_for_function("() => { const s = document.querySelector('[data-hx-status]');"
                           " return s.dataset.hxKind === 'map' && s.dataset.hxStatus === 'done'; }", timeout=120_000)
    page.locator("[data-hx-map]").first.wait_for()
    shoot(page, "09-coupling-map")
    # parameter space, exact diagonal block of a Linear layer, then its local spectrum
    page.locator('[data-hx-space="parameter"]').first.click()
    page.locator('[data-hx-mode="exact"]').first.click()
    for _ in range(2):
        page.locator('[data-hx-node="blocks.1.0"]').first.click()
    page.locator('[data-hx-action="spectrum"]').first.wait_for(timeout=120_000)
    wait_status(page, "done", 120)
    page.locator('[data-hx-action="spectrum"]').first.click()
    page.wait_for_function("() => { const s = document.querySelector('[data-hx-status]');"
                           " return s.dataset.hxKind === 'spectrum' && s.dataset.hxStatus === 'done'; }", timeout=120_000)
    panel = page.locator('[data-hx-panel="spectrum"]').first
    panel.wait_for(state="visible")
    shoot(page, "10-local-spectrum")
    n = panel.locator('[data-hx-stat="n"]')
    assert n.count() == 1 and n.inner_text().split()[-1] == str(16 * 16 + 16)
    assert not page.hx_errors, page.hx_errors
