"""Track layer-wise curvature over training (SCIENCE.md §5): a hook for your own training loop.

    tracker = hx.Tracker(model, loss_fn, eval_batch=(x_tr[:256], y_tr[:256]), every=50,
                         test_batch=(x_te, y_te), pairs=[("blocks.0.0", "blocks.1.0")])
    for step in range(steps):
        ...                                   # your forward / backward / optimizer step
        tracker.step(step, train_loss=loss)   # records only at checkpoints (cheap otherwise)
    tracker.save("run.json")                  # plain JSON; hx.Run.load("run.json") reads it back

At each checkpoint (``every``: an int period, an iterable of steps, or a predicate) the tracker puts
the model in eval mode, and on the fixed ``eval_batch`` (a batch of *training* data: the curvature of
the training objective) records

* per parameter group and part ("full", "gn"): the local-Hessian spectrum statistics of
  :meth:`Session.spectrum` (raw, and normalised by trace / λ_max — under cross-entropy raw curvature
  falls as the training loss → 0), each group's share of the summed trace, and the eigenvalues
  (exact) or the SLQ density;
* the inter-layer coupling map among the groups (R, C, GN-Gap, Φ; exact), in parameter space or in
  activation space (the groups' module outputs);
* R, C and GN-Gap for chosen pairs;
* losses and accuracies: ``train_loss`` as you pass it, ``eval_loss``/``eval_acc`` on the eval
  batch, ``test_loss``/``test_acc`` on the test batch, and the generalisation gaps
  ``gap_loss = test_loss − eval_loss`` and ``gap_acc = eval_acc − test_acc``.

It then restores every module's train/eval flag.  Nothing touches the global RNG (spectra use a
private seeded generator), the parameters, or their gradients, so tracking does not change training.

:class:`Run` holds one run's records (plain dicts, JSON-ready), saves/loads them, and extracts series;
:func:`spearman`, :func:`partial_spearman` and :func:`gap_correlation` relate a statistic to the
generalisation gap across runs.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from . import metrics, runfile
from .errors import HessExploreError, MemoryBudgetError
from .fileio import atomic_write
from .batches import Batches, is_one_batch
from .capture import select_output
from .session import Session

__all__ = ["Tracker", "Run", "load_run", "spearman", "partial_spearman", "partial_correlation", "rankdata",
           "gap_correlation"]

_NAN = float("nan")
FORMAT = "hessexplore.tracker/1"


# --------------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------------

def _clean(x):
    """JSON-ready copy: NaN/inf → None, tensors/arrays → lists, tuples → lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _clean(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


def _num(x) -> float:
    """A record value as a float (None → NaN)."""
    if x is None:
        return _NAN
    try:
        return float(x)
    except (TypeError, ValueError):
        return _NAN


def _pair_key(a: str, b: str) -> str:
    return f"{a}|{b}"


# --------------------------------------------------------------------------------------------------
# a run's records
# --------------------------------------------------------------------------------------------------

@dataclass
class Run:
    """The records of one training run (one dict per checkpoint), with its settings.

    Record layout (every number a float or None): ``step``, ``train_loss``, ``eval_loss``, ``eval_acc``,
    ``test_loss``, ``test_acc``, ``gap_loss``, ``gap_acc``, ``extra`` (your keywords), ``elapsed``;
    ``layers[group][part]`` = {``stats``, ``normalized``, ``method``, ``note``, ``n``, ``sigma``,
    ``eigenvalues`` (exact), ``grid``/``density`` (SLQ), ``top``, ``bottom``, ``errors``};
    ``coupling`` = {``names``, ``space``, ``R``, ``C``, ``gap``, ``norm_gn``, ``norm_tensor``, ``phi``};
    ``pairs["a|b"]`` = {``v``, ``w``, ``space``, ``method``, ``R``, ``C``, ``gn_gap``, ``stderr``}.
    """

    name: str = "run"
    config: dict = field(default_factory=dict)
    groups: list = field(default_factory=list)
    parts: list = field(default_factory=list)
    space: str = "parameter"
    pairs: list = field(default_factory=list)
    records: list = field(default_factory=list)
    model: Optional[dict] = None     # fingerprint of the model it was recorded on (runfile.fingerprint)

    # -- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    @property
    def steps(self) -> np.ndarray:
        return np.array([r["step"] for r in self.records], dtype=np.int64)

    @staticmethod
    def value(record: dict, key: str, group: Optional[str] = None, part: str = "full",
              pair: Optional[Sequence[str]] = None) -> float:
        """One number of a record.

        ``pair=(a, b)``: ``key`` in R, C, gn_gap (from ``pairs``, else from the coupling map: R, C,
        gap, norm_gn, norm_tensor).  ``group``: a spectrum statistic or normalised statistic of that
        group and ``part`` (``lambda_max``, ``negative_mass``, ``lambda_max/trace``, ``trace_share``…).
        Otherwise a top-level number (``train_loss``, ``test_acc``, ``gap_loss``, ``phi``…) or one of
        your ``extra`` keywords.  ``train_loss`` falls back to ``eval_loss`` when you passed none.
        Missing → NaN.
        """
        if pair is not None:
            a, b = pair
            p = record.get("pairs", {}).get(_pair_key(a, b)) or record.get("pairs", {}).get(_pair_key(b, a))
            if p is not None and key in p:
                return _num(p[key])
            cm = record.get("coupling")
            if cm and a in cm["names"] and b in cm["names"]:
                i, j = cm["names"].index(a), cm["names"].index(b)
                k = {"gn_gap": "gap"}.get(key, key)
                if k in cm:
                    return _num(cm[k][i][j])
            return _NAN
        if group is not None:
            lay = record.get("layers", {}).get(group, {}).get(part)
            if lay is None:
                return _NAN
            for sect in ("stats", "normalized"):
                if key in lay.get(sect, {}):
                    v = lay[sect][key]
                    return _NAN if isinstance(v, list) else _num(v)
            return _num(lay.get(key))
        if key == "phi":
            return _num((record.get("coupling") or {}).get("phi"))
        if key in record and not isinstance(record[key], (dict, list)):
            v = record[key]
            if key == "train_loss" and v is None:
                return _num(record.get("eval_loss"))
            return _num(v)
        return _num(record.get("extra", {}).get(key))

    def series(self, key: str, group: Optional[str] = None, part: str = "full",
               pair: Optional[Sequence[str]] = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of :meth:`value` over the records."""
        vals = np.array([self.value(r, key, group, part, pair) for r in self.records], dtype=np.float64)
        return self.steps, vals

    def at(self, index_or_step: int = -1, *, step: Optional[int] = None) -> dict:
        """A record by position (default the last) or by ``step=``."""
        if step is not None:
            for r in self.records:
                if r["step"] == step:
                    return r
            raise KeyError(f"no record at step {step}; steps: {self.steps.tolist()}")
        return self.records[index_or_step]

    def final(self, key: str, group: Optional[str] = None, part: str = "full",
              pair: Optional[Sequence[str]] = None) -> float:
        return self.value(self.records[-1], key, group, part, pair) if self.records else _NAN

    # -- files ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        d = {"format": FORMAT, "name": self.name, "config": self.config, "groups": self.groups,
             "parts": self.parts, "space": self.space, "pairs": [list(p) for p in self.pairs],
             "records": self.records}
        if self.model is not None:
            d["model"] = self.model
        return _clean(d)

    @classmethod
    def from_json(cls, d: dict, source: str = "run") -> "Run":
        """A run from its JSON dict; :class:`~hessexplore.errors.RunFileError` if it breaks the schema."""
        runfile.validate(d, source)
        return cls(name=d.get("name", "run"), config=d.get("config", {}), groups=d.get("groups", []),
                   parts=d.get("parts", []), space=d.get("space", "parameter"),
                   pairs=[tuple(p) for p in d.get("pairs", [])], records=d.get("records", []),
                   model=d.get("model"))

    def save(self, path: str) -> str:
        """Write the run as JSON (gzip-compressed when ``path`` ends in .gz); returns ``path``.

        Atomic: a kill or error mid-save leaves the previous file at ``path`` intact."""
        text = json.dumps(self.to_json(), allow_nan=False, separators=(",", ":"))
        if str(path).endswith(".gz"):
            atomic_write(path, gzip.compress(text.encode("utf-8"), mtime=0))
        else:
            atomic_write(path, text)
        return path

    @classmethod
    def load(cls, path: str, model: Optional[nn.Module] = None) -> "Run":
        """Read a run written by :meth:`save` (or :meth:`Tracker.save`).

        A missing, damaged or edited file raises one :class:`~hessexplore.errors.RunFileError`
        saying where; with ``model``, so does a run recorded on a differently shaped model."""
        run = cls.from_json(runfile.read(path), os.fspath(path))
        if model is not None:
            run.check_model(model, os.fspath(path))
        return run

    def check_model(self, model: nn.Module, source: str = "this run") -> None:
        """Raise :class:`~hessexplore.errors.RunFileError` unless the run was recorded on a model with
        the same parameter names and shapes as ``model`` (older files: its groups are modules of it)."""
        runfile.check_model(self.model, self.groups, model, source)


def load_run(path: str, model: Optional[nn.Module] = None) -> Run:
    """:meth:`Run.load`."""
    return Run.load(path, model)


# --------------------------------------------------------------------------------------------------
# the tracker
# --------------------------------------------------------------------------------------------------

class Tracker:
    """Record layer-wise curvature at checkpoints of your own training loop (see module docstring).

    Parameters
    ----------
    model, loss_fn : as for :class:`Session` (``loss_fn`` a batch mean).
    eval_batch : (x, y), a fixed batch of training data on which curvature is measured, or a loader of
        such batches (e.g. the whole training set, ``shuffle=False``): then spectra and losses are
        those of the mean loss over all its samples.
    every : int period (record when ``step % every == 0``), an iterable of steps, or a predicate.
    test_batch : (x, y) for test loss/accuracy (or pass ``test_batch=`` to :meth:`step`).
    groups : parameter groups to track (default: every module that owns parameters, ``Session.groups``).
    parts : which parts' spectra, from "full", "gn", "tensor" (default both "full" and "gn").
    pairs : (a, b) name pairs whose R, C and GN-Gap to record (in ``space``).
    coupling : record the exact coupling map among ``groups`` (skipped, with a note, when the groups
        hold more than ``max_coupling_dim`` parameters / activations in total).
    space : "parameter" (blocks between parameter groups) or "activation" (between the groups' module
        outputs) for the coupling map and the pairs.  Spectra are always parameter space.
    method, spectrum_kw : passed to :meth:`Session.spectrum` ("auto": dense up to 3000 parameters).
    dtype : the session's dtype (default float64: teaching-grade exactness; the model is copied at
        every checkpoint — pass None to use the model's own dtype and weights in place).
    keep_eigenvalues : store exact eigenvalues in the records (for spectra-over-time plots).
    pair_probes : probes for pairs too large for exact blocks (streamed estimates with errors).
    name, config : stored with the run (e.g. the label-noise level), for comparisons across runs.
    on_record : callback(record) after each checkpoint (e.g. to print or log).
    output : as for :class:`Session`: which output of a model returning a tuple, dict or
        ``ModelOutput`` the loss is applied to (e.g. "logits"); x may be a dict of keyword inputs.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, eval_batch, every: Union[int, Iterable[int],
                 Callable[[int], bool]] = 100, *, test_batch=None, groups: Optional[Sequence[str]] = None,
                 parts: Sequence[str] = ("full", "gn"), pairs: Sequence[Sequence[str]] = (),
                 coupling: bool = True, space: str = "parameter", method: str = "auto",
                 spectrum_kw: Optional[dict] = None, dtype: Optional[torch.dtype] = torch.float64,
                 keep_eigenvalues: bool = True, max_coupling_dim: int = 20000, pair_probes: int = 64,
                 name: str = "run", config: Optional[dict] = None,
                 on_record: Optional[Callable[[dict], Any]] = None, output: Any = None):
        if space not in ("parameter", "activation"):
            raise HessExploreError(f"space must be 'parameter' or 'activation', got {space!r}")
        for p in parts:
            if p not in ("full", "gn", "tensor"):
                raise HessExploreError(f"parts must be among 'full', 'gn', 'tensor', got {p!r}")
        if not is_one_batch(eval_batch) and (isinstance(eval_batch, (str, bytes, dict, torch.Tensor))
                                             or not hasattr(eval_batch, "__iter__")):
            raise HessExploreError("eval_batch must be a pair (x, y) of training data, or a loader of such "
                                   "batches (the training set, without shuffling)")
        self.model, self.loss_fn, self.eval_batch, self.test_batch = model, loss_fn, eval_batch, test_batch
        if isinstance(every, int):
            if every < 1:
                raise HessExploreError("every must be a positive number of steps")
            self._due = lambda s, e=every: s % e == 0
        elif callable(every):
            self._due = every
        else:
            steps = {int(s) for s in every}
            self._due = lambda s: s in steps
        self.parts, self.pairs = list(parts), [tuple(p) for p in pairs]
        self.coupling, self.space, self.method = coupling, space, method
        self.spectrum_kw = dict(spectrum_kw or {})
        self.dtype, self.keep_eigenvalues = dtype, keep_eigenvalues
        self.output = output
        self.max_coupling_dim, self.pair_probes = int(max_coupling_dim), int(pair_probes)
        self.on_record = on_record
        self._groups = list(groups) if groups is not None else None
        self._checked = False
        self.run = Run(name=name, config=dict(config or {}), groups=list(self._groups or []),
                       parts=list(self.parts), space=space, pairs=list(self.pairs),
                       model=runfile.fingerprint(model) if isinstance(model, nn.Module) else None)
        self.session: Optional[Session] = None   # the last checkpoint's session

    # -- the hook --------------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Whether ``step`` is a checkpoint."""
        return bool(self._due(int(step)))

    def step(self, step: int, *, train_loss=None, test_batch=None, force: bool = False,
             **extra) -> Optional[dict]:
        """Call once per training step; records (and returns the record) at checkpoints, else None.

        ``train_loss``: the training loss you computed (a float or a scalar tensor), stored as is;
        ``test_batch``: overrides the constructor's; ``extra``: more numbers to store (lr, epoch…).
        """
        if not (force or self.due(step)):
            return None
        return self.record(step, train_loss=train_loss, test_batch=test_batch, **extra)

    __call__ = step

    @property
    def records(self) -> list:
        return self.run.records

    @property
    def last(self) -> Optional[dict]:
        return self.run.records[-1] if self.run.records else None

    def save(self, path: str) -> str:
        return self.run.save(path)

    @staticmethod
    def load(path: str, model: Optional[nn.Module] = None) -> Run:
        return Run.load(path, model)

    # -- one checkpoint ---------------------------------------------------------------------------
    def record(self, step: int, *, train_loss=None, test_batch=None, **extra) -> dict:
        """Measure now, whatever ``every`` says; append and return the record."""
        t0 = time.perf_counter()
        modes = {m: m.training for m in self.model.modules()}
        try:
            self.model.eval()
            rec = self._measure(int(step), train_loss, test_batch if test_batch is not None else self.test_batch,
                                extra)
        finally:
            for m, flag in modes.items():
                m.training = flag
        rec["elapsed"] = time.perf_counter() - t0
        rec = _clean(rec)
        self.run.records.append(rec)
        if self.on_record is not None:
            self.on_record(rec)
        return rec

    def _losses(self, batch, prefix: str) -> dict:
        """Mean loss (and accuracy for class labels) over a batch or a loader (sample-weighted)."""
        device = next(self.model.parameters()).device
        loss, acc, n_acc = 0.0, 0.0, 0
        with torch.no_grad():
            for b in Batches(batch, device, None):
                z = select_output(self.model(*b.args, **b.kwargs), self.output)
                y = b.targets
                loss += b.weight * float(self.loss_fn(z, y))
                if z.dim() == 2 and isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point():
                    acc += float((z.argmax(dim=1) == y).to(torch.float64).sum())
                    n_acc += b.n
        return {f"{prefix}_loss": loss, f"{prefix}_acc": acc / n_acc if n_acc else None}

    def _measure(self, step: int, train_loss, test_batch, extra: dict) -> dict:
        if isinstance(train_loss, torch.Tensor):
            train_loss = float(train_loss.detach())
        rec: dict = {"step": step, "train_loss": None if train_loss is None else float(train_loss)}
        rec.update(self._losses(self.eval_batch, "eval"))
        if test_batch is not None:
            rec.update(self._losses(test_batch, "test"))
            rec["gap_loss"] = rec["test_loss"] - rec["eval_loss"]
            rec["gap_acc"] = (rec["eval_acc"] - rec["test_acc"]) if rec["eval_acc"] is not None else None
        rec["extra"] = {k: (float(v) if isinstance(v, (int, float, torch.Tensor, np.number)) else v)
                        for k, v in extra.items()}
        s = Session(self.model, self.loss_fn, self.eval_batch, dtype=self.dtype,
                    trace=self.space == "activation", check_loss=not self._checked, output=self.output)
        self._checked = True
        self.session = s
        if self._groups is None:
            self._groups = list(s.groups)
            self.run.groups = list(self._groups)
        groups = self._groups
        rec["layers"] = self._spectra(s, groups)
        if self.coupling:
            rec["coupling"] = self._coupling(s, groups)
        if self.pairs:
            rec["pairs"] = {_pair_key(a, b): self._pair(s, a, b) for a, b in self.pairs}
        return rec

    def _spectra(self, s: Session, groups: list) -> dict:
        layers: dict = {g: {} for g in groups}
        for part in self.parts:
            for g in groups:
                sp = s.spectrum(g, part, method=self.method, **self.spectrum_kw)
                d = sp.to_json(eigenvalues=self.keep_eigenvalues and sp.eigenvalues is not None,
                               density=sp.eigenvalues is None)
                for k in ("source", "matvecs", "stage", "done", "requested", "group", "part"):
                    d.pop(k, None)
                layers[g][part] = d
            traces = [_num(layers[g][part]["stats"]["trace"]) for g in groups]
            total = sum(traces)
            for g, t in zip(groups, traces):
                share = t / total if total > 0 and math.isfinite(total) else _NAN
                layers[g][part]["stats"]["trace_share"] = share
                layers[g][part]["normalized"]["trace_share"] = share
        return layers

    def _coupling(self, s: Session, groups: list) -> dict:
        space = self.space
        dims = [s.dim(g, space) for g in groups]
        if sum(dims) > self.max_coupling_dim or max(dims) > s.max_exact_dim:
            return {"names": groups, "space": space, "skipped": (
                f"the groups hold {sum(dims):,} {'parameters' if space == 'parameter' else 'activations'}, over "
                f"max_coupling_dim={self.max_coupling_dim:,}: the exact map was skipped; track pairs instead")}
        try:   # the size check above decides, not "auto"
            cm = s.coupling_map(groups, space=space, method="exact")
        except MemoryBudgetError as exc:    # refused up front: record why, keep the training loop going
            return {"names": groups, "space": space, "skipped": str(exc)}
        out = {"names": groups, "space": space, "R": cm.R, "C": cm.C, "gap": cm.gap, "norm_gn": cm.norm_gn,
               "norm_tensor": cm.norm_tensor, "distance": cm.distance}
        phi = None
        if space == "parameter":
            atoms = [p for g in groups for p in s._atoms(g, "parameter")]
            if len(atoms) == len(set(atoms)):   # Φ needs disjoint groups
                R2 = cm.R ** 2
                iu = torch.triu_indices(len(groups), len(groups), 1)
                phi = metrics.phi_from_norms(R2.diagonal().tolist(), R2[iu[0], iu[1]].tolist())
        out["phi"] = phi
        return out

    def _pair(self, s: Session, a: str, b: str) -> dict:
        space = self.space
        if max(s.dim(a, space), s.dim(b, space)) <= s.max_exact_dim:
            cm = s.coupling_map([a, b], space=space, method="exact")
            return {"v": a, "w": b, "space": space, "method": "exact", "R": float(cm.R[0, 1]),
                    "C": float(cm.C[0, 1]), "gn_gap": float(cm.gap[0, 1]), "stderr": None}
        snap = None
        for snap in s.estimate(a, b, space=space, probes=self.pair_probes):
            pass
        return {"v": a, "w": b, "space": space, "method": f"estimate ({snap.probes} probes)",
                "R": snap.resonance.value, "C": snap.coupling.value, "gn_gap": snap.gn_gap.value,
                "stderr": {"R": snap.resonance.stderr, "C": snap.coupling.stderr, "gn_gap": snap.gn_gap.stderr}}

    def __repr__(self) -> str:
        return (f"Tracker({type(self.model).__name__}, records={len(self.run.records)}, "
                f"groups={self._groups}, parts={self.parts}, space={self.space!r})")


# --------------------------------------------------------------------------------------------------
# correlations across runs
# --------------------------------------------------------------------------------------------------

def rankdata(x) -> np.ndarray:
    """Ranks 1…n with ties given their average rank (scipy.stats.rankdata's default)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / den if den > 0 else _NAN


def _finite(*cols) -> list[np.ndarray]:
    cols = [np.asarray(c, dtype=np.float64) for c in cols]
    ok = np.logical_and.reduce([np.isfinite(c) for c in cols])
    return [c[ok] for c in cols]


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks) over finite pairs; NaN if < 3."""
    x, y = _finite(x, y)
    if len(x) < 3:
        return _NAN
    return _pearson(rankdata(x), rankdata(y))


def partial_correlation(x, y, z) -> float:
    """Pearson correlation of x and y with z partialled out: corr of the residuals of x ~ 1 + z, y ~ 1 + z.

    Equals (r_xy − r_xz r_yz) / √((1 − r_xz²)(1 − r_yz²)).  NaN with fewer than 4 finite triples or a
    degenerate z (|r_xz| or |r_yz| = 1).
    """
    x, y, z = _finite(x, y, z)
    if len(x) < 4:
        return _NAN
    rxy, rxz, ryz = _pearson(x, y), _pearson(x, z), _pearson(y, z)
    den = (1 - rxz ** 2) * (1 - ryz ** 2)
    if not den > 1e-15:
        return _NAN
    return (rxy - rxz * ryz) / math.sqrt(den)


def partial_spearman(x, y, z) -> float:
    """Partial rank correlation: :func:`partial_correlation` of the ranks of x, y, z."""
    x, y, z = _finite(x, y, z)
    if len(x) < 4:
        return _NAN
    return partial_correlation(rankdata(x), rankdata(y), rankdata(z))


def gap_correlation(runs: Sequence[Union[Run, str]], stat: str, group: Optional[str] = None,
                    part: str = "full", *, gap: str = "gap_loss", control: str = "train_loss",
                    at: int = -1, step: Optional[int] = None, pair: Optional[Sequence[str]] = None) -> dict:
    """Relate a statistic to the generalisation gap across runs.

    For each run (a :class:`Run` or a path), x = ``stat`` (of ``group``/``part``, or ``pair``) at record
    ``at`` (default: the last) or at ``step``, y = ``gap`` ("gap_loss" or "gap_acc") and z = ``control``
    (the training loss) there.  Returns {x, y, z, names, n, spearman, partial_spearman (ρ of x and y
    with z partialled out, on ranks), partial (the same on the raw values: Pearson partial correlation),
    pearson}.  With few runs the ranks of x or y and z often coincide and the partial rank correlation
    is undefined (NaN); the raw partial correlation rarely is.
    """
    rs = [r if isinstance(r, Run) else Run.load(r) for r in runs]
    xs, ys, zs = [], [], []
    for r in rs:
        rec = r.at(at, step=step)
        xs.append(Run.value(rec, stat, group, part, pair))
        ys.append(Run.value(rec, gap))
        zs.append(Run.value(rec, control))
    x, y, z = (np.array(v, dtype=np.float64) for v in (xs, ys, zs))
    fx, fy = _finite(x, y)
    return {"x": x, "y": y, "z": z, "names": [r.name for r in rs], "n": int(len(fx)),
            "stat": stat, "group": group, "part": part, "gap": gap, "control": control,
            "spearman": spearman(x, y), "partial_spearman": partial_spearman(x, y, z),
            "partial": partial_correlation(x, y, z),
            "pearson": _pearson(fx, fy) if len(fx) >= 2 else _NAN}
