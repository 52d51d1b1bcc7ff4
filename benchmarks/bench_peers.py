"""hessexplore against PyHessian, hessian-eigenthings and curvlinops: whole-model trace, λ_max, density.

Every library gets the same model, batch, float32 parameters, probe counts and tolerance, and works
on **all parameters of the model** (the peers' default; hessexplore's group ``"*"``).  Model: a
small CNN (3 × [conv3×3 → BatchNorm (eval, randomised statistics) → ReLU → max-pool], linear head;
CIFAR-sized 3×32×32 input, 10 classes, cross-entropy) or, with ``--resnet``,
``hessexplore.models.ResNet18(width=16)``.

Quantities (each call starts cold: nothing recorded is reused between repeats, as a user calling
each library once would see it; the object a library needs is built inside the timing):

(a) one parameter-space H·v — plain autograd (forward, ``grad(create_graph=True)``, one more
    ``grad``) as the reference, PyHessian (its constructor records the graph), hessian-eigenthings
    ``HessianOperator.matvec``, curvlinops ``HessianLinearOperator @ v``, hessexplore
    ``s.block_operator("*", space="parameter") @ v``; plus warm products (graph already recorded):
    plain autograd vs hessexplore;
(b) Hutchinson trace, ``--probes`` (64) Rademacher probes for everyone: PyHessian
    ``hessian.trace(maxIter=64, tol=0)`` (tol 0: all 64 probes), hessian-eigenthings
    ``hutchinson(num_samples=64)``, curvlinops ``hutchinson_trace(H, 64)`` (one vmapped product of
    64 columns), hessexplore ``s.trace("*", probes=64)`` (value ± standard error);
(c) λ_max to relative tolerance ``--tol`` (1e-4): PyHessian ``eigenvalues(top_n=1, tol=1e-4)``
    (power iteration; stops when the Rayleigh quotient changes by < tol relatively — a weaker test
    than the others'), hessian-eigenthings ``power_iteration_one(tol=1e-4)`` (relative change *and*
    relative residual < tol), curvlinops ``HessianLinearOperator`` + scipy ``eigsh(k=1,
    which="LA", tol=1e-4)`` (ARPACK: Ritz residual ≤ tol·|θ|), hessexplore
    ``s.spectrum("*", method="lanczos", k=1, tol=1e-4, which="top")`` (Lanczos; residual bound
    ≤ tol·|θ|: an eigenvalue lies within it — the test eigsh and hessian-eigenthings apply) and
    the same with ``criterion="gap"`` (its error estimate min(r, r²/gap) ≤ tol·|θ| — the
    like-for-like of PyHessian's "the value has settled"); ratios are given against both.  The
    values, their errors and the H·v counts are printed so accuracy is visible (reference:
    hessexplore's Lanczos to a residual bound of 1e-10·|θ|);
(d) a spectral density by stochastic Lanczos quadrature with the same probes × steps
    (``--slq-probes`` × ``--slq-steps``): PyHessian ``density(iter=steps, n_v=probes)`` (full
    re-orthogonalisation, one probe at a time; PyHessian 0.1 calls ``torch.eig``, removed from
    torch 2, so the bench supplies an ``eigh``-based stand-in for that one call on the small
    tridiagonal matrix), hessian-eigenthings ``spectral_density`` (full re-orthogonalisation),
    curvlinops ``lanczos_approximate_spectrum`` (Papyan 2020: its own eigsh boundary estimate, then
    Lanczos *without* re-orthogonalisation), hessexplore ``s.spectrum("*", method="slq")`` (full
    re-orthogonalisation, all probes in each product).

Runs alternate the implementations (in a fresh seeded random order every round), repeat, and
report the median time and the ratio **peer / hessexplore** (> 1: hessexplore is faster).  One
thread by default.
Peers are optional (``pip install -c benchmarks/constraints.txt -e '.[bench]'``; backpack, which
curvlinops needs, pulls torchvision, whose PyPI wheel does not import beside the CPU torch:
``pip uninstall -y torchvision`` afterwards); a missing peer is skipped with one line.

Usage: python benchmarks/bench_peers.py [--resnet] [--batch 32] [--repeats 5] [--threads 1]
       [--device cpu|cuda] [--probes 64] [--tol 1e-4] [--slq-probes 4] [--slq-steps 48]
       [--only hv,trace,lmax,density]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import random
import statistics
import sys
import time
import warnings

import torch
from torch import nn

import hessexplore as hx
from hessexplore import models


# --------------------------------------------------------------------------------------------------
# problem
# --------------------------------------------------------------------------------------------------

class SmallCNN(nn.Module):
    """3 × (conv3×3 → BN → ReLU → max-pool 2), then a linear head: 3×32×32 → 10 (≈ 34 k parameters)."""

    def __init__(self, channels=(16, 32, 64), num_classes: int = 10):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * (32 // 2 ** len(channels)) ** 2, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def make(resnet: bool, batch: int, device, seed: int = 0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = models.ResNet18(num_classes=10, width=16) if resnet else SmallCNN()
    model = models.randomize_batchnorm(model, g).to(device).eval()
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    return model, nn.CrossEntropyLoss(), x, y


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def optional(module: str, pip_name: str):
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure means: skip this peer
        print(f"  [skip] {pip_name} not importable ({type(exc).__name__}: {str(exc)[:80]}); "
              f"pip install -c benchmarks/constraints.txt -e '.[bench]'")
        return None


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------

def bench(title: str, impls: dict, ref, repeats: int, device, show=None) -> dict:
    """Run every implementation once (results, warm-up), then ``repeats`` alternating rounds.

    ``ref``: the hessexplore row (or rows) the ratios are taken against."""
    refs = [ref] if isinstance(ref, str) else list(ref)
    print(f"\n== {title}")
    results = {}
    for name, f in impls.items():
        sync(device)
        results[name] = f()
    if show is not None:
        for name, r in results.items():
            print(f"    {name:58s} {show(r)}")
    times = {name: [] for name in impls}
    names = list(impls)
    shuffle = random.Random(0)
    for r in range(repeats):
        # a fresh order every round: no implementation always runs first, or always right after
        # the same other one (a predecessor's allocations and caches shift timings by ~20 %)
        order = names[:]
        shuffle.shuffle(order)
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            impls[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    heads = "   ".join(f"ratio to [{i + 1}]" for i in range(len(refs)))
    print(f"  median of {repeats} alternating rounds; ratio = time / hessexplore's time (> 1: hessexplore faster)")
    for i, r in enumerate(refs):
        print(f"    [{i + 1}] = {r}")
    print(f"    {'':58s} {'median':>10s}      {heads}")
    for name, t in med.items():
        ratios = "   ".join(f"{t / med[r]:12.2f}" for r in refs)
        print(f"    {name:58s} {t * 1e3:10.1f} ms   {ratios}")
    return {"results": results, "median": med}


# --------------------------------------------------------------------------------------------------
# peers, wired as their documentation says
# --------------------------------------------------------------------------------------------------

def flat_split(v: torch.Tensor, params):
    return [t.view_as(p) for t, p in zip(torch.split(v, [p.numel() for p in params]), params)]


def clear_grads(model):
    for p in model.parameters():
        p.grad = None


@contextlib.contextmanager
def torch_eig_shim():
    """PyHessian 0.1's density() ends with ``torch.eig(T, eigenvectors=True)`` (removed in torch 2):
    supply the symmetric equivalent for that call only (T is tridiagonal and symmetric)."""
    had = torch.__dict__.get("eig")        # torch 2 keeps a stub that raises

    def eig(T, eigenvectors=False):
        w, V = torch.linalg.eigh(T)
        return torch.stack([w, torch.zeros_like(w)], dim=1), V

    torch.eig = eig
    try:
        yield
    finally:
        if had is None:
            del torch.eig
        else:
            torch.eig = had


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resnet", action="store_true", help="hessexplore.models.ResNet18(width=16) instead of the CNN")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--probes", type=int, default=64, help="Hutchinson probes (b)")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative tolerance of λ_max (c)")
    ap.add_argument("--slq-probes", type=int, default=4)
    ap.add_argument("--slq-steps", type=int, default=48)
    ap.add_argument("--only", default="hv,trace,lmax,density")
    args = ap.parse_args()
    only = set(args.only.split(","))
    # PyHessian's constructor calls loss.backward(create_graph=True); the bench frees .grad after each use
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    model, lf, x, y = make(args.resnet, args.batch, device)
    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    t0 = time.perf_counter()
    s = hx.Session(model, lf, (x, y))
    t_session = time.perf_counter() - t0
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}; "
          f"{'ResNet18(width=16)' if args.resnet else 'SmallCNN'}, batch {args.batch}, float32, CE; "
          f"all {n:,} parameters (hessexplore group '*': {s.dim('*', 'parameter'):,}); "
          f"hx.Session built once in {t_session:.2f} s (capture + checks; not in the timings)")

    pyhessian = optional("pyhessian", "PyHessian==0.1")
    he = optional("hessian_eigenthings", "hessian-eigenthings==1.0.0a5")
    cl = optional("curvlinops", "curvlinops-for-pytorch==3.0.1")

    def cold():
        s._ops.clear()

    def pyh():
        clear_grads(model)
        return pyhessian.hessian(model, lf, data=(x, y), cuda=device.type == "cuda")

    def he_op():
        return he.HessianOperator(model, [(x, y)], he.supervised_loss(lf))

    def cl_op():
        return cl.HessianLinearOperator(model, lf, params, [(x, y)], check_deterministic=False)

    gen = torch.Generator(device=device).manual_seed(1)
    v = torch.randn(n, generator=gen, device=device)

    # ---------------------------------------------------------------------------------- (a) H·v
    if "hv" in only:
        def plain():
            g = torch.autograd.grad(lf(model(x), y), params, create_graph=True)
            return torch.cat([h.reshape(-1) for h in torch.autograd.grad(g, params, flat_split(v, params))])

        impls = {"hessexplore  block_operator('*') @ v (cold)":
                 lambda: (cold(), s.block_operator("*", space="parameter") @ v)[1],
                 "plain autograd (forward, grad, grad)": plain}
        if pyhessian:
            def pyh_hv():
                H = pyh()
                out = torch.cat([h.reshape(-1) for h in
                                 pyhessian.utils.hessian_vector_product(H.gradsH, H.params, flat_split(v, params))])
                clear_grads(model)
                return out
            impls["PyHessian  hessian(...) + hessian_vector_product"] = pyh_hv
        if he:
            impls["hessian-eigenthings  HessianOperator.matvec"] = lambda: he_op().matvec(v)
        if cl:
            impls["curvlinops  HessianLinearOperator @ v"] = lambda: cl_op() @ v
        ref_hv = plain()
        out = bench("(a) one H·v over all parameters, from the batch", impls,
                    "hessexplore  block_operator('*') @ v (cold)", args.repeats, device,
                    show=lambda r: f"rel. diff to plain autograd {float((r - ref_hv).norm() / ref_hv.norm()):.1e}")

        # warm: the graph is recorded; only the product is timed
        A = s.block_operator("*", space="parameter")
        g_rec = torch.autograd.grad(lf(model(x), y), params, create_graph=True)
        vs = flat_split(v, params)
        bench("(a') one H·v on an already recorded graph", {
            "hessexplore  A @ v (warm)": lambda: A @ v,
            "plain autograd  grad(g, params, v, retain_graph=True)":
                lambda: torch.autograd.grad(g_rec, params, vs, retain_graph=True),
        }, "hessexplore  A @ v (warm)", args.repeats * 3, device)
        del g_rec, A

    # ---------------------------------------------------------------------------------- (b) trace
    if "trace" in only:
        P = args.probes
        impls = {f"hessexplore  s.trace('*', probes={P})": lambda: (cold(), s.trace("*", probes=P))[1]}
        if pyhessian:
            def pyh_trace():
                H = pyh()
                got = H.trace(maxIter=P, tol=0.0)
                clear_grads(model)
                return got
            impls[f"PyHessian  hessian.trace(maxIter={P}, tol=0)"] = pyh_trace
        if he:
            impls[f"hessian-eigenthings  hutchinson(num_samples={P})"] = \
                lambda: he.hutchinson(he_op(), num_samples=P, seed=0)
        if cl:
            impls[f"curvlinops  hutchinson_trace(H, {P})"] = lambda: cl.hutchinson_trace(cl_op(), P)

        def show(r):
            if isinstance(r, list):                         # PyHessian: the per-probe samples
                t = torch.tensor(r, dtype=torch.float64)
                return f"{float(t.mean()):.5g} ± {float(t.std() / math.sqrt(len(r))):.2g}  ({len(r)} probes)"
            if hasattr(r, "estimate"):                      # hessian-eigenthings TraceResult
                return f"{r.estimate:.5g} ± {r.stderr:.2g}"
            if torch.is_tensor(r):                          # curvlinops: no error bar
                return f"{float(r):.5g}"
            return f"{r.value:.5g} ± {r.stderr:.2g}  ({r.probes} probes, {r.matvecs} products)"
        bench(f"(b) Hutchinson trace, {P} Rademacher probes", impls, f"hessexplore  s.trace('*', probes={P})",
              args.repeats, device, show=show)

    # ---------------------------------------------------------------------------------- (c) λ_max
    if "lmax" in only:
        tol = args.tol
        ref = s.spectrum("*", method="lanczos", k=1, tol=1e-10, which="top", max_iter=400)
        lam = float(ref.top[0])
        print(f"\n   reference λ_max = {lam:.8g} (hessexplore Lanczos to residual 1e-10·|θ|, "
              f"{ref.lanczos_iterations} steps, bound {float(ref.top_bounds[0]):.1e})")
        counts: dict = {}

        def hx_lmax(criterion):
            def run():
                cold()
                sp = s.spectrum("*", method="lanczos", k=1, tol=tol, which="top", criterion=criterion)
                counts[f"hx {criterion}"] = sp.matvecs
                return float(sp.top[0])
            return run

        hx_res = f"hessexplore  lanczos k=1 tol={tol:g} (residual bound)"
        hx_gap = f"hessexplore  lanczos k=1 tol={tol:g} criterion='gap'"
        impls = {hx_res: hx_lmax("residual"), hx_gap: hx_lmax("gap")}
        if pyhessian:
            pyh_mod = sys.modules["pyhessian.hessian"]       # (the package re-exports the class as .hessian)
            hvp = pyh_mod.hessian_vector_product

            def counted_hvp(*a, **k):                   # count PyHessian's products (a Python increment)
                counts["pyhessian"] = counts.get("pyhessian", 0) + 1
                return hvp(*a, **k)
            pyh_mod.hessian_vector_product = counted_hvp

            def pyh_lmax():
                counts["pyhessian"] = 0
                H = pyh()
                torch.manual_seed(0)
                ev, _ = H.eigenvalues(top_n=1, tol=tol, maxIter=1000)
                clear_grads(model)
                return ev[0]
            impls[f"PyHessian  eigenvalues(top_n=1, tol={tol:g}) power it."] = pyh_lmax
        if he:
            def he_lmax():
                lam_, _, _, it, _ = he.power_iteration_one(he_op(), tol=tol, max_iter=1000, seed=0)
                counts["he"] = it
                return lam_
            impls[f"hessian-eigenthings  power_iteration_one(tol={tol:g})"] = he_lmax
        if cl:
            from scipy.sparse.linalg import eigsh

            def cl_lmax():
                H = cl_op().to_scipy()
                k0 = [0]
                mv = H.matvec

                def counted(u):
                    k0[0] += 1
                    return mv(u)
                H.matvec = counted
                val = eigsh(H, k=1, which="LA", tol=tol, return_eigenvectors=False)
                counts["cl"] = k0[0]
                return float(val[0])
            impls[f"curvlinops  eigsh(k=1, which='LA', tol={tol:g})"] = cl_lmax
        bench(f"(c) λ_max to relative tolerance {tol:g}", impls, [hx_res, hx_gap], args.repeats, device,
              show=lambda r: f"{r:.8g}   rel. error {abs(r - lam) / abs(lam):.1e}")
        if pyhessian:
            pyh_mod.hessian_vector_product = hvp
        print(f"    H·v products: hessexplore {counts.get('hx residual')} (residual) / {counts.get('hx gap')} (gap), "
              f"PyHessian {counts.get('pyhessian')}, hessian-eigenthings {counts.get('he')}, "
              f"curvlinops/eigsh {counts.get('cl')}")

    # ---------------------------------------------------------------------------------- (d) density
    if "density" in only:
        P, m = args.slq_probes, args.slq_steps
        impls = {f"hessexplore  spectrum('*', 'slq', {P}×{m})":
                 lambda: (cold(), s.spectrum("*", method="slq", num_probes=P, num_iter=m))[1]}
        if pyhessian:
            def pyh_density():
                H = pyh()
                with torch_eig_shim():
                    got = H.density(iter=m, n_v=P)
                clear_grads(model)
                return got
            impls[f"PyHessian  density(iter={m}, n_v={P})"] = pyh_density
        if he:
            impls[f"hessian-eigenthings  spectral_density({P} runs × {m})"] = \
                lambda: he.spectral_density(he_op(), num_runs=P, lanczos_steps=m, num_grid_points=512, seed=0)
        if cl:
            impls[f"curvlinops  lanczos_approximate_spectrum(ncv={m}, {P} repeats)"] = \
                lambda: cl.lanczos_approximate_spectrum(cl_op(), ncv=m, num_repeats=P, num_points=512)

        def show(r):
            if isinstance(r, tuple) and isinstance(r[0], list):        # PyHessian (nodes, weights) lists
                nodes = torch.tensor(r[0], dtype=torch.float64)
                w = torch.tensor(r[1], dtype=torch.float64)
                return f"nodes in [{float(nodes.min()):.4g}, {float(nodes.max()):.4g}], mean {float((nodes * w).sum(1).mean()):.4g}"
            if hasattr(r, "raw_eigenvalues"):
                nodes = r.raw_eigenvalues.nan_to_num(0.0).double()
                return (f"nodes in [{float(nodes.min()):.4g}, {float(nodes.max()):.4g}], "
                        f"mean {float((nodes * r.raw_weights.double()).sum(1).mean()):.4g}")
            if isinstance(r, tuple):                                    # curvlinops (grid, density)
                grid, dens = r
                dx = float(grid[1] - grid[0])
                return f"grid [{float(grid[0]):.4g}, {float(grid[-1]):.4g}], mean {float((grid * dens).sum() * dx):.4g}"
            return (f"nodes in [{float(r.slq.nodes.min()):.4g}, {float(r.slq.nodes.max()):.4g}], mean "
                    f"{r.slq.mean:.4g} ± {r.slq.mean_stderr:.2g}")
        bench(f"(d) spectral density by SLQ, {P} probes × {m} Lanczos steps", impls,
              f"hessexplore  spectrum('*', 'slq', {P}×{m})", args.repeats, device, show=show)


if __name__ == "__main__":
    main()
