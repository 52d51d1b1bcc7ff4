"""ResNet-18 (torchvision replica, CIFAR stem, 32×32, batch 4): hessexplore against plain autograd, one process.

(1) Per-probe cost of the streaming estimator for one activation-space block (v, w): per probe
    H t and GN t for t in w's space and for s in v's space, rows of both nodes (what R — two samples
    per probe —, C and GN-Gap need).  Plain recipes, like for like: the forward and first backward
    recorded once (create_graph) with forward hooks adding shared δ_v, δ_w, then per probe plain
    double backwards (no vmap, no batching):
      "plain H + J t": H t by double backward of the gradient, J t by the double-vjp trick, GN by
                       a backward of z (the textbook recipe);
      "plain split":   the best recipe we know, in plain autograd: one double backward of g_w·t
                       gives H t and, caught where it passes γ = ∂L/∂z, J t; a backward through the
                       loss and one of z the GN part (what hessexplore's recorded operator does).
    Reported: seconds per probe, ratios to the best plain recipe, and per-probe cost in units of one
    forward+backward of the model on the batch.
(2) Exact block columns/s: the first N columns of H_{·,w} and its GN part (rows of v and w) by
    hessexplore's sweeps (what s.block and exact maps run: the operator and chunk the session chose
    by timing both; the recorded operator with the chunk its memory model picks and fixed chunks; the
    stateless forward-over-reverse operator) against the two plain recipes, one column at a time on a
    recorded graph.
(3) Time to the first map cell over the stage outputs: exact (streams within a node) and estimated.
(4) Memory: for both operators, the chunk the measured memory model allows for 1 GiB, 256 MiB and
    64 MiB, and the measured peak of such a product against the budget; peak RSS (ru_maxrss,
    process-wide and monotone) after each stage.

Runs alternate the implementations, repeat, and report medians and ratios.  One thread unless
--threads.  Usage: python benchmarks/bench_resnet.py [--width 64] [--repeats 3] [--probes 8] [--quick]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from torch import nn

import hessexplore as hx
from hessexplore import models


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make(width: int, batch: int, size: int, device, seed: int = 0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    m = models.randomize_batchnorm(models.ResNet18(num_classes=10, width=width), g).to(device)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    return m, nn.CrossEntropyLoss(), x, y


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def perturbed_output(model, x, v_mod, w_mod, v_shape, w_shape):
    """(δ_v, δ_w, z): zero perturbations (requires_grad) added by forward hooks to two modules' outputs."""
    dv = torch.zeros(v_shape, device=x.device, dtype=x.dtype, requires_grad=True)
    dw = torch.zeros(w_shape, device=x.device, dtype=x.dtype, requires_grad=True)
    hooks = [v_mod.register_forward_hook(lambda m, i, o: o + dv), w_mod.register_forward_hook(lambda m, i, o: o + dw)]
    try:
        return dv, dw, model(x)
    finally:
        for h in hooks:
            h.remove()


class PlainRecipe:
    """Recorded forward + first backward with hooks adding shared δ at two modules; plain double backwards."""

    def __init__(self, model, loss_fn, x, y, v_mod, w_mod, v_shape, w_shape):
        self.dv, self.dw, self.z = perturbed_output(model, x, v_mod, w_mod, v_shape, w_shape)
        loss = loss_fn(self.z, y)
        self.gv, self.gw = torch.autograd.grad(loss, (self.dv, self.dw), create_graph=True)
        self.zl = self.z.detach().requires_grad_(True)
        (self.gz,) = torch.autograd.grad(loss_fn(self.zl, y), self.zl, create_graph=True)
        self.u = torch.zeros_like(self.z, requires_grad=True)
        self.jtu_v, self.jtu_w = torch.autograd.grad(self.z, (self.dv, self.dw), self.u, create_graph=True)

    def probe(self, t, s):
        """(H_vw t, H_ww t, H_vv s, GN_vw t, GN_ww t, GN_vv s) by single double backwards."""
        Hvw_t, Hww_t = torch.autograd.grad(self.gw, (self.dv, self.dw), t, retain_graph=True)
        (Hvv_s,) = torch.autograd.grad(self.gv, self.dv, s, retain_graph=True)
        (Jw_t,) = torch.autograd.grad(self.jtu_w, self.u, t, retain_graph=True)
        (Hz_w,) = torch.autograd.grad(self.gz, self.zl, Jw_t, retain_graph=True)
        Gvw_t, Gww_t = torch.autograd.grad(self.z, (self.dv, self.dw), Hz_w, retain_graph=True)
        (Jv_s,) = torch.autograd.grad(self.jtu_v, self.u, s, retain_graph=True)
        (Hz_v,) = torch.autograd.grad(self.gz, self.zl, Jv_s, retain_graph=True)
        (Gvv_s,) = torch.autograd.grad(self.z, self.dv, Hz_v, retain_graph=True)
        return Hvw_t, Hww_t, Hvv_s, Gvw_t, Gww_t, Gvv_s

    def column(self, j):
        """Column j of H_{·,w} and of its GN part (what an exact sweep yields): plain double backwards."""
        e = torch.zeros_like(self.dw).view(-1)
        e[j] = 1
        e = e.view_as(self.dw)
        H = torch.autograd.grad(self.gw, (self.dv, self.dw), e, retain_graph=True)
        (Jw_e,) = torch.autograd.grad(self.jtu_w, self.u, e, retain_graph=True)
        (Hz,) = torch.autograd.grad(self.gz, self.zl, Jw_e, retain_graph=True)
        G = torch.autograd.grad(self.z, (self.dv, self.dw), Hz, retain_graph=True)
        return H, G


class SplitRecipe(PlainRecipe):
    """The best plain recipe we know: one double backward of g_w·t gives H t and, caught at γ = ∂L/∂z, J t."""

    def __init__(self, model, loss_fn, x, y, v_mod, w_mod, v_shape, w_shape):
        self.dv, self.dw, self.z = perturbed_output(model, x, v_mod, w_mod, v_shape, w_shape)
        (self.gamma,) = torch.autograd.grad(loss_fn(self.z, y), self.z, create_graph=True)
        self.gv, self.gw = torch.autograd.grad(self.z, (self.dv, self.dw), self.gamma, create_graph=True)
        self.zl = self.z.detach().requires_grad_(True)
        (self.gz,) = torch.autograd.grad(loss_fn(self.zl, y), self.zl, create_graph=True)

    def _both(self, g, t):
        """(H_{v,·} t, H_{w,·} t, GN_{v,·} t, GN_{w,·} t) for t in the space of g's node."""
        Hv, Hw, Jt = torch.autograd.grad(g, (self.dv, self.dw, self.gamma), t, retain_graph=True)
        (Hz,) = torch.autograd.grad(self.gz, self.zl, Jt, retain_graph=True)
        Gv, Gw = torch.autograd.grad(self.z, (self.dv, self.dw), Hz, retain_graph=True)
        return Hv, Hw, Gv, Gw

    def probe(self, t, s):
        return self._both(self.gw, t) + self._both(self.gv, s)

    def column(self, j):
        e = torch.zeros_like(self.dw).view(-1)
        e[j] = 1
        Hv, Hw, Gv, Gw = self._both(self.gw, e.view_as(self.dw))
        return (Hv, Hw), (Gv, Gw)


class TextbookRecipe(PlainRecipe):
    """PlainRecipe computing the same rows as hessexplore per probe: both directions, both nodes' rows."""

    def probe(self, t, s):
        (Hv_t, Hw_t), (Gv_t, Gw_t) = self._rows(self.gw, self.jtu_w, t)
        (Hv_s, Hw_s), (Gv_s, Gw_s) = self._rows(self.gv, self.jtu_v, s)
        return Hv_t, Hw_t, Gv_t, Gw_t, Hv_s, Hw_s, Gv_s, Gw_s

    def _rows(self, g, jtu, t):
        H = torch.autograd.grad(g, (self.dv, self.dw), t, retain_graph=True)
        (Jt,) = torch.autograd.grad(jtu, self.u, t, retain_graph=True)
        (Hz,) = torch.autograd.grad(self.gz, self.zl, Jt, retain_graph=True)
        G = torch.autograd.grad(self.z, (self.dv, self.dw), Hz, retain_graph=True)
        return H, G


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64, help="base width (64 = ResNet-18)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--columns", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="width 16, 2 repeats")
    a = ap.parse_args()
    if a.quick:
        a.width, a.repeats = 16, 2
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    model, loss_fn, x, y = make(a.width, a.batch, a.size, device)
    nparams = sum(p.numel() for p in model.parameters())
    v, w = "layer3", "layer4"
    print(f"ResNet-18 replica width {a.width} ({nparams:,} parameters), batch {a.batch}, {a.size}×{a.size}, "
          f"{a.threads} thread(s), {device}; block ({v}, {w}); RSS {rss_mb():.0f} MB")

    # one forward+backward: the unit
    def fb():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
    fb()
    t_fb = statistics.median(timed(fb, device)[0] for _ in range(max(3, a.repeats)))
    print(f"one forward+backward: {1e3 * t_fb:.1f} ms")

    s = hx.Session(model, loss_fn, (x, y), check_loss=False)
    sv, sw = s.node(v).shape, s.node(w).shape
    recipes = {"plain H + J t": TextbookRecipe(model, loss_fn, x, y, getattr(model, v), getattr(model, w), sv, sw),
               "plain split": SplitRecipe(model, loss_fn, x, y, getattr(model, v), getattr(model, w), sv, sw)}
    print(f"  d_v = {s.dim(v):,}, d_w = {s.dim(w):,}; RSS after recording {rss_mb():.0f} MB")

    # (1) per-probe cost ---------------------------------------------------------------------------
    P = a.probes
    g = torch.Generator().manual_seed(0)
    T = (2 * torch.randint(0, 2, (P,) + tuple(sw), generator=g) - 1).to(device, x.dtype)
    S = (2 * torch.randint(0, 2, (P,) + tuple(sv), generator=g) - 1).to(device, x.dtype)

    def run_plain(rec):
        def f():
            for i in range(P):
                rec.probe(T[i], S[i])
        return f

    def run_hx(batch):
        def f():
            for _ in s.estimate(v, w, probes=P, batch_size=batch, krylov=False, seed=0):
                pass
        return f

    list(s.estimate(v, w, probes=8, batch_size=8, krylov=False))       # record the graph, choose batched/loop
    op = s.operator([s.node(v).name, s.node(w).name], "activation", mode="double-backward")
    rows = {k: [] for k in recipes}
    rows.update({"hessexplore batch 1": [], f"hessexplore batch {min(P, 8)}": []})
    for _ in range(a.repeats):
        for k, rec in recipes.items():
            rows[k].append(timed(run_plain(rec), device)[0] / P)
        rows["hessexplore batch 1"].append(timed(run_hx(1), device)[0] / P)
        rows[f"hessexplore batch {min(P, 8)}"].append(timed(run_hx(min(P, 8)), device)[0] / P)
    best = min(statistics.median(rows[k]) for k in recipes)
    ways = "; ".join(f"directions in {'+'.join(kw)}, rows of {'+'.join(ko)}: "
                     f"{'batched' if b else 'plain backwards'} ({', '.join(f'{n} {1e3 * t:.1f} ms' for n, t in tm.items())})"
                     for (kw, ko, _, _), (b, tm) in op.tuning.ways.items())
    print(f"(1) per probe (H and GN rows of v and w, for a direction in each of v and w), median of {a.repeats}; "
          f"hessexplore measured per product shape, per direction: {ways or 'nothing (k < 3)'}")
    for k, vals in rows.items():
        m = statistics.median(vals)
        print(f"    {k:<22} {1e3 * m:9.1f} ms  = {m / t_fb:5.2f} fwd+bwd   ratio to best plain {m / best:5.2f}")
    print(f"    RSS {rss_mb():.0f} MB")

    # (2) exact columns/s ----------------------------------------------------------------------------
    N = min(a.columns, s.dim(w))
    atoms = [s.node(v).name, s.node(w).name]
    ops = {"recorded": s.operator(atoms, "activation", mode="double-backward"),
           "fwd-over-rev": s.operator(atoms, "activation")}
    auto_chunk = s._chunk(ops["recorded"], [atoms[1]], atoms, s.dim(w))
    t0 = time.perf_counter()
    ops["auto"], sweep_chunk = s._sweep_operator(ops["recorded"], [atoms[1]], atoms, s.dim(w), "activation")
    t_choice = time.perf_counter() - t0

    def plain_cols(rec):
        def f():
            for j in range(N):
                rec.column(j)
        return f

    def hx_first_n(chunk, mode):
        def f():
            done = 0
            for _, k, _ in ops[mode].iter_dense_columns([atoms[1]], atoms, min(chunk, N)):
                done += k
                if done >= N:
                    break
        return f

    variants = [("auto", sweep_chunk, f"hx s.block's sweep: {ops['auto'].mode} chunk {min(sweep_chunk, N)}"),
                ("recorded", auto_chunk, f"hx recorded chunk {min(auto_chunk, N)} (memory model)")]
    variants += [("recorded", c, f"hx recorded chunk {c}") for c in (1, 8) if c != min(auto_chunk, N)]
    variants += [("fwd-over-rev", c, f"hx fwd-over-rev chunk {c}") for c in (8, N)]
    cols = {k: [] for k in recipes}
    cols.update({label: [] for _, _, label in variants})
    for mode, c, _ in variants:
        hx_first_n(c, mode)()                                       # warm up every variant once
    for _ in range(a.repeats):
        for k, rec in recipes.items():
            cols[k].append(N / timed(plain_cols(rec), device)[0])
        for mode, c, label in variants:
            cols[label].append(N / timed(hx_first_n(c, mode), device)[0])
    best = max(statistics.median(cols[k]) for k in recipes)
    print(f"(2) exact columns of H_(·,{w}) and GN per second (first {N} columns, rows of {v} and {w}); s.block's "
          f"sweep measured both operators and chose {ops['auto'].mode} in {t_choice:.1f} s:")
    for k, vals in cols.items():
        m = statistics.median(vals)
        print(f"    {k:<36} {m:9.2f} col/s   ratio to best plain {m / best:5.2f}")
    print(f"    RSS {rss_mb():.0f} MB")

    # (3) time to the first map cell -----------------------------------------------------------------
    stages = list(models.RESNET_STAGES)
    s_big = hx.Session(model, loss_fn, (x, y), check_loss=False, max_exact_dim=1 << 30)
    s_big.max_exact_bytes = 1 << 50           # never completed here: only the first partial result is taken
    t0 = time.perf_counter()
    first = next(iter(s_big.iter_coupling_map(stages, method="exact", first_chunk=8)))
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    stream = iter(s.iter_coupling_map(stages, method="estimate", probes=10, batch_size=8))
    est = next(stream)
    t_est = time.perf_counter() - t0
    refined = next(stream)                    # the second round: batched or looped measured, then 8 probes
    t_ref = time.perf_counter() - t0
    print(f"(3) first map cell over {len(stages)} stages ({sum(s.dim(n) for n in stages):,} columns in all): "
          f"exact {t_exact:.1f} s ({first.columns_done} of {first.columns_total:,} columns swept, partial "
          f"norms), estimate {t_est:.1f} s (a full map of {est.probes} probes per stage; refined to "
          f"{refined.probes} probes at {t_ref:.1f} s; auto chooses {s._map_method(stages, 'activation', 'auto')!r})")
    print(f"    RSS {rss_mb():.0f} MB (peak of the whole process)")

    # (4) memory model ---------------------------------------------------------------------------------
    from hessexplore.memory import peak_bytes
    ref = next(iter(ops["recorded"].problem.base.values()))
    print(f"(4) measured memory line of one product on ({v}, {w}) and its check: the directions the line allows "
          "within a budget (without the ~1 s time cap, so that memory binds) and the measured peak of that product")
    for name in ("recorded", "fwd-over-rev"):
        op = ops[name]
        fixed, per = op.memory_cost([atoms[1]], atoms)
        how = ("batched" if op.batched else "plain backwards") if name == "recorded" else "vmapped"
        print(f"    {name} ({how}): {fixed / 2**20:.1f} MiB + {per / 2**20:.2f} MiB per direction")
        op.PRODUCT_SECONDS = 1e9                # this instance only: show where memory binds
        op._chunks.clear()                      # (the chunks cached so far carry the time cap)
        for budget in (1 << 30, 1 << 28, 1 << 26):
            k = op.directions_within(budget, [atoms[1]], atoms, s.dim(w))
            peak, _ = peak_bytes(lambda: op.products([atoms[1]], _units(k, s.dim(w), ref), atoms), ref.device)
            print(f"      budget {budget / 2**20:6.0f} MiB: {k:5d} directions per product, measured peak "
                  f"{peak / 2**20:7.1f} MiB = {peak / budget:.2f} of the budget")
        del op.PRODUCT_SECONDS
    print(f"    RSS {rss_mb():.0f} MB (peak of the whole process)")


def _units(k, d, ref):
    E = torch.zeros(k, d, dtype=ref.dtype, device=ref.device)
    E[torch.arange(k), torch.arange(k) % d] = 1
    return E

if __name__ == "__main__":
    main()
