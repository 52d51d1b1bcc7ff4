"""The ``hessexplore`` command line.

    hessexplore analyze [--model residual] [--space activation] [--dtype float64] [--out DIR]

``analyze`` computes the exact coupling map among a model's block outputs,
the GN-Gaps and Φ over its parameter groups, prints a table, and (with
``--out``) writes the results as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from .demos import DEMOS, demo
from .errors import HessExploreError


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.3g}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join([line, sep, *body])


def _progress(done: int, total: int, start: float, stream=sys.stderr) -> None:
    width = 28
    fill = int(width * done / max(total, 1))
    stream.write(f"\r  [{'#' * fill}{'.' * (width - fill)}] {done}/{total} sweeps  {time.perf_counter() - start:5.1f}s")
    if done == total:
        stream.write("\n")
    stream.flush()


def cmd_analyze(args) -> int:
    from .session import Session

    model, loss_fn, batch, nodes = demo(args.model, seed=args.seed)
    dtype = getattr(torch, args.dtype)
    s = Session(model, loss_fn, batch, dtype=dtype)
    names = nodes if args.space == "activation" else s.groups
    print(f"{args.model}: {type(model).__name__}, batch {s.batch_size}, {len(s.nodes)} nodes, "
          f"{len(s.groups)} parameter groups, {args.space} space, {s.dtype}, {s.device}")
    start = time.perf_counter()
    cmap = None
    for i, cmap in enumerate(s.iter_coupling_map(names, space=args.space), 1):
        _progress(i, len(names), start)
    n = len(names)
    rows = [[names[i], names[j], str(int(cmap.distance[i, j])), _fmt(float(cmap.R[i, j])),
             _fmt(float(cmap.C[i, j])), _fmt(float(cmap.D[i, j])), _fmt(float(cmap.gap[i, j]))]
            for i in range(n) for j in range(i, n)]
    print(_table(["v", "w", "d", "R", "C", "D", "GN-Gap"], rows))
    agg = cmap.by_distance()
    print()
    print(_table(["distance", "pairs", "mean R", "C (ratio of sums)", "GN-Gap (ratio of sums)"],
                 [[str(a["distance"]), str(a["pairs"]), _fmt(a["mean_R"]), _fmt(a["C"]), _fmt(a["gap"])] for a in agg]))
    phi = s.phi()
    print(f"\nglobal GN-Gap {_fmt(cmap.global_gap())}   Φ over {len(s.groups)} parameter groups {_fmt(phi)}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report = {"model": args.model, "space": args.space, "dtype": str(s.dtype), "names": names,
                  "R": cmap.R.tolist(), "C": cmap.C.tolist(), "D": cmap.D.tolist(), "gap": cmap.gap.tolist(),
                  "distance": cmap.distance.tolist(), "by_distance": agg, "global_gap": cmap.global_gap(),
                  "phi": phi}
        (out / "report.json").write_text(json.dumps(report, indent=1, default=lambda x: None))
        print(f"wrote {out / 'report.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hessexplore", description="See the curvature of a neural network.")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="coupling map, GN-Gaps and Φ of a built-in model")
    a.add_argument("--model", default="residual", choices=sorted(DEMOS), help="built-in demo model")
    a.add_argument("--space", default="activation", choices=["activation", "parameter"])
    a.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default=None, help="folder to write report.json into")
    a.set_defaults(func=cmd_analyze)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HessExploreError as exc:
        print(f"hessexplore: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
