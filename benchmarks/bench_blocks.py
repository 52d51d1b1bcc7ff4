"""Exact coupling maps and streaming probes, side by side in one process.

(a) Every block among the 8 hidden nodes of a plain MLP 3072→64 (8 blocks of
    Linear→LayerNorm→ReLU, batch 32, cross-entropy): all 36 blocks with their
    GN and tensor parts, hessexplore's column sweeps against the naive
    per-column double-backward loop of research code.
(b) One streaming probe (H z for one block) against plain torch.func recipes
    and against curvlinops 3.0.1 (optional: pip install -c benchmarks/constraints.txt '.[bench]').

Runs alternate the implementations, repeat, and report median times and ratios.
Usage: python benchmarks/bench_blocks.py [--repeats 3] [--device cpu|cuda] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.func import grad, jvp, vjp, vmap

import hessexplore as hx
from hessexplore.models import MLP


def make_problem(device, dtype=torch.float32, depth=8, d_in=3072, width=64, batch=32, classes=10):
    torch.manual_seed(0)
    model = MLP(d_in, width, depth, classes, activation="relu", norm="layernorm").to(device, dtype).eval()
    x = torch.randn(batch, d_in, device=device, dtype=dtype)
    y = torch.randint(0, classes, (batch,), device=device)
    return model, nn.CrossEntropyLoss(), x, y


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---- (a) naive per-column double backward, as research code does it ----------------------------
def naive_block(model, loss_fn, x, y, v_mod, w_mod):
    """H_{v,w}, GN and tensor parts, one autograd backward per column (hooks add shared δ)."""
    d_v, d_w = v_mod.out_features, w_mod.out_features
    dv = torch.zeros(d_v, dtype=x.dtype, device=x.device, requires_grad=True)
    dw = dv if v_mod is w_mod else torch.zeros(d_w, dtype=x.dtype, device=x.device, requires_grad=True)
    hooks = [v_mod.register_forward_hook(lambda m, i, o: o + dv)]
    if w_mod is not v_mod:
        hooks.append(w_mod.register_forward_hook(lambda m, i, o: o + dw))
    try:
        z = model(x)
        loss = loss_fn(z, y)
        (g_w,) = torch.autograd.grad(loss, dw, create_graph=True)
        H = torch.stack([torch.autograd.grad(g_w[j], dv, retain_graph=True)[0] for j in range(d_w)], 1)
        # GN column j: J_vᵀ H_z J_w e_j; J_w e_j by the double-vjp trick, H_z by autograd on the loss
        zd = z.detach().requires_grad_(True)
        (gz,) = torch.autograd.grad(loss_fn(zd, y), zd, create_graph=True)
        u = torch.zeros_like(z, requires_grad=True)
        (jt_u,) = torch.autograd.grad(z, dw, u, create_graph=True)
        cols = []
        for j in range(d_w):
            e = torch.zeros(d_w, dtype=x.dtype, device=x.device)
            e[j] = 1
            (Jw_e,) = torch.autograd.grad(jt_u, u, e, retain_graph=True)
            (Hz,) = torch.autograd.grad(gz, zd, Jw_e, retain_graph=True)
            (col,) = torch.autograd.grad(z, dv, Hz, retain_graph=True)
            cols.append(col)
        GN = torch.stack(cols, 1)
    finally:
        for h in hooks:
            h.remove()
    return H.detach(), GN.detach(), (H - GN).detach()


def naive_map(model, loss_fn, x, y):
    mods = [blk[2] for blk in model.blocks]   # the ReLU outputs = block outputs
    out = {}
    for i in range(len(mods)):
        for j in range(i, len(mods)):
            out[i, j] = naive_block(model, loss_fn, x, y, mods[i], mods[j])
    return out


def hx_map(model, loss_fn, x, y):
    s = hx.Session(model, loss_fn, (x, y), check_loss=False)
    names = [f"blocks.{i}" for i in range(len(model.blocks))]
    return s.coupling_map(names)


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    r = fn()
    sync(device)
    return time.perf_counter() - t, r


def bench_map(device, repeats):
    model, loss_fn, x, y = make_problem(device)
    for blk in model.blocks:   # naive_block reads out_features off the perturbed module
        blk[2].out_features = blk[0].out_features
    # correctness cross-check once (norms of all 36 blocks)
    naive = naive_map(model, loss_fn, x, y)
    cmap = hx_map(model, loss_fn, x, y)
    err = max(abs(float(torch.linalg.norm(H)) - float(cmap.R[i, j])) / max(float(cmap.R[i, j]), 1e-30)
              for (i, j), (H, _, _) in naive.items())
    gerr = max(abs(float(torch.linalg.norm(G)) - float(cmap.norm_gn[i, j])) / max(float(cmap.norm_gn[i, j]), 1e-30)
               for (i, j), (_, G, _) in naive.items())
    t_naive, t_hx = [], []
    for _ in range(repeats):
        t_naive.append(timed(lambda: naive_map(model, loss_fn, x, y), device)[0])
        t_hx.append(timed(lambda: hx_map(model, loss_fn, x, y), device)[0])
    mn, mh = statistics.median(t_naive), statistics.median(t_hx)
    print(f"(a) 8x8 coupling map, MLP 3072→64×8 (LN, ReLU), batch 32, CE, {device}, "
          f"36 blocks with GN and tensor parts")
    print(f"    naive per-column double backward: {mn:8.3f} s   (max rel. diff of ‖H‖_F {err:.1e}, ‖GN‖_F {gerr:.1e})")
    print(f"    hessexplore column sweeps:        {mh:8.3f} s")
    print(f"    speed-up: {mn / mh:6.1f}×")
    return mn / mh


# ---- (b) one streaming probe ----------------------------------------------------------------
def bench_probe(device, repeats, k=1, iters=20):
    model, loss_fn, x, y = make_problem(device)
    s = hx.Session(model, loss_fn, (x, y), check_loss=False)
    v, w = "blocks.2", "blocks.5"
    va, wa = s._atoms(v, "activation"), s._atoms(w, "activation")
    op = s.operator(va + wa, "activation", mode="double-backward")   # what s.estimate uses
    gen = torch.Generator(device=device).manual_seed(0)
    Z = (2 * torch.randint(0, 2, (k, 64), generator=gen, device=device) - 1).to(x.dtype)

    def ours():
        return op.products(wa, Z, va, gn=False).rows("full", va)

    # plain torch.func on the same perturbed forward
    problem = op.problem
    base = problem.base
    loss = problem.loss

    def recipe_fwd_rev():       # vmap(jvp(grad)) over δ_w, gradient wrt δ_v
        def g(dw):
            return grad(lambda dv: loss({**base, va[0]: dv, wa[0]: dw}))(base[va[0]])
        with torch.no_grad():
            return vmap(lambda t: jvp(g, (base[wa[0]],), (t,))[1])(Z)

    def recipe_rev_rev():       # H_vw z = vjp of δ_v ↦ ∂L/∂δ_w with cotangent z (reverse-over-reverse)
        with torch.no_grad():
            _, pull = vjp(lambda dv: grad(lambda dw: loss({**base, va[0]: dv, wa[0]: dw}))(base[wa[0]]),
                          base[va[0]])
            return vmap(lambda t: pull(t)[0])(Z)

    def recipe_autograd():      # double backward, forward and first backward redone (from scratch)
        dv = base[va[0]].clone().requires_grad_(True)
        dw = base[wa[0]].clone().requires_grad_(True)
        L = loss({**base, va[0]: dv, wa[0]: dw})
        (gw,) = torch.autograd.grad(L, dw, create_graph=True)
        return _double_backward(gw, dv, Z)

    # the same recipe on a graph recorded once, as hessexplore's streaming operator keeps it
    dv_r = base[va[0]].clone().requires_grad_(True)
    dw_r = base[wa[0]].clone().requires_grad_(True)
    (gw_r,) = torch.autograd.grad(loss({**base, va[0]: dv_r, wa[0]: dw_r}), dw_r, create_graph=True)

    def recipe_recorded():
        return _double_backward(gw_r, dv_r, Z)

    ref = ours()
    for f in (recipe_fwd_rev, recipe_rev_rev, recipe_autograd, recipe_recorded):
        r = f()
        assert torch.allclose(r, ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max())), f.__name__

    def ours_cold():            # first probe of a stream: records forward + first backward, then one product
        op._recorded = None
        return ours()

    scratch = {"hessexplore, first probe (records graph)": ours_cold,
               "torch.func vmap(jvp(grad))": recipe_fwd_rev,
               "torch.func vjp(grad) (rev-over-rev)": recipe_rev_rev,
               "autograd double backward": recipe_autograd}
    recorded = {"hessexplore": ours, "autograd double backward, recorded": recipe_recorded}
    impls = {**scratch, **recorded}
    impls.update(_curvlinops_impl(model, loss_fn, x, y, device))
    times = {n: [] for n in impls}
    for _ in range(repeats):
        for n, f in impls.items():
            f()
            sync(device)
            t = time.perf_counter()
            for _ in range(iters):
                f()
            sync(device)
            times[n].append((time.perf_counter() - t) / iters)
    med = {n: statistics.median(t) for n, t in times.items()}
    op._recorded = None
    print(f"(b) one probe batch H_vw Z, Z (k={k}, 64), for ({v}, {w}), activation space, {device}; like for like:"
          " 'from scratch' redoes the forward and first backward, 'recorded' reuses them;"
          " [param] rows: one H·v on the 4160-parameter block of blocks.5.0")
    for group, names in (("from scratch", list(scratch)), ("recorded", list(recorded))):
        best = min(med[n] for n in names if not n.startswith("hessexplore"))
        print(f"    {group}:")
        for n in names:
            print(f"      {n:40s} {med[n] * 1e3:8.3f} ms   ratio to the best plain recipe {med[n] / best:5.2f}")
    for n in impls:
        if n.endswith("[param]"):
            print(f"    {n:42s} {med[n] * 1e3:8.3f} ms")
    return med


def _double_backward(gw, dv, Z):
    """Rows of H_vw Zᵀ from a recorded gradient: one plain backward per direction for k = 1, else batched."""
    if Z.shape[0] == 1:
        return torch.autograd.grad(gw, dv, Z[0], retain_graph=True)[0][None]
    return torch.autograd.grad(gw, dv, Z, retain_graph=True, is_grads_batched=True)[0]


def _curvlinops_impl(model, loss_fn, x, y, device):
    """curvlinops works in parameter space: time one H·v of the diagonal block of blocks.5's Linear."""
    try:
        from curvlinops import HessianLinearOperator
    except ImportError:
        print("    (curvlinops not installed: pip install -c benchmarks/constraints.txt '.[bench]')")
        return {}
    params = [model.blocks[5][0].weight, model.blocks[5][0].bias]
    H = HessianLinearOperator(model, loss_fn, params, [(x, y)], check_deterministic=False)
    vec = [torch.randn_like(p) for p in params]
    s = hx.Session(model, loss_fn, (x, y), check_loss=False)
    atoms = s._atoms("blocks.5.0", "parameter")
    op = s.operator(atoms, "parameter", mode="double-backward")
    Z = torch.cat([t.reshape(-1) for t in vec])[None]
    ours = op.products(atoms, Z, atoms, gn=False).rows("full", atoms)[0]
    theirs = torch.cat([t.reshape(-1) for t in (H @ vec)])
    assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-5 * float(theirs.abs().max())), "curvlinops mismatch"
    def ours_cold():
        op._recorded = None
        return op.products(atoms, Z, atoms, gn=False)

    return {"curvlinops HessianLinearOperator [param]": lambda: H @ vec,
            "hessexplore [param]": lambda: op.products(atoms, Z, atoms, gn=False),
            "hessexplore, first probe [param]": ours_cold}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-map", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    if not args.skip_map:
        bench_map(device, args.repeats)
    bench_probe(device, args.repeats, k=1)
    bench_probe(device, args.repeats, k=8)


if __name__ == "__main__":
    main()
