"""One-shot analysis of a model and its report: coupling map, GN-Gaps, Φ and layer spectra.

    from hessexplore import report
    a = report.analyze(session, nodes)          # exact, with an optional progress callback
    print(report.summary(a))                    # the tables ``hessexplore analyze`` prints
    report.write(a, "my-report")                # report.json + coupling.png, distance.png, spectra.png

What is computed (SCIENCE.md conventions throughout):

* the exact coupling map among ``nodes`` (activation space by default): R, C, stable rank D and the
  GN-Gap of every pair, and per-distance aggregates as ratios of sums;
* Φ over the disjoint parameter groups (the share of curvature a block-diagonal preconditioner
  discards), from the exact parameter-space coupling map;
* the local-Hessian spectrum of every parameter group (:meth:`Session.spectrum`, method "auto":
  dense up to 3000 parameters, Lanczos + SLQ above) with its statistics.

``report.json`` holds exactly the numbers of the library objects (NaN and ±inf written as null),
so a script can check them against a :class:`~hessexplore.session.Session` of its own.
Figures are drawn with matplotlib's object API (no pyplot, safe in scripts and threads).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from . import metrics
from .errors import ReportFolderError
from .fileio import atomic_write
from .results import CouplingMap
from .session import Session

__all__ = ["Analysis", "analyze", "default_nodes", "to_json", "summary", "figures", "write", "check_folder",
           "FORMAT", "REPORT_FILES"]

FORMAT = "hessexplore.report/1"
#: Φ needs the exact parameter-space map (Σ parameters Hessian-vector products); skipped above this
PHI_MAX_PARAMS = 20_000

Progress = Callable[[str, int, int], None]   # (stage, done, total)


@dataclass
class Analysis:
    """The results of :func:`analyze` (library objects, not yet serialised)."""

    name: str
    session: Session
    space: str
    nodes: list
    coupling: CouplingMap
    groups: list = field(default_factory=list)
    phi: Optional[float] = None
    spectra: dict = field(default_factory=dict)          # group -> Spectrum
    notes: list = field(default_factory=list)            # what was skipped and why
    timings: dict = field(default_factory=dict)          # stage -> seconds
    source: str = ""                                     # "built-in" or "module:factory"


# ------------------------------------------------------------------------------------------------
# computing
# ------------------------------------------------------------------------------------------------

def default_nodes(session: Session, limit: int = 12) -> list[str]:
    """Nodes worth mapping when none are given: the outputs of the modules that own parameters.

    For a plain ``nn.Sequential`` MLP these are the Linear layers' outputs.  At most ``limit``
    (evenly spaced, first and last kept) so the map stays readable and cheap.
    """
    names = []
    for g in session.groups:
        try:
            node = session.node(g)
        except Exception:  # noqa: BLE001 - a module called twice or never has no single output node
            continue
        if node.name not in names:
            names.append(g)
    if not names:
        names = [n for n in session.nodes if n != session.nodes[0]][-limit:]
    if len(names) > limit:
        idx = np.unique(np.round(np.linspace(0, len(names) - 1, limit)).astype(int))
        names = [names[i] for i in idx]
    return names


def _disjoint(session: Session, groups: Sequence[str]) -> bool:
    atoms = [p for g in groups for p in session._atoms(g, "parameter")]
    return len(atoms) == len(set(atoms))


#: Hutchinson probes per node of an estimated coupling map, per group of an estimated Φ
MAP_PROBES = 64
PHI_PROBES = 32


def _pairs_done(cm: CouplingMap) -> tuple[int, int]:
    """(pairs v ≤ w computed, pairs in all) of a filling coupling map."""
    k = len(cm.names)
    iu = torch.triu_indices(k, k, 0)
    return int(cm.filled[iu[0], iu[1]].sum()), k * (k + 1) // 2


def analyze(session: Session, nodes: Optional[Sequence[str]] = None, *, space: str = "activation",
            name: str = "model", spectra: bool = True, phi: bool = True,
            groups: Optional[Sequence[str]] = None, spectrum_method: str = "auto",
            progress: Optional[Progress] = None, source: str = "") -> Analysis:
    """Exact coupling map among ``nodes``, Φ and the layer spectra of ``groups`` (default all).

    ``progress(stage, done, total)`` is called as work completes: stage "coupling" and "phi"
    count the pairs v ≤ w of their maps (filled sweep by sweep), "coupling-estimate" and
    "phi-estimate" the probes per node of an estimate (each round refines every pair), "spectra"
    the groups.
    """
    s = session
    if nodes is None:
        nodes = default_nodes(s) if space == "activation" else s.groups
    nodes = list(dict.fromkeys(nodes))
    groups = list(groups) if groups is not None else list(s.groups)
    notes: list[str] = []
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    cmap = None
    for cmap in s.iter_coupling_map(nodes, space=space, probes=MAP_PROBES):
        if progress and cmap.method == "estimate":     # every round is a whole map: count its probes
            progress("coupling-estimate", cmap.probes, MAP_PROBES)
        elif progress:
            progress("coupling", *_pairs_done(cmap))
    timings["coupling"] = time.perf_counter() - t0

    phi_value = None
    if phi:
        total = sum(s.dim(g, "parameter") for g in groups)
        if len(groups) < 2:
            phi_value = 0.0 if groups else None
        elif not _disjoint(s, groups):
            notes.append("Φ skipped: the parameter groups overlap (Φ needs disjoint groups)")
        elif total > PHI_MAX_PARAMS:      # too big for the exact map: shared-probe estimate (issue 12)
            t0 = time.perf_counter()
            phi_value = s.phi(groups, method="estimate", probes=PHI_PROBES,
                              progress=(lambda done, n: progress("phi-estimate", done, n)) if progress else None)
            notes.append(f"Φ estimated: the groups hold {total:,} parameters, over {PHI_MAX_PARAMS:,} for the "
                         f"exact map; Φ = {phi_value:.4g} ± {phi_value.stderr:.2g} (standard error, "
                         f"{phi_value.probes} Hutchinson probes per group)")
            timings["phi"] = time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            pm = None
            for pm in s.iter_coupling_map(groups, space="parameter"):
                if progress:
                    progress("phi", *_pairs_done(pm))
            R2 = pm.R ** 2
            iu = torch.triu_indices(len(groups), len(groups), 1)
            phi_value = metrics.phi_from_norms(R2.diagonal().tolist(), R2[iu[0], iu[1]].tolist())
            timings["phi"] = time.perf_counter() - t0

    spec: dict = {}
    if spectra:
        t0 = time.perf_counter()
        for i, g in enumerate(groups, 1):
            spec[g] = s.spectrum(g, method=spectrum_method)
            if progress:
                progress("spectra", i, len(groups))
        timings["spectra"] = time.perf_counter() - t0

    return Analysis(name=name, session=s, space=space, nodes=nodes, coupling=cmap, groups=groups,
                    phi=phi_value, spectra=spec, notes=notes, timings=timings, source=source)


# ------------------------------------------------------------------------------------------------
# JSON
# ------------------------------------------------------------------------------------------------

def _clean(x):
    """JSON-ready: tensors and arrays to lists, NaN/±inf to None."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.to(torch.float64) if x.is_floating_point() else x
        return _clean(x.tolist())
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return str(x)


def to_json(a: Analysis) -> dict:
    """Every number of the analysis as plain JSON (see the module docstring)."""
    from . import __version__

    s, cm = a.session, a.coupling
    return _clean({
        "format": FORMAT,
        "hessexplore": __version__,
        "torch": torch.__version__,
        "name": a.name,
        "source": a.source,
        "model": type(s.model).__name__,
        "batch_size": s.batch_size,
        "num_samples": s.num_samples,
        "dtype": str(s.dtype).replace("torch.", ""),
        "device": str(s.device),
        "space": a.space,
        "nodes": list(cm.names),
        "dims": [s.dim(n, a.space) for n in cm.names],
        "coupling": {"R": cm.R, "C": cm.C, "D": cm.D, "gap": cm.gap, "norm_gn": cm.norm_gn,
                     "norm_tensor": cm.norm_tensor, "distance": cm.distance},
        "by_distance": cm.by_distance(),
        "global_gap": cm.global_gap(),
        "groups": list(a.groups),
        "group_sizes": [s.dim(g, "parameter") for g in a.groups],
        "phi": a.phi,
        "spectra": {g: sp.to_json(eigenvalues=True, density=True) for g, sp in a.spectra.items()},
        "notes": list(a.notes),
        "timings": a.timings,
    })


# ------------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------------

def _fmt(x) -> str:
    if x is None:
        return "-"
    x = float(x)
    return "nan" if not math.isfinite(x) else f"{x:.3g}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, first column left-aligned, the rest right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]
    return "\n".join([line, sep, *body])


def summary(a: Analysis) -> str:
    """The text report: pairs, per-distance aggregates, Φ and the spectrum statistics."""
    cm, n = a.coupling, len(a.coupling.names)
    out = []
    rows = [[f"{cm.names[i]} / {cm.names[j]}", str(int(cm.distance[i, j])), _fmt(cm.R[i, j]), _fmt(cm.C[i, j]),
             _fmt(cm.D[i, j]), _fmt(cm.gap[i, j])] for i in range(n) for j in range(i, n)]
    how = "exact" if cm.method == "exact" else f"estimated, {cm.probes} probes per node, D not estimated"
    out.append(f"Hessian blocks between {n} nodes ({a.space} space, {how})")
    out.append(table(["pair v / w", "d", "R", "C", "D", "GN-Gap"], rows))
    agg = cm.by_distance()
    if agg:
        out.append("")
        out.append("By distance (C and GN-Gap are ratios of sums over the pairs)")
        out.append(table(["distance", "pairs", "mean R", "C", "GN-Gap"],
                         [[str(r["distance"]), str(r["pairs"]), _fmt(r["mean_R"]), _fmt(r["C"]), _fmt(r["gap"])]
                          for r in agg]))
    out.append("")
    phi = _fmt(a.phi) if a.phi is not None else "skipped"
    out.append(f"global GN-Gap {_fmt(cm.global_gap())}    Φ over {len(a.groups)} parameter groups {phi}")
    if a.spectra:
        out.append("")
        out.append("Local Hessian spectra (one parameter group, the rest frozen)")
        rows = []
        for g, sp in a.spectra.items():
            st = sp.stats
            rows.append([g, str(sp.n), sp.method, _fmt(st.get("lambda_max")), _fmt(st.get("lambda_min")),
                         _fmt(st.get("trace")), _fmt(st.get("negative_mass")), _fmt(st.get("effective_rank"))])
        out.append(table(["group", "params", "method", "λ_max", "λ_min", "trace", "neg. mass", "eff. rank"], rows))
    for note in a.notes:
        out.append(f"note: {note}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------

def _heatmap(fig, ax, M: np.ndarray, names: list[str], title: str, cmap: str, label: str, log: bool = False):
    from matplotlib.colors import LogNorm

    M = np.array(M, dtype=np.float64)
    raw = M.copy()
    norm = None
    if log:
        pos = M[np.isfinite(M) & (M > 0)]
        if pos.size:
            floor = max(pos.min(), pos.max() * 1e-3)     # three decades; smaller values drawn at the floor
            M = np.where(np.isfinite(M), np.maximum(M, floor), np.nan)
            norm = LogNorm(vmin=floor, vmax=pos.max())
        else:
            log = False
    im = ax.imshow(np.ma.masked_invalid(M), cmap=cmap, norm=norm, interpolation="nearest")
    n = len(names)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=label, shrink=0.85)
    if n <= 10:
        for i in range(n):
            for j in range(n):
                if np.isfinite(M[i, j]):
                    r, g, b, _ = im.cmap(im.norm(M[i, j]))
                    text = "0" if log and raw[i, j] <= 1e-12 else f"{raw[i, j]:.2g}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7,
                            color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")


def figures(a: Analysis) -> dict:
    """{file name: matplotlib Figure}: coupling.png, distance.png, and spectra.png (if computed)."""
    from matplotlib.figure import Figure

    cm = a.coupling
    names = list(cm.names)
    figs = {}

    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    _heatmap(fig, ax1, cm.C.numpy(), names, "coupling C(v, w) = ‖H_vw‖ / √(‖H_vv‖ ‖H_ww‖)",
             "viridis", "C")
    gap = cm.gap.numpy()
    _heatmap(fig, ax2, gap, names, "GN-Gap = ‖H_tensor‖ / ‖H_GN‖  (0: pure Gauss–Newton)", "magma",
             "GN-Gap (log scale; below 10⁻³·max: black)", log=bool(np.nanmax(gap) > 0))
    fig.suptitle(f"{a.name}: Hessian blocks between nodes ({a.space} space, {a.session.batch_size} samples)")
    figs["coupling.png"] = fig

    agg = cm.by_distance()
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    if agg:
        d = [r["distance"] for r in agg]
        ax1.plot(d, [r["C"] for r in agg], "o-", label="C (ratio of sums)")
        ax1.set_xlabel("distance (hops in the DAG)")
        ax1.set_ylabel("coupling C")
        ax1.axhline(1.0, color="0.6", lw=0.8, ls=":")
        ax1.set_title("coupling by distance")
        ax1.set_xticks(d)
        R = [r["mean_R"] for r in agg]
        ax2.plot(d, R, "o-", color="C1")
        if all(r > 0 for r in R):
            ax2.set_yscale("log")
        ax2.set_xlabel("distance (hops in the DAG)")
        ax2.set_ylabel("mean resonance R")
        ax2.set_title("resonance by distance")
        ax2.set_xticks(d)
    else:
        ax1.text(0.5, 0.5, "one node: no distances", ha="center", transform=ax1.transAxes)
        ax2.set_axis_off()
    figs["distance.png"] = fig

    if a.spectra:
        from .plots import plot_spectrum

        k = len(a.spectra)
        cols = min(3, k)
        rows = math.ceil(k / cols)
        fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        for ax, (g, sp) in zip(axes, a.spectra.items()):
            plot_spectrum(sp, ax=ax)
            ax.locator_params(axis="x", nbins=5)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            ax.set_title(f"{g} ({sp.n} params, neg. mass {_fmt(sp.stats.get('negative_mass'))})", fontsize=9)
        for ax in axes[k:]:
            ax.set_axis_off()
        fig.suptitle(f"{a.name}: local Hessian spectra per parameter group")
        figs["spectra.png"] = fig
    return figs


REPORT_FILES = ("report.json", "summary.txt", "coupling.png", "distance.png", "spectra.png")


def _ours(folder: Path) -> bool:
    """Whether ``folder/report.json`` is a report hessexplore wrote (then its siblings are ours too)."""
    try:
        with open(folder / "report.json", encoding="utf-8") as f:
            head = json.load(f)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT


def check_folder(folder, *, force: bool = False) -> Path:
    """Check, before any work, that a report can be written to ``folder``; returns it as a Path.

    Refused with :class:`~hessexplore.errors.ReportFolderError`: a path that is a file, one that
    cannot be created or written (no permission, a file where a parent folder should be), and a
    folder holding report-named files (report.json, summary.txt, the PNGs) that hessexplore did not
    write — unless ``force``.  A folder holding an earlier hessexplore report is fine (replaced).
    """
    try:
        out = Path(folder)
        if out.exists() and not out.is_dir():
            raise ReportFolderError(f"the report folder {str(out)!r} is a file: choose a folder (--out DIR)")
        if out.is_dir():
            if not os.access(out, os.W_OK | os.X_OK):
                raise ReportFolderError(f"cannot write into the report folder {str(out)!r} (no permission): "
                                        "choose another with --out")
            clash = [f for f in REPORT_FILES if (out / f).exists()]
            if clash and not force and not _ours(out):
                raise ReportFolderError(
                    f"the report folder {str(out)!r} already holds {', '.join(clash)}, which hessexplore did not "
                    "write: choose another folder with --out, or pass --force (report.write(..., force=True)) "
                    "to overwrite them")
            return out
        parent = out.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ReportFolderError(f"cannot create the report folder {str(out)!r}: {str(parent)!r} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ReportFolderError(f"cannot create the report folder {str(out)!r}: no permission to write in "
                                    f"{str(parent)!r}; choose another with --out")
        return out
    except (OSError, ValueError) as exc:      # a name with a NUL byte, too long a path, ...
        if isinstance(exc, ReportFolderError):
            raise
        raise ReportFolderError(f"cannot use {str(folder)!r} as the report folder: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None


def write(a: Analysis, folder, *, dpi: int = 110, force: bool = False) -> list[Path]:
    """Write report.json, summary.txt and the PNG figures into ``folder``; returns the paths.

    The folder is checked first (:func:`check_folder`: files hessexplore did not write are kept
    unless ``force``); every file is written atomically (a kill mid-write leaves the previous one).
    """
    out = check_folder(folder, force=force)
    was_ours = out.is_dir() and _ours(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportFolderError(f"cannot create the report folder {str(out)!r}: {exc.strerror or exc}") from None
    contents: dict[str, object] = {
        "report.json": json.dumps(to_json(a), indent=1, allow_nan=False),
        "summary.txt": summary(a) + "\n",
    }
    for fname, fig in figures(a).items():
        contents[fname] = (lambda f, fig=fig: fig.savefig(f, format="png", dpi=dpi))
    paths = []
    for fname, data in contents.items():
        try:
            paths.append(atomic_write(out / fname, data))
        except OSError as exc:
            raise ReportFolderError(f"writing {str(out / fname)!r} failed: {exc.strerror or exc}; the previous "
                                    "file, if any, is unchanged") from None
    for fname in REPORT_FILES:              # an earlier report's figure this run did not draw
        if was_ours and fname not in contents and (out / fname).exists():
            (out / fname).unlink()
    return paths
