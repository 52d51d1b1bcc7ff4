"""Drive the widget harness in headless Chromium and take screenshots.

Usage (from the repository root, after `cd js && npm run build`):

    . .venv/bin/activate && pip install playwright
    python js/harness/shoot.py [--out artifacts] [--chromium /usr/bin/chromium]

Serves the repository over http on 127.0.0.1, opens js/harness/index.html (which loads
the built bundle hessexplore/static/widget.js and a mock model), clicks two
[data-hx-node] elements, watches [data-hx-metric="resonance"] change, waits for
[data-hx-status="done"], cancels a long job, exports, and writes light/dark screenshots.
Exits non-zero if a check fails or the page logs an error.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", "--no-first-run"]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):  # noqa: D401 - silence
        pass


def serve():
    handler = functools.partial(Quiet, directory=str(ROOT))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def metric(page, name, attr="data-hx-value"):
    return page.get_attribute(f'[data-hx-metric="{name}"]', attr)


def wait_status(page, state, timeout=20000):
    page.wait_for_selector(f'[data-hx-status="{state}"]', timeout=timeout)


def scenario_main(page, base, theme, out, graph="residual", pair=("inp", "blocks.1"), diag="blocks.0.f.1"):
    page.goto(f"{base}/js/harness/index.html?graph={graph}&theme={theme}")
    page.wait_for_selector("[data-hx-node]")
    # exact diagonal block (click one node twice) -> heatmap + eigenvalue strip
    page.click('[data-hx-mode="exact"]')
    page.click(f'[data-hx-node="{diag}"]')
    page.click(f'[data-hx-node="{diag}"]')
    wait_status(page, "done")
    page.wait_for_selector("[data-hx-eigenvalues]")
    page.screenshot(path=str(out / f"harness-{graph}-diag-{theme}.png"), full_page=True)
    # exact off-diagonal block, then stream the same pair
    page.click(f'[data-hx-node="{pair[0]}"]')
    page.click(f'[data-hx-node="{pair[1]}"]')
    wait_status(page, "done")
    page.click('[data-hx-mode="stream"]')
    page.click('[data-hx-action="compute"]')
    page.wait_for_selector('[data-hx-status="running"]')
    page.wait_for_function("() => Number(document.querySelector('[data-hx-metric=\"resonance\"]').dataset.hxProbes) > 0")
    first = (metric(page, "resonance"), metric(page, "resonance", "data-hx-probes"))
    page.wait_for_function(
        "([v, p]) => { const e = document.querySelector('[data-hx-metric=\"resonance\"]');"
        " return e.dataset.hxProbes !== p && e.dataset.hxValue !== v; }", arg=list(first))
    wait_status(page, "done")
    final = (metric(page, "resonance"), metric(page, "resonance", "data-hx-stderr"), metric(page, "resonance", "data-hx-probes"))
    assert final[2] == "200", final
    assert float(final[1]) > 0, final
    # coupling map, progressively filled
    page.click('[data-hx-action="map"]')
    wait_status(page, "done")
    page.wait_for_timeout(300)
    page.screenshot(path=str(out / f"harness-{graph}-{theme}.png"), full_page=True)
    page.locator(".hx-main").screenshot(path=str(out / f"harness-{graph}-main-{theme}.png"))
    return {"first": first, "final": final}


def scenario_cancel_export(page, base, out):
    page.goto(f"{base}/js/harness/index.html?graph=attention&probes=5000")
    page.wait_for_selector("[data-hx-node]")
    page.click('[data-hx-node="W_Q"]')
    page.click('[data-hx-node="W_K"]')
    wait_status(page, "running")
    page.wait_for_timeout(400)
    page.click('[data-hx-action="cancel"]')
    wait_status(page, "cancelled")
    # an exact block and a coupling map, so the PNG export has every panel
    page.click('[data-hx-mode="exact"]')
    page.click('[data-hx-node="W_Q"]')
    page.click('[data-hx-node="W_K"]')
    wait_status(page, "done")
    page.click('[data-hx-action="map"]')
    wait_status(page, "done")
    downloads = []
    page.on("download", lambda d: downloads.append(d))
    page.click('[data-hx-action="export"]')
    for _ in range(100):
        if len(downloads) >= 2:
            break
        page.wait_for_timeout(100)
    files = []
    for d in downloads:
        target = out / d.suggested_filename
        d.save_as(str(target))
        files.append(target)
    names = sorted(f.name for f in files)
    assert names == ["hessexplore-graph.svg", "hessexplore-panels.png"], names
    svg = (out / "hessexplore-graph.svg").read_text()
    assert "<svg" in svg and 'data-hx-node="W_Q"' in svg and "var(" not in svg
    # keyboard: Tab to a node, Enter picks, Escape clears
    page.click('[data-hx-action="clear"]')
    page.focus('[data-hx-node="x"]')
    page.keyboard.press("Enter")
    assert page.evaluate("window.hx.model.get('selection').v") == "x"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    sel = page.evaluate("window.hx.model.get('selection')")
    assert sel["v"] == "x" and sel["w"] is not None, sel
    page.keyboard.press("Escape")
    assert page.evaluate("window.hx.model.get('selection').v") is None
    return names


def scenario_deep(page, base, out, theme):
    page.goto(f"{base}/js/harness/index.html?graph=deep&theme={theme}")
    page.wait_for_selector('[data-hx-node="blocks.3"]')
    n_collapsed = page.locator(".hx-node.hx-collapsed").count()
    assert n_collapsed == 12, n_collapsed
    page.click('[data-hx-toggle="blocks.3"]')
    page.wait_for_selector('[data-hx-node="blocks.3.f.0"]')
    page.wait_for_timeout(200)
    page.locator(".hx-graph-panel").screenshot(path=str(out / f"harness-deep-expanded-{theme}.png"))
    page.hover('[data-hx-node="blocks.3.f.1"]')
    page.wait_for_timeout(150)
    page.locator(".hx-graph-panel").screenshot(path=str(out / f"harness-deep-tooltip-{theme}.png"))


def scenario_parameter_space(page, base, out, theme):
    page.goto(f"{base}/js/harness/index.html?graph=residual&theme={theme}")
    page.wait_for_selector("[data-hx-node]")
    page.click('[data-hx-space="parameter"]')
    assert page.get_attribute('[data-hx-node="blocks.0.f.1"]', "aria-disabled") == "true"  # ReLU: no parameters
    page.click('[data-hx-mode="exact"]')
    page.click('[data-hx-node="blocks.0.f.0"]')
    page.click('[data-hx-action="self"]')
    wait_status(page, "done")
    page.click('[data-hx-action="spectrum"]')
    wait_status(page, "done")
    page.wait_for_selector('[data-hx-panel="spectrum"]:not([hidden])')
    page.wait_for_timeout(200)
    page.screenshot(path=str(out / f"harness-parameter-spectrum-{theme}.png"), full_page=True)
    # a malformed message -> readable error in the status line
    page.evaluate("window.hx.model.send({protocol: 2, type: 'cancel'})")
    wait_status(page, "error")
    page.locator("[data-hx-status]").screenshot(path=str(out / f"harness-status-error-{theme}.png"))


def scenario_replay_spectrum(page, base, out, theme):
    """Checkpoint replay through the graph colours; a diagonal pick's follow-up spectrum; a node
    without parameters; a streamed Lanczos + SLQ spectrum (mock) refining stage by stage."""
    page.goto(f"{base}/js/harness/index.html?graph=residual&theme={theme}&run=1")
    page.wait_for_selector("[data-hx-replay]:not([hidden])")
    node = '[data-hx-node="blocks.1.f.0"]'
    before = page.get_attribute(node, "data-hx-replay-value")
    page.locator("[data-hx-replay-slider]").fill("4")
    page.wait_for_function("([sel, v]) => document.querySelector(sel).dataset.hxReplayValue !== v", arg=[node, before])
    assert page.locator("[data-hx-replay-value]").count() == 5
    page.select_option("[data-hx-replay-stat]", "lambda_max/trace")
    page.select_option("[data-hx-replay-stat]", "lambda_max")
    page.wait_for_timeout(150)
    page.screenshot(path=str(out / f"harness-replay-{theme}.png"), full_page=True)
    # play: the slider advances by itself
    page.locator("[data-hx-replay-slider]").fill("0")
    page.click('[data-hx-action="replay-play"]')
    page.wait_for_function("() => document.querySelector('[data-hx-replay-slider]').value !== '0'", timeout=5000)
    page.click('[data-hx-action="replay-play"]')
    # a diagonal pick: the block, then the local spectrum of the node's group
    page.click('[data-hx-mode="exact"]')
    page.click('[data-hx-node="blocks.0.f.0"]')
    page.click('[data-hx-node="blocks.0.f.0"]')
    page.wait_for_selector('[data-hx-panel="spectrum"][data-hx-spectrum-stage="done"][data-hx-spectrum-group="blocks.0.f.0"]')
    wait_status(page, "done")
    page.wait_for_timeout(150)
    page.screenshot(path=str(out / f"harness-diag-spectrum-{theme}.png"), full_page=True)
    # a node without parameters says so
    page.click('[data-hx-node="blocks.0.f.1"]')
    page.click('[data-hx-node="blocks.0.f.1"]')
    page.wait_for_selector("[data-hx-spectrum-empty]")
    # a forced Lanczos + SLQ spectrum streams: extremes with shrinking bounds, then the density
    page.evaluate("window.hx.model.send({protocol: 1, type: 'spectrum', group: 'blocks.1.f.0', method: 'lanczos+slq'})")
    page.wait_for_selector('[data-hx-panel="spectrum"][data-hx-spectrum-stage="lanczos"] [data-hx-spectrum-plot="ritz"]')
    page.wait_for_timeout(500)
    page.locator('[data-hx-panel="spectrum"]').screenshot(path=str(out / f"harness-spectrum-lanczos-{theme}.png"))
    page.wait_for_selector('[data-hx-panel="spectrum"][data-hx-spectrum-stage="slq"] [data-hx-spectrum-plot="density"]')
    page.locator('[data-hx-panel="spectrum"]').screenshot(path=str(out / f"harness-spectrum-slq-{theme}.png"))
    page.wait_for_selector('[data-hx-panel="spectrum"][data-hx-spectrum-done="true"]')
    page.wait_for_timeout(150)
    page.screenshot(path=str(out / f"harness-spectrum-final-{theme}.png"), full_page=True)


def scenario_narrow(page, base, out):
    page.goto(f"{base}/js/harness/index.html?graph=attention&width=640")
    page.wait_for_selector("[data-hx-node]")
    page.click('[data-hx-node="W_Q"]')
    page.click('[data-hx-node="W_K"]')
    wait_status(page, "done")
    page.wait_for_timeout(200)
    page.screenshot(path=str(out / "harness-narrow-light.png"), full_page=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "artifacts"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--only", choices=["replay"], help="run one scenario (light and dark)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (ROOT / "hessexplore" / "static" / "widget.js").exists():
        sys.exit("hessexplore/static/widget.js missing: run `npm run build` in js/ first")
    httpd, base = serve()
    errors = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=a.chromium, args=ARGS)
            ctx = browser.new_context(viewport={"width": 1100, "height": 1000}, device_scale_factor=1, accept_downloads=True)
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type in ("error", "warning") else None)
            for theme in ("light", "dark"):
                scenario_replay_spectrum(page, base, out, theme)
                if a.only:
                    continue
                r = scenario_main(page, base, theme, out)
                print(theme, "residual", r)
                r = scenario_main(page, base, theme, out, graph="attention", pair=("W_Q", "W_K"), diag="softmax")
                print(theme, "attention", r)
                scenario_deep(page, base, out, theme)
                scenario_parameter_space(page, base, out, theme)
            if not a.only:
                scenario_narrow(page, base, out)
                print("export:", scenario_cancel_export(page, base, out))
            browser.close()
    finally:
        httpd.shutdown()
    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print("screenshots in", out)


if __name__ == "__main__":
    main()
