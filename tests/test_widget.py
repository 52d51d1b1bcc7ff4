"""The explorer widget's Python side, without a browser: messages go in through the same
path ipywidgets uses for a comm message from the page (``Widget._handle_msg`` with method
``custom``), jobs run synchronously (injected executor) or on the real worker thread, and the
traits are checked against the library (Buf bytes decoded)."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore import data, models
from hessexplore import widget as wmod
from hessexplore.jobs import SyncExecutor, ThreadExecutor
from hessexplore.widget import BundleMissingError, Explorer, decode_buf

pytestmark = pytest.mark.usefixtures("single_thread")
needs_bundle = pytest.mark.skipif(not wmod.BUNDLE.is_file(),
                                  reason="browser bundle not built (pip install -e . builds it from js/)")


def problem():
    torch.manual_seed(0)
    m = models.MLP(4, 6, 2, 3, activation="gelu", norm="layernorm").eval()
    x, y = data.blobs(16, 4, 3, seed=0)
    return m, nn.CrossEntropyLoss(), (x, y)


@pytest.fixture(scope="module")
def session():
    return hx.Session(*problem(), dtype=torch.float64)


@pytest.fixture
def widget(session, monkeypatch):
    w = make(session, monkeypatch)
    yield w
    w.close()


def make(session, monkeypatch=None, executor=None, **kw):
    if not wmod.BUNDLE.is_file():   # these tests are about the Python side: stand in a bundle
        assert monkeypatch is not None
        monkeypatch.setattr(wmod, "_bundle", lambda: ("export default {render(){}}", None))
    kw.setdefault("max_rate", 0.0)  # deterministic: every publish is written (throttling is tested apart)
    return Explorer(session, executor=executor if executor is not None else SyncExecutor(), **kw)


def send(w: Explorer, content) -> None:
    """Deliver ``content`` the way a page's ``model.send(content)`` arrives in the kernel."""
    w._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def compute(v, w=None, **kw):
    return {"protocol": 1, "type": "compute", "v": v, "w": w if w is not None else v, "space": "activation",
            "mode": "stream", "probes": 64, "rel_ci": None, **kw}


def record(w: Explorer):
    """Log every publisher write (a copy of the updates) with its time."""
    log = []
    inner = w._publisher._write

    def write(updates):
        log.append((time.monotonic(), dict(updates)))
        inner(updates)
    w._publisher._write = write
    return log


def wait_probes(w: Explorer, job: int, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (w.estimate.get("job") == job and w.estimate.get("probes", 0) >= n):
        assert time.monotonic() < deadline, f"job {job} did not reach {n} probes: {w.status}"
        time.sleep(0.005)


def wire_json(w: Explorer) -> str:
    """The state as it goes over the wire (buffers split off), strict JSON (no NaN)."""
    from ipywidgets.widgets.widget import _remove_buffers
    state, _, buffers = _remove_buffers(w.get_state())
    return json.dumps(state, allow_nan=False), buffers


# ---- construction ----------------------------------------------------------------------------
def test_graph_trait_and_explore(session, monkeypatch):
    if not wmod.BUNDLE.is_file():
        monkeypatch.setattr(wmod, "_bundle", lambda: ("export default {}", None))
    w = hx.explore(*problem(), dtype=torch.float64, executor=SyncExecutor())
    assert isinstance(w, Explorer) and hx.explore is wmod.explore
    g = w.graph
    ref = w.session.graph.to_json()
    assert g["nodes"] == ref["nodes"] and g["edges"] == ref["edges"] and g["modules"] == ref["modules"]
    assert g["groups"] == w.session.groups and g["dtype"] == "float64" and g["device"] == "cpu"
    assert g["batch_size"] == 16
    assert w.status["state"] == "idle" and w.selection["v"] is None
    wire_json(w)
    w.close()


@needs_bundle
def test_bundle_is_the_esm(session):
    w = Explorer(session, executor=SyncExecutor())
    assert w._esm == wmod.BUNDLE.read_text(encoding="utf-8") and "render" in w._esm
    w.close()


def test_missing_bundle_is_a_clear_error(session, monkeypatch, tmp_path):
    monkeypatch.setattr(wmod, "BUNDLE", tmp_path / "widget.js")
    with pytest.raises(BundleMissingError, match=r"pip install -e \."):
        Explorer(session)


# ---- exact blocks ----------------------------------------------------------------------------
@pytest.mark.parametrize("v,w,space", [("blocks.0", "blocks.1", "activation"), ("blocks.1", "blocks.1", "activation"),
                                       ("blocks.0.0", "head", "parameter")])
def test_exact_block_equals_session_block(widget, session, v, w, space):
    send(widget, compute(v, w, mode="exact", space=space))
    ref = session.block(v, w, space=space)
    b = widget.block
    assert widget.status["state"] == "done" and widget.status["kind"] == "block" and widget.status["progress"] == 1.0
    assert b["job"] == widget.status["job"] and (b["v"], b["w"], b["space"]) == (v, w, space)
    assert b["shape"] == list(ref.shape) and b["shown_shape"] == list(ref.shape) and not b["downsampled"]
    for part in ("full", "gn", "tensor"):
        assert b["parts"][part]["dtype"] == "float64"
        assert np.array_equal(decode_buf(b["parts"][part]), getattr(ref, part).numpy())   # bitwise
    for k, x in ref.metrics.items():
        assert b["metrics"][k] == pytest.approx(x, rel=1e-12, abs=1e-15)
    assert b["metrics"]["coupling"] == pytest.approx(session.coupling(v, w, space=space), rel=1e-10)
    if v == w:
        assert np.allclose(decode_buf(b["eigenvalues"]), ref.eigenvalues.numpy(), rtol=1e-10, atol=1e-14)
        assert b["metrics"]["trace"] == pytest.approx(ref.trace, rel=1e-12)
    else:
        assert b["eigenvalues"] is None
    assert isinstance(widget.result, hx.Block) and torch.equal(widget.result.full, ref.full)
    assert widget.selection == {"v": v, "w": w, "space": space, "mode": "exact", "probes": 64, "rel_ci": None}
    text, buffers = wire_json(widget)
    assert len(buffers) >= 3     # the matrices travel as binary buffers, not JSON


def test_big_block_is_block_averaged(session, monkeypatch):
    w = make(session, monkeypatch, max_shown=4)
    w.select("blocks.0", "blocks.1", mode="exact")       # 6 x 6 -> 4 x 4 (bins of 1 or 2)
    ref = session.block("blocks.0", "blocks.1")
    b = w.block
    assert b["shape"] == [6, 6] and b["shown_shape"] == [4, 4] and b["downsampled"]
    got = decode_buf(b["parts"]["full"])
    exp = torch.nn.functional.adaptive_avg_pool2d(ref.full[None, None], (4, 4))[0, 0].numpy()
    assert np.allclose(got, exp, rtol=1e-13, atol=0)
    assert got[0, 0] == pytest.approx(float(ref.full[:2, :2].mean()), rel=1e-13)
    assert b["vmax"] == pytest.approx(max(float(np.abs(decode_buf(b["parts"][p])).max()) for p in ("full", "gn", "tensor")))
    assert torch.equal(w.result.full, ref.full)          # Python keeps full resolution
    w.close()


def test_exact_over_the_limit_streams_instead_and_says_why(monkeypatch):
    s = hx.Session(*problem(), dtype=torch.float64, max_exact_dim=4)
    w = make(s, monkeypatch)
    send(w, compute("blocks.0", "blocks.1", mode="exact", probes=16))
    st = w.status
    assert st["state"] == "done" and st["kind"] == "estimate", st
    assert "over the Exact limit (4): streamed instead" in st["message"]
    assert w.estimate["probes"] == 16 and w.selection["mode"] == "exact"     # the user's choice is kept
    # a diagonal pick still gets its local spectrum (Stream works where Exact would not)
    send(w, {**compute("blocks.1", mode="exact", probes=8), "spectrum": True})
    assert w.status["state"] == "done" and w.status["kind"] == "spectrum", w.status
    assert w.spectrum["group"] == "blocks.1" and w.spectrum["done"]
    w.close()


def test_block_too_large_in_the_engine_speaks_the_widgets_language():
    msg = ("the exact block needs 10 Hessian-vector products (one per column of 'b', activation space), over "
           "the limit max_exact_dim=4. Use s.estimate('a', 'b', space='activation') for streaming estimates "
           "with error bars, or raise the limit with Session(..., max_exact_dim=...).")
    out = wmod.widget_words(msg)
    assert "s.estimate(" not in out and "Switch to Stream" in out and "hx.explore(..., max_exact_dim=...)" in out


# ---- streaming -------------------------------------------------------------------------------
def test_stream_history_grows_stderr_shrinks_and_ends_done(widget, session):
    log = record(widget)
    send(widget, compute("blocks.0", "blocks.1", probes=96, seed=3))
    est = widget.estimate
    assert widget.status["state"] == "done" and widget.status["kind"] == "estimate"
    assert est["done"] and est["probes"] == 96 and est["budget"] == 96
    snaps = [u["estimate"] for _, u in log if "estimate" in u and u["estimate"]["metrics"]]
    assert [s["probes"] for s in snaps] == list(range(8, 97, 8))
    hist = est["history"]["resonance"]
    assert [h[0] for h in hist] == list(range(8, 97, 8))
    assert all(len(s["history"]["resonance"]) == k + 1 for k, s in enumerate(snaps))   # grows
    errs = [h[2] for h in hist if h[2] is not None]
    assert errs[-1] < 0.5 * errs[0]
    # identical to the library's own stream with the same seed
    ref = list(session.estimate("blocks.0", "blocks.1", probes=96, seed=3))[-1]
    assert est["metrics"] == ref.to_json()["metrics"]
    assert isinstance(widget.result, hx.EstimateSnapshot) and widget.result.probes == 96
    # a fresh estimate header precedes the first snapshot (no stale numbers under "running")
    first = next(u for _, u in log if "estimate" in u)
    assert first["estimate"]["metrics"] == {} and first["status"]["state"] == "running"
    wire_json(widget)


def test_stream_rel_ci_stops_early(widget):
    widget.select("blocks.0", "blocks.1", probes=4000, rel_ci=0.5)
    assert widget.status["state"] == "done" and "target" in widget.status["message"]
    assert widget.estimate["done"] and widget.estimate["probes"] < 4000


def test_long_history_is_thinned(session, monkeypatch):
    w = make(session, monkeypatch, history_points=10)
    w.select("blocks.1", "blocks.1", probes=400)
    h = w.estimate["history"]["resonance"]
    assert len(h) <= 11 and h[-1][0] == 400 and h[0][0] == 8
    w.close()


def test_cancel_stops_within_one_probe_batch_and_next_job_runs(widget):
    seen = []

    def on_est(change):
        p = change["new"].get("probes", 0)
        seen.append(p)
        if p >= 24 and widget.status["state"] == "running":
            send(widget, {"protocol": 1, "type": "cancel"})   # re-entrant: arrives while the job runs
    widget.observe(on_est, names="estimate")
    send(widget, compute("blocks.0", "blocks.1", probes=10_000))
    widget.unobserve(on_est, names="estimate")
    assert widget.status["state"] == "cancelled"
    assert widget.status["message"] == "Cancelled after 24/10000 probes"
    assert widget.estimate["probes"] == 24 and not widget.estimate["done"]
    send(widget, compute("blocks.0", "blocks.1", mode="exact"))
    assert widget.status["state"] == "done" and widget.status["kind"] == "block"


def test_supersession_only_the_new_job_appears_afterwards(widget):
    log = record(widget)
    ids = {}

    def on_est(change):
        if change["new"].get("probes", 0) >= 16 and "second" not in ids:
            ids["second"] = True
            send(widget, compute("blocks.1", "blocks.1", probes=32))   # while the first streams
    widget.observe(on_est, names="estimate")
    send(widget, compute("blocks.0", "blocks.1", probes=10_000))
    widget.unobserve(on_est, names="estimate")
    jobs = [(u["status"]["job"], u["status"]["state"]) for _, u in log if "status" in u]
    first_id, second_id = jobs[0][0], jobs[-1][0]
    assert second_id == first_id + 1 and jobs[-1][1] == "done"
    k = [j for j, _ in jobs].index(second_id)
    assert all(j == second_id for j, _ in jobs[k:])
    assert (first_id, "cancelled") not in jobs       # the superseded job's end is never shown
    est_jobs = [u["estimate"]["job"] for _, u in log if "estimate" in u]
    k = est_jobs.index(second_id)
    assert all(j == second_id for j in est_jobs[k:])
    assert widget.estimate["job"] == second_id and widget.estimate["v"] == "blocks.1"


# ---- real worker thread ----------------------------------------------------------------------
def test_threaded_stream_cancel_supersede(session, monkeypatch):
    w = make(session, monkeypatch, executor=ThreadExecutor(), max_rate=20.0)
    log = record(w)
    workers = set()
    real = session.estimate

    def spy(*a, **k):
        workers.add(threading.current_thread().name)
        return real(*a, **k)
    monkeypatch.setattr(session, "estimate", spy)
    try:
        t0 = time.monotonic()
        send(w, compute("blocks.0", "blocks.1", probes=400, seed=1))
        assert time.monotonic() - t0 < 0.5        # the handler only validates and enqueues
        assert w.wait(60)["state"] == "done"
        assert workers == {"hessexplore-worker"}
        assert w.estimate["probes"] == 400 and w.estimate["done"]
        vals = {round(u["estimate"]["metrics"]["resonance"]["value"], 12) for _, u in log
                if "estimate" in u and u["estimate"]["metrics"]}
        assert len(vals) >= 2

        # cancel a long stream once it is under way
        send(w, compute("blocks.0", "blocks.1", probes=200_000))
        wait_probes(w, w._runner.last_job.id, 16)
        send(w, {"protocol": 1, "type": "cancel"})
        assert w.wait(10)["state"] == "cancelled"
        assert w.status["message"].startswith("Cancelled after ")

        # supersede a long stream with an exact block
        log.clear()
        a = w.select("blocks.0", "blocks.1", probes=200_000)
        wait_probes(w, a, 16)
        b = w.select("blocks.1", "blocks.1", mode="exact")
        st = w.wait(30)
        assert st["state"] == "done" and st["job"] == b == a + 1 and w.block["job"] == b
        owners = []
        for _, u in log:
            for name in ("status", "estimate", "block"):
                if name in u:
                    owners.append(u[name]["job"])
        assert owners == sorted(owners) and owners[-1] == b
        assert w.status["state"] == "done"
    finally:
        w.close()


def test_throttled_publishing_rate(session, monkeypatch):
    w = make(session, monkeypatch, executor=ThreadExecutor(), max_rate=20.0)
    log = record(w)
    try:
        t0 = time.monotonic()
        w.select("blocks.1", "blocks.1", probes=3000)
        w.wait(120)
        dt = time.monotonic() - t0
        est = [u["estimate"]["probes"] for _, u in log if "estimate" in u]
        assert est[-1] == 3000 and w.status["state"] == "done"
        n_snapshots = 3000 // 8
        times = [t for t, _ in log]
        # the job's start, its first result and its final state are written at once; the
        # streaming updates in between at most 20 times a second
        assert log[0][1]["status"]["state"] == "running" and log[1][1]["estimate"]["probes"] == 8
        gaps = [b - a for a, b in zip(times[1:-2], times[2:-1])]
        assert len(log) <= dt * 20 + 3, (len(log), dt)
        if dt < n_snapshots / 40:          # snapshots came faster than 20 Hz: they were coalesced
            assert len(log) < n_snapshots
        assert min(gaps) >= 0.05 - 2e-3
        assert log[-1][1]["status"]["state"] == "done" and w.estimate["done"]   # final state written
    finally:
        w.close()


# ---- coupling map ----------------------------------------------------------------------------
def test_coupling_map_trait(widget, session):
    nodes = ["blocks.0", "blocks.1", "head"]
    send(widget, {"protocol": 1, "type": "coupling_map", "space": "activation", "nodes": nodes})
    ref = session.coupling_map(nodes)
    cm = widget.coupling_map
    assert widget.status["state"] == "done" and widget.status["kind"] == "map"
    assert cm["names"] == nodes and cm["done"] and cm["space"] == "activation"
    assert np.allclose(decode_buf(cm["R"]), ref.R.numpy(), rtol=1e-12, atol=0)
    assert np.allclose(decode_buf(cm["C"]), ref.C.numpy(), rtol=1e-12, atol=0, equal_nan=True)
    assert np.allclose(decode_buf(cm["gap"]), ref.gap.numpy(), rtol=1e-12, atol=0)
    assert decode_buf(cm["filled"]).dtype == np.uint8 and decode_buf(cm["filled"]).all()
    assert isinstance(widget.result, hx.CouplingMap)
    widget.compute_map(space="parameter")
    assert widget.coupling_map["names"] == session.groups and widget.status["state"] == "done"


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("content,needle", [
    (compute("nope", "blocks.1"), "unknown node 'nope'"),
    ({**compute("blocks.0"), "protocol": 2}, "unsupported protocol version 2"),
    ({**compute("blocks.0"), "protocol": True}, "unsupported protocol version True"),
    ({**compute("blocks.0"), "protocol": "1"}, "unsupported protocol version '1'"),
    ({"type": "compute", "v": "blocks.0"}, "no 'protocol' field"),
    (["compute"], "must be a JSON object"),
    ("hello", "must be a JSON object"),
    ({"protocol": 1, "type": "explode"}, "unknown message type 'explode'"),
    ({"protocol": 1}, "unknown message type None"),
    ({**compute("blocks.0"), "v": None}, "compute needs 'v'"),
    ({**compute("blocks.0"), "v": 3}, "compute needs 'v'"),
    ({**compute("blocks.0"), "probes": "many"}, "'probes' must be an integer"),
    ({**compute("blocks.0"), "probes": 0}, "'probes' must be between 1"),
    ({**compute("blocks.0"), "probes": 2.5}, "'probes' must be an integer"),
    ({**compute("blocks.0"), "space": "weights"}, "space must be 'activation' or 'parameter'"),
    ({**compute("blocks.0"), "mode": "fast"}, "mode must be 'exact' or 'stream'"),
    ({**compute("blocks.0"), "rel_ci": 5}, "'rel_ci' must be null or a fraction"),
    ({**compute("x"), "space": "parameter"}, "unknown parameter group 'x'"),
    ({"protocol": 1, "type": "coupling_map", "nodes": ["blocks.0", 7]}, "'nodes' must be null or a list"),
    ({"protocol": 1, "type": "coupling_map", "nodes": ["blocks.0", "zzz"]}, "unknown node 'zzz'"),
    ({"protocol": 1, "type": "spectrum", "group": 3}, "spectrum needs 'group'"),
])
def test_bad_messages_become_error_status(widget, content, needle, capfd):
    send(widget, content)
    st = widget.status
    assert st["state"] == "error" and needle in st["message"], st
    out, err = capfd.readouterr()
    assert out == "" and err == ""           # never an exception in the comm handler
    send(widget, compute("blocks.0", "blocks.1", probes=8))     # and the widget accepts the next job
    assert widget.status["state"] == "done"


def test_unknown_node_from_python_raises_and_shows(widget):
    with pytest.raises(hx.UnknownNameError, match=r"Did you mean .*'blocks.1.0'"):
        widget.select("blocks.1.O", "blocks.1")
    assert widget.status["state"] == "error" and "blocks.1.O" in widget.status["message"]


def test_unexpected_engine_failure_is_one_line(widget, session, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("CUDA error: device-side assert triggered\nCompile with TORCH_USE_CUDA_DSA")
    monkeypatch.setattr(session, "block", boom)
    send(widget, compute("blocks.0", "blocks.1", mode="exact"))
    assert widget.status["state"] == "error"
    assert widget.status["message"] == "internal error (RuntimeError: CUDA error: device-side assert triggered)"
    assert "Traceback" in widget.last_error


def test_spectrum_message(widget, session):
    group = session.groups[1]
    send(widget, {"protocol": 1, "type": "spectrum", "group": group})
    assert widget.status["state"] == "done" and widget.status["kind"] == "spectrum", widget.status
    sp = widget.spectrum
    ref = session.spectrum(group)
    assert sp["group"] == group and sp["method"] == "exact" and sp["job"] == widget.status["job"]
    assert np.allclose(decode_buf(sp["eigenvalues"]), ref.eigenvalues.numpy(), rtol=1e-10, atol=1e-14)
    assert sp["density"] is not None and decode_buf(sp["density"]["grid"]).shape == tuple(ref.grid.shape)
    assert sp["stats"]["lambda_max"] == pytest.approx(ref.stats["lambda_max"], rel=1e-10)
    assert sp["stats"]["n"] == session.dim(group, "parameter")
    assert type(widget.result).__name__ == "Spectrum"
    wire_json(widget)
    # Lanczos + SLQ streams snapshots
    widget.local_spectrum(group, method="lanczos+slq")
    assert widget.status["state"] == "done" and widget.spectrum["method"] == "lanczos+slq"
    assert widget.spectrum["density"] is not None


@pytest.mark.parametrize("content,needle", [
    ({"protocol": 1, "type": "spectrum", "group": "x"}, "unknown parameter group 'x'"),
    ({"protocol": 1, "type": "spectrum", "group": "head", "method": "magic"}, "method must be one of"),
    ({"protocol": 1, "type": "spectrum", "group": "head", "part": "half"}, "part must be one of"),
])
def test_bad_spectrum_messages(widget, content, needle):
    send(widget, content)
    assert widget.status["state"] == "error" and widget.status["kind"] == "spectrum"
    assert needle in widget.status["message"]


def test_selection_written_from_page_is_kept(widget):
    # the page writes `selection` itself (a trait update), then sends compute
    widget.set_state({"selection": {"v": "blocks.0", "w": None, "space": "activation", "mode": "exact",
                                    "probes": 50, "rel_ci": None}})
    assert widget.selection["v"] == "blocks.0" and widget.status["state"] == "idle"


def test_wait_timeout(session, monkeypatch):
    w = make(session, monkeypatch, executor=ThreadExecutor())
    try:
        w.select("blocks.0", "blocks.1", probes=500_000)
        with pytest.raises(TimeoutError, match="cancel"):
            w.wait(0.2)
        w.cancel()
        assert w.wait(10)["state"] == "cancelled"
    finally:
        w.close()


# ---- a real kernel, headless (nbclient): the comm path with the worker thread ------------------
def test_notebook_headless(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if not wmod.BUNDLE.is_file():
        pytest.skip("browser bundle not built (pip install -e . builds it from js/)")
    cells = [
        "import torch, hessexplore as hx\nfrom hessexplore import models, data\n"
        "torch.manual_seed(0)\nm = models.MLP(4, 6, 2, 3).eval()\nx, y = data.blobs(16, 4, 3)\n"
        "w = hx.explore(m, torch.nn.CrossEntropyLoss(), (x, y), dtype=torch.float64)\nw",
        "j = w.select('blocks.0', 'blocks.1', probes=64)\nst = w.wait(60)\n"
        "print(st['state'], w.estimate['probes'], w.estimate['job'] == j)",
        "w.select('blocks.0', 'blocks.1', mode='exact'); print(w.wait(60)['state'], w.block['shape'])",
        "try:\n    w.select('nope')\nexcept hx.HessExploreError as e:\n    print('raised', w.status['state'])",
        "w._handle_msg({'content': {'data': {'method': 'custom', 'content': {'protocol': 9}}}, 'buffers': []})\n"
        "print(w.status['state'], 'protocol version 9' in w.status['message'])",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outs = [c.outputs for c in nb.cells]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs[0])
    text = ["".join(o.get("text", "") for o in cell if o.get("output_type") == "stream") for cell in outs]
    assert text[1] == "done 64 True\n"
    assert text[2] == "done [6, 6]\n"
    assert text[3] == "raised error\n"
    assert text[4] == "error True\n"
    assert not any(o.get("output_type") == "error" or o.get("name") == "stderr" for cell in outs for o in cell)
