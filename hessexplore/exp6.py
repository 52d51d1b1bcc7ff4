"""The paper's Exp 6 at CPU scale: curvature coupling across the stages of ResNet-18.

P1 (arXiv 2604.11639) validates its diagnostics on ResNet-18.  :func:`run` rebuilds that
experiment small enough for two CPU cores: :class:`~hessexplore.models.ResNet18` (a faithful
torchvision replica with the CIFAR stem, width-reduced by default), with and without its skip
connections, with ReLU and with SiLU; each network is trained briefly on synthetic CIFAR-shaped
images (:func:`hessexplore.data.images`), then put in eval mode and its activation-space Hessian
blocks between the stage outputs (stem ``relu``, ``layer1`` … ``layer4``) are estimated with
shared Hutchinson probes (:mod:`hessexplore.maps`): resonance R, coupling C and GN-Gap with
standard errors, and the stable rank D of consecutive stages from streaming Krylov estimates.

What it shows (and what the notebook and ``hessexplore exp6`` check):

* between consecutive stages, the residual ReLU network keeps C near 1 (≥ 0.85 at every stage,
  at initialisation and after training) while the plain one decays with depth; with SiLU the
  residual C decays too but stays far above the plain one in the deep stages (≈ 0.4 against
  ≈ 0.14 between layer3 and layer4 at initialisation in this width-4 replica, where the tensor
  part is large);
* C from the stem to deeper stages falls in both (the distance grows: stages 2–4 start with a
  1×1-conv + BN shortcut, not an identity), faster without shortcuts;
* ReLU networks (piecewise linear, eval-mode BN, average pool, linear head) have an
  activation-space tensor part ≡ 0, so GN-Gap ≈ 0; SiLU's GN-Gaps are of order 1 and more.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from . import data, models
from .session import Session

STAGES = models.RESNET_STAGES


@dataclass
class Measure:
    """Stage-to-stage estimates of one network at one point of training.

    ``R``, ``C``, ``gap`` (and ``*_se``): (5, 5) lists over :data:`STAGES` (rows and columns);
    ``D``/``D_se``: stable rank of each consecutive pair (stage i, stage i+1), 4 values;
    ``loss``: the loss on the analysis batch.
    """

    loss: float
    R: list[list[float]]
    R_se: list[list[float]]
    C: list[list[float]]
    C_se: list[list[float]]
    gap: list[list[float]]
    gap_se: list[list[float]]
    D: list[float]
    D_se: list[float]
    probes: int

    def c_from_stem(self) -> list[tuple[float, float]]:
        """C(stem, stage) for stage = layer1 … layer4, as (value, stderr)."""
        return [(self.C[0][j], self.C_se[0][j]) for j in range(1, len(STAGES))]

    def c_adjacent(self) -> list[tuple[float, float]]:
        """C(stage i, stage i+1) for the 4 consecutive pairs, as (value, stderr)."""
        return [(self.C[i][i + 1], self.C_se[i][i + 1]) for i in range(len(STAGES) - 1)]

    def max_gap(self) -> float:
        """Largest GN-Gap over all stage pairs (NaN-free entries)."""
        vals = [g for row in self.gap for g in row if math.isfinite(g)]
        return max(vals) if vals else float("nan")


@dataclass
class Exp6Run:
    """One network: its configuration, its estimates at initialisation and after a short training run."""

    activation: str
    shortcut: bool
    init: Measure
    trained: Optional[Measure]
    losses: list[float]
    seconds: float

    @property
    def name(self) -> str:
        return f"{'residual' if self.shortcut else 'plain'}-{self.activation}"


@dataclass
class Exp6Result:
    """All runs of :func:`run` and the settings they shared."""

    runs: list[Exp6Run]
    settings: dict = field(default_factory=dict)

    def get(self, activation: str, shortcut: bool) -> Exp6Run:
        for r in self.runs:
            if r.activation == activation and r.shortcut == shortcut:
                return r
        raise KeyError((activation, shortcut))

    def table(self) -> str:
        """Plain text: C from the stem to each stage and C between consecutive stages (± se), the largest
        GN-Gap, D of adjacent stages, the loss."""
        lines = [f"{'network':<15} {'when':<8} {'C(stem, layer1..4) ± se':<54} {'C(stage, next) ± se':<54} "
                 f"{'max GN-Gap':>10}  {'D(adjacent)':<20} loss"]
        for r in self.runs:
            for when, m in (("init", r.init), ("trained", r.trained)):
                if m is None:
                    continue
                cs = "  ".join(f"{c:.3f}±{s:.3f}" for c, s in m.c_from_stem())
                ca = "  ".join(f"{c:.3f}±{s:.3f}" for c, s in m.c_adjacent())
                ds = " ".join(f"{d:.1f}" for d in m.D)
                lines.append(f"{r.name:<15} {when:<8} {cs:<54} {ca:<54} {m.max_gap():>10.3g}  {ds:<20} "
                             f"{m.loss:.3f}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        def num(x):
            if isinstance(x, list):
                return [num(v) for v in x]
            if isinstance(x, dict):
                return {k: num(v) for k, v in x.items()}
            return x if not isinstance(x, float) or math.isfinite(x) else None
        runs = [{"name": r.name, "activation": r.activation, "shortcut": r.shortcut, "losses": num(r.losses),
                 "seconds": r.seconds, "init": num(dict(r.init.__dict__)),
                 "trained": num(dict(r.trained.__dict__)) if r.trained else None} for r in self.runs]
        return {"settings": self.settings, "stages": list(STAGES), "runs": runs}


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, lr: float,
           seed: int) -> list[float]:
    """Plain SGD with momentum in train mode (BatchNorm learns its running statistics), then eval()."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, probes: int = 32, d_probes: int = 8,
            seed: int = 0, should_stop: Optional[Callable[[], bool]] = None) -> Measure:
    """Estimated R, C, GN-Gap among :data:`STAGES` (one shared-probe map) and D of adjacent stages."""
    s = Session(model.eval(), nn.CrossEntropyLoss(), (x, y))
    with torch.no_grad():
        loss = float(nn.functional.cross_entropy(model(x), y))
    cm = s.coupling_map(list(STAGES), method="estimate", probes=probes, seed=seed, batch_size=min(16, probes),
                        should_stop=should_stop)
    D, D_se = [], []
    for a, b in zip(STAGES, STAGES[1:]):
        snap = None
        for snap in s.estimate(a, b, probes=d_probes, batch_size=1, seed=seed, should_stop=should_stop):
            pass
        D.append(snap.stable_rank.value)
        D_se.append(snap.stable_rank.stderr)
    se = cm.stderr
    return Measure(loss, cm.R.tolist(), se["R"].tolist(), cm.C.tolist(), se["C"].tolist(), cm.gap.tolist(),
                   se["gap"].tolist(), D, D_se, probes)


def run_one(activation: str, shortcut: bool, *, width: int = 4, size: int = 16, classes: int = 10,
            train_steps: int = 30, train_batch: int = 32, lr: float = 0.02, batch: int = 16,
            probes: int = 32, d_probes: int = 8, seed: int = 0,
            should_stop: Optional[Callable[[], bool]] = None) -> Exp6Run:
    """One width-reduced ResNet-18: measured at torchvision's initialisation, trained briefly, measured again."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = models.ResNet18(num_classes=classes, width=width, activation=activation, shortcut=shortcut).eval()
    x, y = data.images(n=512 + batch, channels=3, size=size, classes=classes, seed=seed)
    xe, ye = x[512:], y[512:]
    kw = dict(probes=probes, d_probes=d_probes, seed=seed, should_stop=should_stop)
    init = measure(model, xe, ye, **kw)
    losses = _train(model, x[:512], y[:512], train_steps, train_batch, lr, seed) if train_steps > 0 else []
    trained = measure(model, xe, ye, **kw) if train_steps > 0 else None
    return Exp6Run(activation, shortcut, init, trained, losses, time.perf_counter() - t0)


def run(activations=("relu", "silu"), shortcuts=(True, False), *, progress: Optional[Callable[[str], None]] = None,
        **kw) -> Exp6Result:
    """Run :func:`run_one` for every (activation, shortcut); keywords as :func:`run_one`."""
    runs = []
    for act in activations:
        for sc in shortcuts:
            r = run_one(act, sc, **kw)
            runs.append(r)
            if progress is not None:
                progress(f"{r.name}: {r.seconds:.1f} s")
    settings = {"activations": list(activations), "shortcuts": list(shortcuts), **kw}
    settings.pop("should_stop", None)
    return Exp6Result(runs, settings)


# ------------------------------------------------------------------------------------------------
# the claims, checked with error bars
# ------------------------------------------------------------------------------------------------

def check(result: Exp6Result, relu_gap_max: float = 1e-4, silu_gap_min: float = 0.1, near_one: float = 0.8
          ) -> list[tuple[str, bool, str]]:
    """The claims of Exp 6 on ``result``: a list of (claim, holds, numbers).

    * ReLU nets: every activation-space GN-Gap ≤ ``relu_gap_max`` (H^T ≡ 0; float32 rounding),
      at initialisation and after training;  SiLU nets: some GN-Gap ≥ ``silu_gap_min``;
    * at initialisation C(stem, ·) decays with depth in plain nets (layer1 above layer4 by more
      than 4 standard errors), and the residual net keeps it higher: residual C(stem, layer4)
      above plain by more than 4 standard errors;
    * C between consecutive stages: residual ReLU stays near 1 — every pair at least
      ``near_one`` by 4 standard errors, at initialisation and after training; plain nets decay
      (first pair above the last by more than 4 standard errors, at initialisation); and at
      initialisation the residual net's deepest pair (layer3, layer4) is above the plain one's by
      more than 4 standard errors;
    * every training run lowered its loss.
    """
    out = []
    for r in result.runs:
        for when, m in (("init", r.init), ("trained", r.trained)):
            if m is None:
                continue
            if r.activation == "relu":
                out.append((f"{r.name} ({when}): GN-Gap ≈ 0 (≤ {relu_gap_max:g})", m.max_gap() <= relu_gap_max,
                            f"max gap {m.max_gap():.3g}"))
            else:
                out.append((f"{r.name} ({when}): GN-Gap ≥ {silu_gap_min:g}", m.max_gap() >= silu_gap_min,
                            f"max gap {m.max_gap():.3g}"))
        if r.losses:
            out.append((f"{r.name}: training lowered the loss", r.losses[-1] < r.losses[0],
                        f"{r.losses[0]:.3f} → {r.losses[-1]:.3f}"))
        (c1, s1), *_, (c4, s4) = r.init.c_from_stem()
        if not r.shortcut:
            out.append((f"{r.name} (init): C decays with depth", c1 - c4 > 4 * math.hypot(s1, s4),
                        f"C(stem, layer1) = {c1:.3f}±{s1:.3f}, C(stem, layer4) = {c4:.3f}±{s4:.3f}"))
            (a1, e1), *_, (a4, e4) = r.init.c_adjacent()
            out.append((f"{r.name} (init): C between consecutive stages decays with depth",
                        a1 - a4 > 4 * math.hypot(e1, e4), _adjacent(r.init)))
        elif r.activation == "relu":
            for when, m in (("init", r.init), ("trained", r.trained)):
                if m is None:
                    continue
                out.append((f"{r.name} ({when}): C between consecutive stages stays near 1 (≥ {near_one:g})",
                            all(c - 4 * e >= near_one for c, e in m.c_adjacent()), _adjacent(m)))
    for act in dict.fromkeys(r.activation for r in result.runs):
        try:
            res, plain = result.get(act, True).init, result.get(act, False).init
        except KeyError:
            continue
        (cr, sr), (cp, sp) = res.c_from_stem()[-1], plain.c_from_stem()[-1]
        out.append((f"{act} (init): residual keeps C(stem, layer4) above plain", cr - cp > 4 * math.hypot(sr, sp),
                    f"{cr:.3f}±{sr:.3f} vs {cp:.3f}±{sp:.3f}"))
        (ar, er), (ap, ep) = res.c_adjacent()[-1], plain.c_adjacent()[-1]
        out.append((f"{act} (init): residual C(layer3, layer4) above plain", ar - ap > 4 * math.hypot(er, ep),
                    f"residual {_adjacent(res)}; plain {_adjacent(plain)}"))
    return out


def _adjacent(m: Measure) -> str:
    return "C(stage, next) = " + ", ".join(f"{c:.3f}±{e:.3f}" for c, e in m.c_adjacent())


def add_subparser(sub) -> None:
    """Register ``hessexplore exp6`` on an argparse subparsers object."""
    e = sub.add_parser("exp6", help="the paper's Exp 6 at CPU scale: ResNet-18 stages, residual vs plain, "
                       "ReLU vs SiLU", description="Train width-reduced ResNet-18 replicas (torchvision layout, "
                       "CIFAR stem) with and without shortcuts, ReLU and SiLU, briefly on synthetic images; "
                       "estimate R, C, GN-Gap (shared Hutchinson probes) and D between the stage outputs with "
                       "error bars; check the claims (C between consecutive stages: residual ReLU near 1, plain decays; "
                       "ReLU gaps ≈ 0, SiLU's not).")
    e.add_argument("--width", type=int, default=4, help="base width (64 = the real ResNet-18; default 4)")
    e.add_argument("--size", type=int, default=16, help="image side (default 16; CIFAR is 32)")
    e.add_argument("--steps", type=int, default=30, help="training steps (default 30)")
    e.add_argument("--batch", type=int, default=16, help="analysis batch size (default 16)")
    e.add_argument("--probes", type=int, default=32, help="Hutchinson probes per stage (default 32)")
    e.add_argument("--seed", type=int, default=0, help="seed of models, data and probes (default 0)")
    e.add_argument("--json", default=None, metavar="FILE", help="also write every number to FILE")
    e.add_argument("--no-check", action="store_true", help="do not check the claims (exit 0 regardless)")
    e.set_defaults(func=cmd)


def cmd(args) -> int:
    """``hessexplore exp6``: run, print the table and the claims; exit 1 if a claim fails."""
    import json
    import os
    import sys
    import tempfile

    print(f"Exp 6: ResNet-18 replica, width {args.width} (64 = full), {args.size}×{args.size} images, "
          f"{args.steps} training steps, {args.probes} probes per stage", flush=True)
    res = run(width=args.width, size=args.size, train_steps=args.steps, batch=args.batch, probes=args.probes,
              seed=args.seed, progress=lambda msg: print("  " + msg, flush=True))
    print(res.table())
    if args.json:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.json)) or ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(res.to_json(), f, indent=1)
        os.replace(tmp, args.json)     # atomic: never a half-written file
    if args.no_check:
        return 0
    failed = 0
    for claim, ok, detail in check(res):
        print(f"  [{'ok' if ok else 'FAIL'}] {claim}: {detail}")
        failed += not ok
    if failed:
        print(f"hessexplore exp6: {failed} claim(s) did not hold", file=sys.stderr)
    return 1 if failed else 0
