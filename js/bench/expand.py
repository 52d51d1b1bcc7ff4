"""Expand / collapse timing of the explorer's graph in headless Chromium (the real bundle,
the JS harness with a mock kernel): a ~500-node ResNet-like graph, default view, expand every
stage, expand every block, collapse back — layout and draw milliseconds of each step as the
graph panel reports them (data-hx-layout-ms / data-hx-draw-ms), plus the wall time of the
click-to-drawn round trip (to the next animation frame). The layout engines alone are compared
side by side by js/bench/layout.mjs.

    python js/bench/expand.py        (after `cd js && npm run build`)
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
from shoot import ARGS, serve  # noqa: E402


def main() -> None:
    httpd, base = serve()
    out = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/js/harness/index.html?graph=resnet500")
        page.locator("[data-hx-node]").first.wait_for()
        panel = page.locator(".hx-graph-panel")

        def timings():
            return {k: float(panel.get_attribute(f"data-hx-{k}-ms")) for k in ("layout", "draw")}

        rows = []

        def click(selector, what):
            t = page.evaluate("""(sel) => new Promise((res) => { const t0 = performance.now();
              document.querySelector(sel).dispatchEvent(new MouseEvent('click', {bubbles: true}));
              requestAnimationFrame(() => res(performance.now() - t0)); })""", selector)
            rows.append({"step": what, "wall_ms": round(t, 1), **timings(),
                         "nodes": int(panel.get_attribute("data-hx-visible-nodes"))})

        n = page.evaluate("window.hx.graphs.resnet500.nodes.length")
        rows.append({"step": "default view", **timings(), "nodes": int(panel.get_attribute("data-hx-visible-nodes"))})
        for s in range(1, 5):
            click(f'[data-hx-toggle="layer{s}"]', f"expand layer{s}")
        blocks = page.evaluate("[...document.querySelectorAll('.hx-collapsed [data-hx-toggle]')].map(e => e.dataset.hxToggle)")
        for name in blocks:
            click(f'[data-hx-toggle="{name}"]', f"expand {name}")
        for name in ("layer2.5", "layer3", "layer3"):
            click(f'[data-hx-toggle="{name}"]', f"toggle {name}")
        expands = [r["wall_ms"] for r in rows if "wall_ms" in r]
        out = {"graph_nodes": n, "steps": len(expands), "wall_ms_median": statistics.median(expands),
               "wall_ms_max": max(expands), "layout_ms_max": max(r["layout"] for r in rows),
               "fully_expanded_nodes": max(r["nodes"] for r in rows), "rows": rows}
        b.close()
    httpd.shutdown()
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=1))
    for r in out["rows"][:6] + out["rows"][-4:]:
        print(r)


if __name__ == "__main__":
    main()
