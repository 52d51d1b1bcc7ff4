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
    page.locator(".hx-root").wait_for()
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
