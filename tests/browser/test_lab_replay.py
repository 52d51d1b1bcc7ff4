"""Checkpoint replay and the diagonal pick's local spectrum in a real JupyterLab 4 (headless
Chromium): a tiny MLP trained for 61 steps with hx.Tracker(every=20) in the notebook, its run
replayed through the graph's colours by the slider; clicking a node twice shows its local
spectrum; a group above the dense threshold streams Lanczos extremes, then the SLQ density.

Screenshots (light and dark theme) go to artifacts/screenshots/ (git-ignored)."""
from __future__ import annotations

import json

import pytest

from labkit import SCREENSHOTS, open_notebook, run_cell, shoot

pytestmark = pytest.mark.browser

TRAIN = """\
import json, torch, hessexplore as hx
from hessexplore import models, data
torch.manual_seed(0)
model = models.MLP(8, 16, 2, 3, activation="gelu")
x, y = data.blobs(64, 8, 3, seed=0)
xt, yt = data.blobs(64, 8, 3, seed=1)
loss_fn = torch.nn.CrossEntropyLoss()
tracker = hx.Tracker(model, loss_fn, (x, y), every=20, test_batch=(xt, yt), name="mlp-61-steps")
opt = torch.optim.SGD(model.parameters(), lr=0.5)
for step in range(61):
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    tracker.step(step, train_loss=loss)
model.eval()
w = hx.explore(model, loss_fn, (x, y), dtype=torch.float64, run=tracker.run)
w"""
SERIES = ("print(json.dumps({k: {g: [None if v != v else v for v in tracker.run.series(k, group=g)[1].tolist()]"
          " for g in tracker.run.groups} for k in ('lambda_max', 'trace')}))")
WIDE = """\
import torch, hessexplore as hx
from hessexplore import models, data
torch.manual_seed(0)
model = models.MLP(8, 64, 2, 3, activation="gelu").eval()      # blocks.1.0: 64*64+64 = 4160 parameters
x, y = data.blobs(64, 8, 3, seed=0)
w = hx.explore(model, torch.nn.CrossEntropyLoss(), (x, y), dtype=torch.float64)
w"""


def replay_value(page, node: str) -> str | None:
    return page.locator(f'[data-hx-node="{node}"]').first.get_attribute("data-hx-replay-value")


def slider_value(page) -> str:
    return page.locator("[data-hx-replay-slider]").first.input_value()


def cell_text(page, index: int) -> str:
    out = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea-output")
    out.first.wait_for(timeout=60_000)
    return out.first.inner_text()


def wait_status(page, state: str, kind: str | None = None, timeout: float = 120) -> None:
    cond = f"s.dataset.hxStatus === '{state}'" + (f" && s.dataset.hxKind === '{kind}'" if kind else "")
    page.wait_for_function(f"() => {{ const s = document.querySelector('[data-hx-status]'); return s && {cond}; }}",
                           timeout=timeout * 1000)


def set_theme(page, dark: bool) -> None:
    """Switch JupyterLab's theme from the Settings menu (applied live, no reload)."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text="JupyterLab Dark" if dark else "JupyterLab Light").first.click()
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{'false' if dark else 'true'}'", timeout=20_000)
    page.wait_for_timeout(800)   # theme CSS applied; canvases redraw on the next update


def test_replay_slider_and_diagonal_spectrum(page, lab):
    open_notebook(page, lab, "replay.ipynb", [TRAIN, SERIES])
    run_cell(page, 0, timeout=240)
    page.locator("[data-hx-replay]").first.wait_for(state="visible", timeout=60_000)
    run_cell(page, 1)
    series = json.loads(cell_text(page, 1))
    groups = ["blocks.0.0", "blocks.1.0", "head"]
    assert sorted(series["lambda_max"]) == sorted(groups)

    # every node of a tracked group is coloured; the values are the run's (checkpoint 0 first)
    assert page.locator("[data-hx-replay-value]").count() == 3
    assert page.locator("[data-hx-replay-step]").first.inner_text().startswith("step 0 ")
    for g in groups:
        assert float(replay_value(page, g)) == pytest.approx(series["lambda_max"][g][0], rel=1e-12)
    before = replay_value(page, "blocks.1.0")
    fill0 = page.locator('[data-hx-node="blocks.1.0"] .hx-node-rect').first.evaluate("e => e.style.fill")
    assert fill0.startswith("rgba(")

    # the keyboard moves the slider one checkpoint; the values follow
    page.locator("[data-hx-replay-slider]").first.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("(v) => document.querySelector('[data-hx-node=\"blocks.1.0\"]').dataset.hxReplayValue !== v",
                           arg=before, timeout=10_000)
    assert slider_value(page) == "1"
    for g in groups:
        assert float(replay_value(page, g)) == pytest.approx(series["lambda_max"][g][1], rel=1e-12)
    page.locator("[data-hx-replay-slider]").first.fill("3")
    page.wait_for_function("() => document.querySelector('[data-hx-replay-step]').textContent.startsWith('step 60 ')")
    for g in groups:
        assert float(replay_value(page, g)) == pytest.approx(series["lambda_max"][g][3], rel=1e-12)
    assert page.locator('[data-hx-node="blocks.1.0"] .hx-node-rect').first.evaluate("e => e.style.fill") != fill0
    loss = page.locator('[data-hx-replay-loss="train"]').first.inner_text()
    assert loss.startswith("train ") and float(loss.split()[-1].replace("−", "-")) > 0
    shoot(page, "11-replay")

    # another statistic; play runs through the checkpoints and stops at the last
    page.select_option("[data-hx-replay-stat]", "trace")
    for g in groups:
        assert float(replay_value(page, g)) == pytest.approx(series["trace"][g][3], rel=1e-12)
    page.locator("[data-hx-replay-slider]").first.fill("0")
    page.locator('[data-hx-action="replay-play"]').first.click()
    page.wait_for_function("() => document.querySelector('[data-hx-replay-slider]').value === '3'", timeout=10_000)
    page.wait_for_function("() => document.querySelector('[data-hx-action=\"replay-play\"]').getAttribute('aria-pressed') === 'false'",
                           timeout=5_000)
    page.select_option("[data-hx-replay-stat]", "lambda_max")

    # clicking a node twice: its diagonal block, then the local spectrum of its parameters
    for _ in range(2):
        page.locator('[data-hx-node="blocks.1.0"]').first.click()
    panel = page.locator('[data-hx-panel="spectrum"]').first
    page.wait_for_selector('[data-hx-panel="spectrum"][data-hx-spectrum-group="blocks.1.0"][data-hx-spectrum-done="true"]',
                           timeout=120_000)
    wait_status(page, "done", "spectrum")
    assert panel.is_visible()
    assert panel.locator('[data-hx-stat="n"]').inner_text().split()[-1] == str(16 * 16 + 16)
    lmax = float(panel.locator('[data-hx-stat="lambda_max"]').get_attribute("data-hx-value"))
    assert lmax > 0 and panel.locator("[data-hx-stat]").count() >= 10
    assert panel.locator('[data-hx-spectrum-plot="histogram"]').count() == 1
    shoot(page, "12-diagonal-spectrum")

    # a node that owns no parameters says so
    for _ in range(2):
        page.locator('[data-hx-node="blocks.1.1"]').first.click()
    page.locator("[data-hx-spectrum-empty]").first.wait_for(timeout=60_000)
    assert "owns no parameters" in page.locator("[data-hx-spectrum-empty]").first.inner_text()

    # dark theme: the same views
    set_theme(page, dark=True)
    try:
        for _ in range(2):
            page.locator('[data-hx-node="blocks.1.0"]').first.click()
        page.wait_for_selector('[data-hx-panel="spectrum"][data-hx-spectrum-group="blocks.1.0"][data-hx-spectrum-done="true"]',
                               timeout=120_000)
        wait_status(page, "done", "spectrum")
        page.locator("[data-hx-replay-slider]").first.fill("2")
        shoot(page, "11b-replay-dark")
    finally:
        set_theme(page, dark=False)
    assert not page.hx_errors, page.hx_errors


def test_streamed_lanczos_slq_spectrum(page, lab):
    """blocks.1.0 holds 4160 parameters (> 3000): a diagonal pick streams Lanczos extremes with
    their bounds, then the SLQ density, each snapshot refining the panel."""
    open_notebook(page, lab, "wide.ipynb", [WIDE])
    run_cell(page, 0)
    page.locator('[data-hx-node="blocks.1.0"]').first.wait_for()
    assert page.locator("[data-hx-replay]").first.is_hidden()       # no run: no replay bar
    page.evaluate("""() => {
      window.__hxSpec = [];
      const log = () => { const p = document.querySelector('[data-hx-panel="spectrum"]');
        const s = p.dataset.hxSpectrumStage; const lm = p.querySelector('[data-hx-stat="lambda_max"]');
        window.__hxSpec.push({stage: s, done: p.dataset.hxSpectrumDone,
          progress: p.querySelector('[data-hx-spectrum-progress]').dataset.hxSpectrumProgress,
          err: lm ? lm.dataset.hxErr : null, plot: (p.querySelector('[data-hx-spectrum-plot]') || {dataset: {}}).dataset.hxSpectrumPlot || null}); };
      new MutationObserver(log).observe(document.querySelector('[data-hx-panel="spectrum"]'), {attributes: true, subtree: true, childList: true});
    }""")
    page.locator('[data-hx-space="parameter"]').first.click()
    page.locator('[data-hx-mode="stream"]').first.click()
    box = page.locator('[data-hx-control="probes"]').first
    box.fill("16")
    box.press("Enter")
    box.blur()
    for _ in range(2):
        page.locator('[data-hx-node="blocks.1.0"]').first.click()
    # the stages can pass in well under a second: the page's own log (above) keeps every snapshot,
    # so the test waits for the end and reads the log rather than racing each stage
    page.wait_for_selector('[data-hx-panel="spectrum"][data-hx-spectrum-done="true"]', timeout=240_000)
    wait_status(page, "done", "spectrum")
    page.locator('[data-hx-panel="spectrum"]').first.screenshot(path=str(SCREENSHOTS / "13-spectrum-panel.png"))
    shoot(page, "13c-spectrum-final")
    log = page.evaluate("window.__hxSpec")
    stages = [r["stage"] for r in log]
    assert "lanczos" in stages and "slq" in stages and stages.index("lanczos") < stages.index("slq")
    lz = [r for r in log if r["stage"] == "lanczos" and r["err"]]
    assert len({r["err"] for r in lz}) >= 2                          # the ± bound refines
    assert {r["plot"] for r in lz} == {"ritz"}
    assert "density" in {r["plot"] for r in log if r["stage"] == "slq"}
    progress = [float(r["progress"]) for r in log if r["progress"]]
    assert progress[-1] == 1.0 and min(progress) < 0.5
    panel = page.locator('[data-hx-panel="spectrum"]').first
    assert panel.locator('[data-hx-stat="n"]').inner_text().split()[-1] == "4,160"
    assert float(panel.locator('[data-hx-stat="trace"]').get_attribute("data-hx-err")) > 0
    assert panel.locator('[data-hx-extremes="top"]').count() == 1
    set_theme(page, dark=True)
    try:
        for _ in range(2):          # pick again: the stream redraws in the dark theme
            page.locator('[data-hx-node="blocks.1.0"]').first.click()
        page.wait_for_selector('[data-hx-panel="spectrum"][data-hx-spectrum-stage="slq"]', timeout=120_000)
        shoot(page, "13d-spectrum-slq-dark")
        page.wait_for_selector('[data-hx-panel="spectrum"][data-hx-spectrum-done="true"]', timeout=240_000)
        wait_status(page, "done", "spectrum")
        shoot(page, "13e-spectrum-final-dark")
    finally:
        set_theme(page, dark=False)
    assert not page.hx_errors, page.hx_errors
