"""Cost of streaming through the explorer widget, side by side in one process.

On the quickstart model (``hessexplore.demos.demo("mlp")``: MLP 8→16×4→3 with GELU and
LayerNorm, batch 64, float32 as shipped):

(a) latency from a ``compute`` message (delivered the way a page's ``model.send`` arrives:
    ``Widget._handle_msg``) to the first published estimate (a trait write with probes > 0),
    on the real worker thread, against the bare engine's time to its first snapshot
    (``next(s.estimate(...))``).  "cold" = first request for a pair (operator recorded),
    "warm" = repeated requests (operator cached).
(b) compute overhead: the same estimate (same pair, seed and probe budget) run bare
    (``for snap in s.estimate(...)``) and through the widget (message → worker thread →
    throttled publisher → trait serialisation, ``wait()``), alternating, several repeats;
    the median ratio widget/bare of wall time and of process CPU time (all threads; steadier
    than wall time on a shared machine).

No kernel is attached: traits are serialised (``get_state``, buffers split) as for a real
front end, only the zmq send is missing.
Usage: python benchmarks/bench_widget.py [--repeats 7] [--probes 400] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import hessexplore as hx
from hessexplore.demos import demo
from hessexplore.jobs import ThreadExecutor
from hessexplore.widget import Explorer

PAIRS = [("blocks.0", "blocks.2"), ("blocks.1", "blocks.3"), ("blocks.0", "blocks.3"), ("blocks.1", "blocks.2"),
         ("blocks.0", "blocks.1"), ("blocks.2", "blocks.3"), ("blocks.0", "head"), ("blocks.1", "head")]


def compute_msg(v, w, probes, seed=0):
    return {"protocol": 1, "type": "compute", "v": v, "w": w, "space": "activation", "mode": "stream",
            "probes": probes, "rel_ci": None, "seed": seed}


def deliver(widget, content):
    widget._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


class FirstEstimate:
    """Wraps the publisher's write to timestamp the first write carrying a snapshot."""

    def __init__(self, widget):
        self.widget = widget
        self.inner = widget._publisher._write
        self.t_first = None
        self.writes = 0
        widget._publisher._write = self

    def reset(self):
        self.t_first, self.writes = None, 0

    def __call__(self, updates):
        self.inner(updates)
        self.writes += 1
        est = updates.get("estimate")
        if self.t_first is None and est and est.get("probes", 0) > 0:
            self.t_first = time.perf_counter()


def bare_first(session, v, w, probes, seed=0):
    t0 = time.perf_counter()
    gen = session.estimate(v, w, probes=probes, seed=seed)
    next(gen)
    dt = time.perf_counter() - t0
    gen.close()
    return dt


def widget_first(widget, rec, v, w, probes, seed=0):
    rec.reset()
    t0 = time.perf_counter()
    deliver(widget, compute_msg(v, w, probes, seed))
    t_enqueued = time.perf_counter() - t0
    while rec.t_first is None:
        time.sleep(0.0002)
    dt = rec.t_first - t0
    widget.cancel()
    widget.wait(60)
    return dt, t_enqueued


def bare_full(session, v, w, probes, seed=0):
    c0, t0 = time.process_time(), time.perf_counter()
    snap = None
    for snap in session.estimate(v, w, probes=probes, seed=seed):
        pass
    return time.perf_counter() - t0, time.process_time() - c0, snap


def widget_full(widget, rec, v, w, probes, seed=0):
    rec.reset()
    c0, t0 = time.process_time(), time.perf_counter()
    deliver(widget, compute_msg(v, w, probes, seed))
    st = widget.wait(600)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    assert st["state"] == "done", st
    return dt, dc, rec.writes


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--probes", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, loss_fn, batch, _ = demo("mlp")
    print(f"quickstart model demo('mlp'), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"probes {args.probes}, repeats {args.repeats}")

    # ---- (a) latency to the first estimate ----
    s_bare = hx.Session(model, loss_fn, batch)
    s_wid = hx.Session(model, loss_fn, batch)
    w = Explorer(s_wid, executor=ThreadExecutor())
    rec = FirstEstimate(w)
    cold_b, cold_w, enq = [], [], []
    for k, (v, wn) in enumerate(PAIRS[:args.repeats]):    # alternate which side goes first
        if k % 2 == 0:
            cold_b.append(bare_first(s_bare, v, wn, args.probes))
            dt, e = widget_first(w, rec, v, wn, args.probes)
        else:
            dt, e = widget_first(w, rec, v, wn, args.probes)
            cold_b.append(bare_first(s_bare, v, wn, args.probes))
        cold_w.append(dt)
        enq.append(e)
    warm_b, warm_w = [], []
    v, wn = PAIRS[0]
    for k in range(args.repeats * 3):
        if k % 2 == 0:
            warm_b.append(bare_first(s_bare, v, wn, args.probes))
            dt, e = widget_first(w, rec, v, wn, args.probes)
        else:
            dt, e = widget_first(w, rec, v, wn, args.probes)
            warm_b.append(bare_first(s_bare, v, wn, args.probes))
        warm_w.append(dt)
        enq.append(e)
    print("\n(a) compute message -> first published estimate (median over runs)")
    print(f"    handler (validate + enqueue, main thread): {1e3 * med(enq):8.2f} ms")
    print(f"    cold  bare first snapshot {1e3 * med(cold_b):8.2f} ms | widget first estimate {1e3 * med(cold_w):8.2f} ms"
          f" | overhead {1e3 * (med(cold_w) - med(cold_b)):+7.2f} ms")
    print(f"    warm  bare first snapshot {1e3 * med(warm_b):8.2f} ms | widget first estimate {1e3 * med(warm_w):8.2f} ms"
          f" | overhead {1e3 * (med(warm_w) - med(warm_b)):+7.2f} ms")

    # ---- (b) full estimate, bare vs through the widget ----
    v, wn = PAIRS[0]
    bare_full(s_bare, v, wn, args.probes)        # warm both operators
    widget_full(w, rec, v, wn, args.probes)
    tb, tw, ratios, writes, cb, cw, cratios = [], [], [], [], [], [], []
    for k in range(args.repeats):
        if k % 2 == 0:
            b, bc, snap = bare_full(s_bare, v, wn, args.probes)
            x, xc, n = widget_full(w, rec, v, wn, args.probes)
        else:
            x, xc, n = widget_full(w, rec, v, wn, args.probes)
            b, bc, snap = bare_full(s_bare, v, wn, args.probes)
        tb.append(b)
        tw.append(x)
        ratios.append(x / b)
        cb.append(bc)
        cw.append(xc)
        cratios.append(xc / bc)
        writes.append(n)
    assert w.result.resonance.value == snap.resonance.value       # the same estimate
    n_snap = -(-args.probes // 8)
    print(f"\n(b) full estimate H[{v}, {wn}], {args.probes} probes = {n_snap} snapshots (median over {args.repeats})")
    print(f"    bare {1e3 * med(tb):8.1f} ms | widget {1e3 * med(tw):8.1f} ms | ratio widget/bare "
          f"{med(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    print(f"    CPU time (process, all threads): bare {1e3 * med(cb):8.1f} ms | widget {1e3 * med(cw):8.1f} ms | "
          f"ratio {med(cratios):.3f} (min {min(cratios):.3f}, max {max(cratios):.3f})")
    print(f"    trait writes per run: median {med(writes):.0f} for {n_snap} snapshots "
          f"(≤ 20 Hz: ≤ {20 * med(tw) + 2:.0f} allowed)")
    w.close()


if __name__ == "__main__":
    main()
