"""Matplotlib figures of spectra and tracker runs (reads results and records only; no torch math).

Every function builds a :class:`matplotlib.figure.Figure` without pyplot (so it is safe under the Agg
backend, in threads and in scripts; Jupyter displays a returned Figure) and returns it.  Pass ``ax``
to draw into an existing axes instead; the figure returned is then ``ax.figure``.

* :func:`plot_spectrum` — one :class:`~hessexplore.spectra.Spectrum`: histogram (exact) or SLQ density,
  extremes and the zero tolerance marked.
* :func:`plot_statistic` — a statistic vs step, one line per layer, losses on a twin axis.
* :func:`plot_spectra` — a layer's spectrum at every checkpoint, coloured by step.
* :func:`plot_gap_scatter` — a statistic against the generalisation gap across runs, with Spearman's
  ρ and the partial rank correlation on the training loss.
* :func:`plot_coupling` — the coupling map (C, R or GN-Gap) of one checkpoint as a heatmap.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .tracker import Run, gap_correlation

__all__ = ["plot_spectrum", "plot_statistic", "plot_spectra", "plot_gap_scatter", "plot_coupling"]

_LABELS = {"lambda_max": "λ_max", "lambda_min": "λ_min", "trace": "trace", "frobenius": "‖H‖_F",
           "negative_mass": "negative mass", "negative_fraction": "negative fraction",
           "abs_min_over_max": "|λ_min| / λ_max", "condition_number": "condition number (positive part)",
           "spectral_entropy": "spectral entropy", "effective_rank": "effective rank",
           "stable_rank": "stable rank", "numerical_rank": "numerical rank", "trace_share": "trace share",
           "gap_loss": "generalisation gap (test − train loss)",
           "gap_acc": "generalisation gap (train − test accuracy)",
           "train_loss": "train loss", "eval_loss": "train loss (eval batch)", "test_loss": "test loss"}


def _label(key: str) -> str:
    return _LABELS.get(key, key)


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _get(obj, key, default=None):
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


def _arr(x) -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray([np.nan if v is None else v for v in x] if isinstance(x, list) else x, dtype=np.float64)


def _gaussian(eig: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    z = (grid[:, None] - eig[None, :]) / sigma
    return np.exp(-0.5 * z * z).sum(1) / (len(eig) * sigma * math.sqrt(2 * math.pi))


# --------------------------------------------------------------------------------------------------

def plot_spectrum(spectrum, *, bins: int = 60, logy: bool = True, ax=None, figsize=(6, 3.6)) -> Figure:
    """Histogram of exact eigenvalues, or the SLQ density (with its σ), of a Spectrum (or its to_json()).

    λ_max / λ_min (Lanczos or exact) are dashed red lines, ±τ (the zero tolerance) a grey band.
    """
    fig, ax = _axes(ax, figsize)
    eig = _arr(_get(spectrum, "eigenvalues"))
    stats = _get(spectrum, "stats", {})
    if eig is not None and len(eig):
        ax.hist(eig, bins=bins, density=True, color="C0", alpha=0.75, label=f"eigenvalues (n={len(eig)})")
    else:
        grid, dens = _arr(_get(spectrum, "grid")), _arr(_get(spectrum, "density"))
        if grid is not None:
            ax.plot(grid, dens, color="C0", label=f"SLQ density (σ = {_get(spectrum, 'sigma'):.2g})")
    for key in ("lambda_max", "lambda_min"):
        v = stats.get(key)
        if v is not None and math.isfinite(v):
            ax.axvline(v, color="C3", ls="--", lw=1)
    tol = stats.get("tol")
    if tol is not None and math.isfinite(tol) and tol > 0:
        ax.axvspan(-tol, tol, color="0.6", alpha=0.4, lw=0)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    nm = stats.get("negative_mass")
    nm_s = f", negative mass {nm:.3g}" if nm is not None and math.isfinite(nm) else ""
    ax.set_title(f"{_get(spectrum, 'group', '')} [{_get(spectrum, 'part', 'full')}] — "
                 f"{_get(spectrum, 'method', '')}{nm_s}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_statistic(run: Union[Run, str], stat: str, groups: Optional[Sequence[str]] = None,
                   part: str = "full", *, losses: Sequence[str] = ("train_loss", "test_loss"),
                   logy: bool = False, loss_logy: bool = True, ax=None, figsize=(7, 4)) -> Figure:
    """``stat`` vs step, one line per group (markers at checkpoints); the losses dashed on a twin axis.

    ``stat``: any raw or normalised statistic (``"lambda_max"``, ``"negative_mass"``,
    ``"lambda_max/trace"``, ``"trace_share"`` …).  Returns the figure; ``fig.axes`` = [main, twin].
    """
    run = run if isinstance(run, Run) else Run.load(run)
    fig, ax = _axes(ax, figsize)
    groups = list(groups) if groups is not None else list(run.groups)
    for i, g in enumerate(groups):
        steps, vals = run.series(stat, g, part)
        ax.plot(steps, vals, marker="o", ms=3, color=f"C{i % 10}", label=g)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{_label(stat)} [{part}]")
    if logy:
        ax.set_yscale("log")
    twin = ax.twinx()
    for j, key in enumerate(losses):
        steps, vals = run.series(key)
        if np.isfinite(vals).any():
            twin.plot(steps, vals, ls="--", color=("k", "0.5", "C7", "C8")[j % 4], label=_label(key))
    twin.set_ylabel("loss")
    if loss_logy:
        vals = [v for line in twin.get_lines() for v in line.get_ydata() if np.isfinite(v)]
        if vals and min(vals) > 0:
            twin.set_yscale("log")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="best")
    ax.set_title(f"{run.name}: {_label(stat)} per layer", fontsize=10)
    return fig


def plot_spectra(run: Union[Run, str], group: str, part: str = "full", *, steps: Optional[Sequence[int]] = None,
                 sigma: Optional[float] = None, logy: bool = True, grid_size: int = 400, cmap: str = "viridis",
                 ax=None, figsize=(7, 4)) -> Figure:
    """The spectrum of ``group`` at every checkpoint (or ``steps``), one line each, coloured by step.

    Exact eigenvalues are broadened on a common grid by a Gaussian of std ``sigma`` (default 1 % of
    the range over all checkpoints); SLQ records are drawn from their stored density.
    """
    run = run if isinstance(run, Run) else Run.load(run)
    fig, ax = _axes(ax, figsize)
    recs = [r for r in run.records if steps is None or r["step"] in set(steps)]
    lays = [(r["step"], r.get("layers", {}).get(group, {}).get(part)) for r in recs]
    lays = [(s, lay) for s, lay in lays if lay is not None]
    if not lays:
        raise ValueError(f"no spectra of group {group!r} part {part!r} in run {run.name!r}")
    eigs = [_arr(lay.get("eigenvalues")) for _, lay in lays]
    allv = np.concatenate([e for e in eigs if e is not None] +
                          [_arr(lay["grid"]) for _, lay in lays if lay.get("grid") is not None] or [np.zeros(1)])
    lo, hi = float(np.nanmin(allv)), float(np.nanmax(allv))
    width = hi - lo if hi > lo else 1.0
    sig = 0.01 * width if sigma is None else float(sigma)
    grid = np.linspace(lo - 4 * sig, hi + 4 * sig, grid_size)
    s_all = [s for s, _ in lays]
    norm = Normalize(vmin=min(s_all), vmax=max(s_all) if max(s_all) > min(s_all) else min(s_all) + 1)
    cm = colormaps[cmap]
    for (s, lay), e in zip(lays, eigs):
        if e is not None:
            x, y = grid, _gaussian(e, grid, sig)
        else:
            x, y = _arr(lay["grid"]), _arr(lay["density"])
        ax.plot(x, y, color=cm(norm(s)), lw=1.2)
    if logy:
        ax.set_yscale("log")
        top = max(float(np.nanmax(line.get_ydata())) for line in ax.get_lines())
        ax.set_ylim(1e-4 * top, 2 * top)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cm), ax=ax, label="step")
    ax.set_title(f"{run.name}: spectrum of {group} [{part}] over training (σ = {sig:.2g})", fontsize=10)
    return fig


def plot_gap_scatter(runs: Sequence[Union[Run, str]], stat: str, group: Optional[str] = None,
                     part: str = "full", *, gap: str = "gap_loss", control: str = "train_loss", at: int = -1,
                     step: Optional[int] = None, pair=None, annotate: bool = True, ax=None,
                     figsize=(5.5, 4.2)) -> Figure:
    """``stat`` (x) against the generalisation gap (y) across runs, one point per run.

    The title gives Spearman's ρ and the partial correlations (on ranks and on raw values)
    controlling for ``control`` (the training loss) — see
    :func:`~hessexplore.tracker.gap_correlation`, whose dict is attached to the figure as
    ``fig.hx_correlation``.  Points are coloured by the training loss.
    """
    res = gap_correlation(runs, stat, group, part, gap=gap, control=control, at=at, step=step, pair=pair)
    fig, ax = _axes(ax, figsize)
    z = res["z"]
    cz = z if np.isfinite(z).all() else None
    sc = ax.scatter(res["x"], res["y"], c=cz, cmap="plasma" if cz is not None else None, s=36, zorder=3)
    if cz is not None:
        fig.colorbar(sc, ax=ax, label=_label(control))
    if annotate:
        for name, x, y in zip(res["names"], res["x"], res["y"]):
            if np.isfinite(x) and np.isfinite(y):
                ax.annotate(str(name), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    where = f"{group} [{part}] " if group else ""
    ax.set_xlabel(f"{where}{_label(stat)}")
    ax.set_ylabel(_label(gap))
    ax.set_title(f"Spearman ρ = {res['spearman']:.3f} (n = {res['n']})\npartial on {_label(control)}: "
                 f"rank ρ = {res['partial_spearman']:.3f}, Pearson r = {res['partial']:.3f}", fontsize=9)
    fig.hx_correlation = res
    return fig


def plot_coupling(run_or_record, which: str = "C", *, at: int = -1, ax=None, figsize=(5, 4.2)) -> Figure:
    """Heatmap of the coupling map of one checkpoint: ``which`` in C, R, gap, norm_gn, norm_tensor."""
    rec = run_or_record.at(at) if isinstance(run_or_record, Run) else run_or_record
    cm = rec.get("coupling")
    if not cm or which not in cm:
        raise ValueError(f"record has no coupling map with {which!r}" + (f": {cm['skipped']}" if cm and
                                                                          "skipped" in cm else ""))
    fig, ax = _axes(ax, figsize)
    M = np.array([[np.nan if v is None else v for v in row] for row in cm[which]], dtype=np.float64)
    im = ax.imshow(M, cmap="magma")
    names = cm["names"]
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(im, ax=ax, label=which)
    phi = cm.get("phi")
    ax.set_title(f"step {rec['step']}: {which} ({cm['space']} space)"
                 + (f", Φ = {phi:.3f}" if phi is not None else ""), fontsize=10)
    return fig
