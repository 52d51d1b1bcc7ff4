"""Local-Hessian spectra, side by side in one process: hessexplore vs dense eigh vs curvlinops.

Problem: a tanh MLP 32 → W → W → W → 10 (default W = 56, batch 64, cross-entropy, float64); the
group is the middle Linear ``blocks.1.0`` (W² + W = 3192 parameters: just above auto's dense limit).

Implementations, each starting from cold operators (the recorded graph is rebuilt every repeat):

* dense: the engine's exact block ``s.block(g, g, space="parameter")`` (full and GN, forward-over-
  reverse column sweeps) then ``torch.linalg.eigvalsh`` — what a user without ``spectrum`` would do;
  and ``s.spectrum(g, method="exact")`` (full part only, double-backward chunks, eigvalsh);
* hessexplore ``lanczos`` (top/bottom 5 to residual tol 1e-6), ``slq`` (16 probes × 64 steps, all
  probes batched in one product per step; with and without full re-orthogonalisation), and ``auto``
  (= lanczos+slq here);
* curvlinops 3.0.1 ``lanczos_approximate_spectrum`` (Papyan 2020: boundaries by scipy eigsh, then
  ncv = 64 Lanczos steps without re-orthogonalisation per repeat, 16 repeats, one H·v at a time) on a
  ``HessianLinearOperator`` of the same parameters — the same quadrature budget as our SLQ.

Runs alternate the implementations, repeat, and report medians and ratios.  Accuracy is reported
beside: extremes and trace against the dense eigenvalues.
Usage: python benchmarks/bench_spectra.py [--repeats 3] [--width 56] [--batch 64] [--threads 1]
       [--device cpu|cuda] [--no-dense]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import hessexplore as hx
from hessexplore.models import MLP


def make(width, batch, device, dtype=torch.float64):
    torch.manual_seed(0)
    model = MLP(32, width, 3, 10, activation="tanh").to(device, dtype).eval()
    x = torch.randn(batch, 32, device=device, dtype=dtype)
    y = torch.randint(0, 10, (batch,), device=device)
    return model, nn.CrossEntropyLoss(), x, y


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width", type=int, default=56)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense paths (large widths)")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads (1: tiny float64 products are fastest single-threaded, and "
                         "timings on shared machines are far less noisy)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    model, lf, x, y = make(args.width, args.batch, device)
    s = hx.Session(model, lf, (x, y), check_loss=False)
    g = "blocks.1.0"
    n = s.dim(g, "parameter")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}; "
          f"MLP 32→{args.width}×3→10 tanh, batch {args.batch}, CE, float64; group {g!r}: {n:,} parameters")
    kw = dict(num_probes=args.probes, num_iter=args.steps)
    # auto picks lanczos+slq above 3000 parameters; below (small --width) force it so rows compare alike
    auto_method = "auto" if n > 3000 else "lanczos+slq"

    def cold():
        s._ops.clear()

    impls = {}
    if not args.no_dense:
        def dense_block():
            cold()
            return torch.linalg.eigvalsh(s.block(g, g, space="parameter").full)
        impls["dense: s.block (full+GN) + eigvalsh"] = dense_block
        impls["hx exact (full only)"] = lambda: (cold(), s.spectrum(g, method="exact", dense_max=10**9))[1]
    impls["hx lanczos (top/bottom 5)"] = lambda: (cold(), s.spectrum(g, method="lanczos"))[1]
    impls["hx slq"] = lambda: (cold(), s.spectrum(g, method="slq", **kw))[1]
    impls["hx slq, no re-orthogonalisation"] = lambda: (cold(), s.spectrum(g, method="slq", slq_reorth=False,
                                                                            **kw))[1]
    impls["hx auto (lanczos+slq)"] = lambda: (cold(), s.spectrum(g, method=auto_method, **kw))[1]

    try:
        from curvlinops import HessianLinearOperator
        from curvlinops.papyan2020traces.spectrum import lanczos_approximate_spectrum

        params = [model.blocks[1][0].weight, model.blocks[1][0].bias]

        def curv():
            H = HessianLinearOperator(model, lf, params, [(x, y)], check_deterministic=False)
            return lanczos_approximate_spectrum(H, ncv=args.steps, num_repeats=args.probes)
        impls["curvlinops lanczos_approximate_spectrum"] = curv
    except ImportError:
        print("(curvlinops not installed: pip install -c benchmarks/constraints.txt '.[bench]')")

    # accuracy, once
    results = {}
    for name, f in impls.items():
        results[name] = f()
    auto = results["hx auto (lanczos+slq)"]
    print(f"auto: {auto.note}")
    if not args.no_dense:
        ev = results["dense: s.block (full+GN) + eigvalsh"]
        ex = results["hx exact (full only)"]
        scale = float(ev.abs().max())
        err = float((ex.eigenvalues - ev).abs().max()) / scale
        print(f"exact vs dense block eigenvalues: max |Δλ|/max|λ| = {err:.1e}")
        lz = results["hx lanczos (top/bottom 5)"]
        print(f"lanczos top-5 err {float((lz.top - ev.flip(0)[:5]).abs().max()) / scale:.1e}, bottom-5 err "
              f"{float((lz.bottom - ev[:5]).abs().max()) / scale:.1e} (relative to max|λ| = {scale:.4g}), "
              f"{lz.lanczos_iterations} steps")
        tr = float(ev.sum())
        print(f"trace: exact {tr:.5g}; hx SLQ {auto.stats['trace']:.5g} ± {auto.errors['trace']:.2g}; "
              f"negative mass exact {ex.stats['negative_mass']:.4f}, SLQ {auto.stats['negative_mass']:.4f}")
        if "curvlinops lanczos_approximate_spectrum" in results:
            grid, dens = results["curvlinops lanczos_approximate_spectrum"]
            dx = float(grid[1] - grid[0])
            mean_c = float((grid * dens).sum() * dx / (dens.sum() * dx))
            print(f"mean eigenvalue: exact {tr / n:.5g}; hx SLQ {auto.slq.mean:.5g} ± {auto.slq.mean_stderr:.2g}; "
                  f"curvlinops density {mean_c:.5g} (grid [{float(grid[0]):.4g}, {float(grid[-1]):.4g}])")

    times = {name: [] for name in impls}
    for _ in range(args.repeats):
        for name, f in impls.items():
            sync(device)
            t = time.perf_counter()
            f()
            sync(device)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["hx auto (lanczos+slq)"]
    print(f"median of {args.repeats} repeats (alternating):")
    for name, t in med.items():
        print(f"    {name:42s} {t:9.3f} s   ratio to hx auto {t / ref:7.2f}")
    if "curvlinops lanczos_approximate_spectrum" in med:
        c = med["curvlinops lanczos_approximate_spectrum"]
        print(f"    curvlinops / hx slq (same {args.probes} × {args.steps} budget): {c / med['hx slq']:.2f}×;  "
              f"curvlinops / hx slq without re-orthogonalisation (as curvlinops): "
              f"{c / med['hx slq, no re-orthogonalisation']:.2f}×")
    if not args.no_dense:
        d = med["dense: s.block (full+GN) + eigvalsh"]
        print(f"    dense block + eigh / hx auto: {d / ref:.2f}×;  dense block + eigh / hx exact: "
              f"{d / med['hx exact (full only)']:.2f}×")


if __name__ == "__main__":
    main()
