"""Cancel latency, split by where it goes (issue 10): page → kernel handler, handler → worker
stopped, and the way back to the page. Run by benchmarks/bench_cancel.py (prints a table);
as a test it checks that the split is reported and adds up, never a time bound."""
from __future__ import annotations

import time

import pytest

from labkit import open_notebook, run_cell, shoot

pytestmark = pytest.mark.browser

SETUP = """\
import torch, hessexplore as hx
from hessexplore import models, data
torch.manual_seed(0)
model = models.MLP(8, 64, 3, 3, activation="gelu").eval()
x, y = data.blobs(256, 8, 3, seed=0)
w = hx.explore(model, torch.nn.CrossEntropyLoss(), (x, y), dtype=torch.float64)
w.selection = {**w.selection, 'probes': 1000000}
w"""


def test_cancel_latency_split(page, lab, request):
    streams = [float(s) for s in str(request.config.getoption("--hx-streams", default="1")).split(",")]
    open_notebook(page, lab, "cancel-latency.ipynb", [SETUP])
    run_cell(page, 0)
    page.locator('[data-hx-node="blocks.0.1"]').first.wait_for()
    rows = []
    for secs in streams:
        page.locator('[data-hx-node="blocks.0.1"]').first.click()
        page.locator('[data-hx-node="blocks.2.1"]').first.click()
        page.wait_for_function("() => document.querySelector('[data-hx-status]').dataset.hxStatus === 'running'")
        time.sleep(secs)
        total = page.evaluate("""() => new Promise((resolve) => {
            const st = document.querySelector('[data-hx-status]');
            const t0 = Date.now();
            const obs = new MutationObserver(() => {
              if (st.dataset.hxStatus === 'cancelled') { obs.disconnect(); resolve(Date.now() - t0); }
            });
            obs.observe(st, {attributes: true});
            document.querySelector('[data-hx-action="cancel"]').click();
        })""") / 1000.0
        msg_s, worker_s = (float(x) for x in page.locator("[data-hx-status]").first.get_attribute("data-hx-cancel-latency").split(","))
        rows.append((secs, total, msg_s, worker_s, total - msg_s - worker_s))
    shoot(page, "i10-cancel-latency")
    print("\nstream s | click→cancelled s | page→kernel s | kernel→worker stopped s | way back s")
    for r in rows:
        print("%8.1f | %17.3f | %13.3f | %23.3f | %10.3f" % r)
    for secs, total, msg_s, worker_s, back in rows:
        assert worker_s >= 0 and msg_s > -0.05 and total >= worker_s      # same machine, one clock
    assert not page.hx_errors, page.hx_errors
