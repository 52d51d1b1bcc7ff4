"""The explorer's checkpoint replay (the ``run`` trait) and the local spectrum that follows a
diagonal pick, without a browser: messages go in the way a page's ``model.send`` arrives, jobs
run synchronously (or on the real worker thread), and traits are checked against the library."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore import data, models
from hessexplore import widget as wmod
from hessexplore.jobs import SyncExecutor, ThreadExecutor
from hessexplore.widget import decode_buf

# the same small problem and fixtures as test_widget (pytest picks up imported fixtures)
from test_widget import compute, make, problem, record, send, session, widget, wire_json  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")


def big_problem():
    """A group above auto's dense threshold (3000 parameters): '2' = Linear(64, 64), 4160."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(6, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3)).eval()
    x, y = data.blobs(24, 6, 3, seed=1)
    return m, nn.CrossEntropyLoss(), (x, y)


@pytest.fixture(scope="module")
def big_session():
    return hx.Session(*big_problem(), dtype=torch.float64)


BIG = "2"


def same(a, b) -> bool:
    """Equal as the trait carries them: NaN <-> None."""
    if a is None or b is None:
        return (a is None or (isinstance(a, float) and math.isnan(a))) and (b is None or (isinstance(b, float) and math.isnan(b)))
    return a == pytest.approx(b, rel=1e-12, abs=0)


# ---- checkpoint replay: the `run` trait ----------------------------------------------------------
@pytest.fixture(scope="module")
def tracked():
    """A tiny MLP trained for 41 steps, curvature tracked every 20 (steps 0, 20, 40)."""
    torch.manual_seed(0)
    model = models.MLP(4, 6, 2, 3, activation="gelu")
    x, y = data.blobs(48, 4, 3, seed=0)
    xt, yt = data.blobs(32, 4, 3, seed=1)
    loss_fn = nn.CrossEntropyLoss()
    tracker = hx.Tracker(model, loss_fn, (x, y), every=20, test_batch=(xt, yt), name="tiny")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(41):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        tracker.step(step, train_loss=loss)
    return model, loss_fn, (x, y), tracker


def test_run_trait_equals_run_series(tracked, monkeypatch, tmp_path):
    model, loss_fn, batch, tracker = tracked
    run = tracker.run
    if not wmod.BUNDLE.is_file():
        monkeypatch.setattr(wmod, "_bundle", lambda: ("export default {}", None))
    w = hx.explore(model, loss_fn, batch, run=run, executor=SyncExecutor())
    try:
        t = w.run
        assert t["name"] == "tiny" and t["part"] == "full" and t["steps"] == [0, 20, 40]
        assert t["groups"] == run.groups == w.session.groups
        for k in ("lambda_max", "lambda_min", "trace", "negative_mass", "trace_share", "lambda_max/trace"):
            assert k in t["stats"], k
        assert t["stats"].index("lambda_max") == 0
        assert set(t["normalized"]) <= set(t["stats"]) and "lambda_max/trace" in t["normalized"]
        assert "lambda_max" not in t["normalized"] and "n" not in t["stats"] and "tol" not in t["stats"]
        assert set(t["values"]) == set(t["stats"])
        for stat in t["stats"]:
            for g in t["groups"]:
                steps, ref = run.series(stat, group=g, part="full")
                got = t["values"][stat][g]
                assert len(got) == len(ref) == 3
                assert all(same(a, float(b)) for a, b in zip(got, ref)), (stat, g, got, ref)
        for key, trait in (("train_loss", "train"), ("test_loss", "test")):
            ref = run.series(key)[1]
            assert all(same(a, float(b)) for a, b in zip(t["losses"][trait], ref))
        assert t["losses"]["train"][0] > t["losses"]["train"][-1]      # it trained
        text, _ = wire_json(w)                                          # strict JSON: no NaN
        assert '"run"' in text

        # other parts, a saved file, a Tracker, and removal
        gn = w.load_run(run, part="gn")
        assert gn["part"] == "gn"
        assert all(same(a, float(b)) for a, b in zip(gn["values"]["lambda_max"]["head"],
                                                     run.series("lambda_max", group="head", part="gn")[1]))
        path = str(tmp_path / "run.json.gz")
        run.save(path)
        assert w.load_run(path) == t and w.run == t
        assert w.load_run(tracker) == t and w.replay_run is run
        assert w.load_run(None) == {} and w.run == {} and w.replay_run is None
        with pytest.raises(TypeError, match="Run, Tracker"):
            w.load_run(42)
        with pytest.raises(hx.HessExploreError, match="part must be"):
            w.load_run(run, part="half")
    finally:
        w.close()


def test_run_trait_nan_is_null_and_empty_runs(session, monkeypatch):
    w = make(session, monkeypatch)
    try:
        rec = {"step": 5, "train_loss": 0.5, "test_loss": None,
               "layers": {"head": {"full": {"stats": {"lambda_max": float("nan"), "trace": 2.0, "n": 21,
                                                      "top_k": [1.0]},
                                            "normalized": {"lambda_max/trace": float("nan")}}}}}
        run = hx.Run(name="r", groups=["head"], records=[rec])
        t = w.load_run(run)
        assert t["steps"] == [5] and t["stats"] == ["trace"]          # all-NaN statistics are dropped
        assert t["values"] == {"trace": {"head": [2.0]}} and t["losses"] == {"train": [0.5], "test": [None]}
        wire_json(w)
        empty = w.load_run(hx.Run(name="nothing"))
        assert empty["steps"] == [] and empty["stats"] == [] and empty["values"] == {}
    finally:
        w.close()


# ---- a diagonal pick: the local spectrum follows the block ------------------------------------------
@pytest.mark.parametrize("v,space,mode,group", [
    ("blocks.1.0", "activation", "exact", "blocks.1.0"),      # a layer: its own parameters
    ("blocks.0", "activation", "stream", "blocks.0"),         # a container alias: all parameters under it
    ("blocks.0.1", "parameter", "exact", "blocks.0.1"),       # parameter space: the picked group
])
def test_diagonal_pick_follow_up_spectrum(widget, session, v, space, mode, group):
    log = record(widget)
    job = widget.select(v, space=space, mode=mode, probes=32, spectrum=True)
    st = widget.status
    assert st["state"] == "done" and st["kind"] == "spectrum" and st["job"] == job + 1, st
    sp = widget.spectrum
    ref = session.spectrum(group)
    assert sp["job"] == job + 1 and sp["group"] == group and sp["node"] == v and sp["done"] and not sp["pending"]
    assert sp["method"] == "exact" and sp["progress"] == 1.0
    assert np.allclose(decode_buf(sp["eigenvalues"]), ref.eigenvalues.numpy(), rtol=1e-10, atol=1e-14)
    for k in ("lambda_max", "lambda_min", "trace", "negative_mass", "n"):
        assert sp["stats"][k] == pytest.approx(ref.stats[k], rel=1e-10), k
    assert sp["stats"]["n"] == session.dim(group, "parameter")
    assert type(widget.result).__name__ == "Spectrum"
    # the block (or the estimate) of the first job stays shown
    if mode == "exact":
        assert widget.block["job"] == job and widget.block["v"] == v == widget.block["w"]
    else:
        assert widget.estimate["job"] == job and widget.estimate["done"] and widget.estimate["probes"] == 32
    # order: the pending header with the pick, the block's own "done", then the spectrum job
    statuses = [(u["status"]["job"], u["status"]["state"], u["status"]["kind"]) for _, u in log if "status" in u]
    assert statuses[0][:2] == (job, "running")
    k = statuses.index((job, "done", "block" if mode == "exact" else "estimate"))
    assert statuses[k + 1] == (job + 1, "running", "spectrum") and statuses[-1] == (job + 1, "done", "spectrum")
    first = next(u["spectrum"] for _, u in log if "spectrum" in u)
    assert first["job"] == job and first["pending"] and first["group"] == group
    wire_json(widget)


def test_no_follow_up_without_flag_off_diagonal_or_parameters(widget, session):
    j = widget.select("blocks.1.0", mode="exact")                         # no "spectrum": as before
    assert widget.status["kind"] == "block" and widget.status["job"] == j and widget.spectrum == {}
    j = widget.select("blocks.0.0", "blocks.1.0", mode="exact", spectrum=True)    # off-diagonal
    assert widget.status["kind"] == "block" and widget.status["job"] == j and widget.spectrum == {}
    j = widget.select("blocks.0.2", mode="exact", spectrum=True)        # GELU: no parameters
    assert widget.status == {**widget.status, "state": "done", "kind": "block", "job": j}
    sp = widget.spectrum
    assert sp["job"] == j and sp["group"] is None and sp["node"] == "blocks.0.2" and not sp["pending"]
    assert sp["message"].startswith("blocks.0.2 (GELU) owns no parameters")
    assert "output of blocks.0" in sp["message"]
    assert widget._runner.last_job.id == j                               # no spectrum job was queued
    assert widget.spectrum_group("blocks.0.2") == (None, sp["message"])
    assert widget.spectrum_group("blocks.1")[0] == "blocks.1"
    assert widget.spectrum_group("head", "parameter")[0] == "head"


def test_bad_spectrum_flag(widget):
    send(widget, {**compute("blocks.0"), "spectrum": "yes"})
    assert widget.status["state"] == "error" and "'spectrum' must be true or false" in widget.status["message"]


def test_cancel_during_the_block_drops_the_follow_up(widget):
    def on_est(change):
        if change["new"].get("probes", 0) >= 24 and widget.status["state"] == "running":
            send(widget, {"protocol": 1, "type": "cancel"})
    widget.observe(on_est, names="estimate")
    send(widget, {**compute("blocks.1.0", probes=10_000), "spectrum": True})
    widget.unobserve(on_est, names="estimate")
    st = widget.status
    assert st["state"] == "cancelled" and st["kind"] == "estimate"
    assert widget._runner.last_job.id == st["job"]                      # the spectrum never started
    assert widget.spectrum["job"] == st["job"] and widget.spectrum["pending"]


def test_request_right_after_the_block_wins_over_the_follow_up(widget):
    """A request arriving after the block finished but before its follow-up was queued (here:
    from the observer of the block's final status) wins: the spectrum job is never started."""
    seen = []

    def on_status(change):
        st = change["new"]
        if st["state"] == "done" and st["kind"] == "block" and not seen:
            seen.append(st["job"])
            send(widget, compute("blocks.0.0", "blocks.1.0", mode="exact"))
    widget.observe(on_status, names="status")
    job = widget.select("blocks.1.0", mode="exact", spectrum=True)
    widget.unobserve(on_status, names="status")
    assert seen == [job]
    st = widget.status
    assert st["state"] == "done" and st["kind"] == "block" and st["job"] == job + 1
    assert widget._runner.last_job.id == job + 1 and widget.block["w"] == "blocks.1.0" and widget.block["v"] == "blocks.0.0"
    assert widget.spectrum["job"] == job and widget.spectrum["pending"]     # the page says: superseded


def _watch_spectrum(w, when, action):
    fired = []

    def on_spec(change):
        sp = change["new"]
        if not fired and when(sp) and w.status["state"] == "running":
            fired.append(sp["job"])
            action()
    w.observe(on_spec, names="spectrum")
    return fired, lambda: w.unobserve(on_spec, names="spectrum")


def test_cancel_and_supersede_the_follow_up(big_session, monkeypatch):
    w = make(big_session, monkeypatch)
    try:
        lanczos = lambda sp: sp.get("stage") == "lanczos" and sp.get("lanczos_iterations", 0) >= 5   # noqa: E731
        fired, off = _watch_spectrum(w, lanczos, lambda: send(w, {"protocol": 1, "type": "cancel"}))
        job = w.select(BIG, space="parameter", probes=8, spectrum=True)   # a short stream, then the spectrum
        off()
        st = w.status
        assert fired == [job + 1] and st["job"] == job + 1 and st["kind"] == "spectrum"
        assert st["state"] == "cancelled" and st["message"].startswith("Cancelled after ") and "(lanczos)" in st["message"]
        assert w.spectrum["job"] == job + 1 and not w.spectrum["done"] and w.spectrum["stage"] == "lanczos"
        assert w.estimate["job"] == job and w.estimate["done"]              # the estimate stays

        log = record(w)
        fired, off = _watch_spectrum(w, lanczos, lambda: send(w, compute("0", "4", mode="exact")))
        job = w.select(BIG, space="parameter", probes=8, spectrum=True)
        off()
        assert fired == [job + 1]
        st = w.status
        assert st["state"] == "done" and st["kind"] == "block" and st["job"] == job + 2
        jobs = [(u["status"]["job"], u["status"]["state"]) for _, u in log if "status" in u]
        k = [j for j, _ in jobs].index(job + 2)
        assert all(j == job + 2 for j, _ in jobs[k:])                       # only the new job afterwards
        assert (job + 1, "cancelled") not in jobs and (job + 1, "done") not in jobs
        spec_jobs = [u["spectrum"]["job"] for _, u in log if "spectrum" in u]
        assert spec_jobs and max(spec_jobs) == job + 1
        later = [u for _, u in log[[i for i, (_, u) in enumerate(log) if "status" in u and u["status"]["job"] == job + 2][0]:]]
        assert not any("spectrum" in u for u in later)
    finally:
        w.close()


def test_forced_lanczos_slq_streams_refining_snapshots(big_session, monkeypatch):
    """Above the dense threshold: Lanczos extremes with shrinking bounds, then the SLQ density
    refining probe by probe; progress only grows; the last snapshot is the library's."""
    assert big_session.dim(BIG, "parameter") > 3000
    w = make(big_session, monkeypatch)
    log = record(w)
    try:
        job = w.local_spectrum(BIG, method="lanczos+slq")
        assert w.status["state"] == "done" and w.status["kind"] == "spectrum" and w.status["job"] == job
        snaps = [u["spectrum"] for _, u in log if "spectrum" in u]
        assert snaps[0]["pending"] and snaps[0]["stage"] == "starting" and snaps[0]["job"] == job
        snaps = snaps[1:]
        stages = [s["stage"] for s in snaps]
        k = stages.index("slq")
        assert k >= 5 and set(stages[:k]) == {"lanczos"} and set(stages[k:]) == {"slq"}
        lz = snaps[:k]
        assert all(s["density"] is None and s["eigenvalues"] is None and not s["done"] for s in lz)
        assert lz[-1]["top_bounds"][0] < lz[0]["top_bounds"][0]            # the bounds tighten
        assert lz[-1]["lanczos_iterations"] > lz[0]["lanczos_iterations"]
        assert [s["slq_probes"] for s in snaps[k:]] == [4, 8, 12, 16]
        assert all(s["density"] is not None for s in snaps[k:])
        progress = [s["progress"] for s in snaps]
        assert progress == sorted(progress) and progress[-1] == 1.0 and max(progress[:-1]) < 1.0
        assert all(s["budget"] == {"lanczos_iterations": 200, "slq_probes": 16} for s in snaps)
        last = snaps[-1]
        assert last["done"] and last["method"] == "lanczos+slq" and last["errors"]["trace"] > 0
        ref = list(big_session.iter_spectrum(BIG, method="lanczos+slq", k=5, num_probes=16))[-1]
        for key in ("lambda_max", "lambda_min", "trace", "negative_mass", "effective_rank"):
            assert last["stats"][key] == pytest.approx(ref.stats[key], rel=1e-10), key
        assert last["top"] == pytest.approx(ref.top.tolist(), rel=1e-12)
        assert last["top_bounds"] == pytest.approx(ref.top_bounds.tolist(), rel=1e-9, abs=1e-14)
        assert np.allclose(decode_buf(last["density"]["density"]), ref.density.numpy(), rtol=1e-10, atol=1e-14)
        wire_json(w)
    finally:
        w.close()


def test_threaded_follow_up_and_wait(big_session, session, monkeypatch):
    w = make(session, monkeypatch, executor=ThreadExecutor(), max_rate=20.0)
    try:
        job = w.select("blocks.1.0", mode="exact", spectrum=True)
        st = w.wait(60)                                  # waits for the follow-up too
        assert st["state"] == "done" and st["kind"] == "spectrum" and st["job"] == job + 1
        assert w.spectrum["job"] == job + 1 and w.spectrum["done"]
    finally:
        w.close()
    w = make(big_session, monkeypatch, executor=ThreadExecutor(), max_rate=20.0)
    try:
        job = w.select(BIG, space="parameter", probes=8, spectrum=True)
        deadline = time.monotonic() + 60
        while w.status.get("kind") != "spectrum" or w.status.get("state") != "running" or not w.spectrum.get("stage") == "lanczos":
            assert time.monotonic() < deadline, w.status
            time.sleep(0.01)
        w.cancel()
        st = w.wait(30)
        assert st["state"] == "cancelled" and st["kind"] == "spectrum" and st["job"] == job + 1
    finally:
        w.close()


def test_a_run_of_another_model_is_refused(tracked, monkeypatch):
    from hessexplore.errors import RunFileError
    model, loss_fn, batch, tracker = tracked
    other = models.MLP(4, 7, 2, 3, activation="gelu")          # another width: other parameter shapes
    w = hx.explore(other, loss_fn, batch)
    try:
        with pytest.raises(RunFileError):
            w.load_run(tracker.run)
        assert w.run == {}
        w2 = hx.explore(model, loss_fn, batch)
        try:
            assert w2.load_run(tracker.run)["steps"] == [0, 20, 40]
        finally:
            w2.close()
    finally:
        w.close()
