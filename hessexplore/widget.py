"""The explorer widget: an anywidget model over a :class:`~hessexplore.session.Session`.

    w = hx.explore(model, loss_fn, (x, y), dtype=torch.float64)   # display w in a notebook
    w.select("blocks.0", "blocks.2")             # what clicking two nodes does
    w.wait(); w.estimate["metrics"]["resonance"]; w.result
    w.select("blocks.1", spectrum=True)          # one node twice: its block, then its local spectrum
    w.load_run(tracker.run)                      # replay a tracked run through the graph's colours

Protocol (traits, messages, DOM hooks): docs/widget-protocol.md.  The comm handler only
validates and enqueues; one worker thread computes (:mod:`hessexplore.jobs`); one locked
publisher writes traits at most 20 times a second inside ``hold_sync()``.
"""
from __future__ import annotations

import math
import os
import re
import threading
from pathlib import Path
from typing import Any, Sequence

import anywidget
import numpy as np
import torch
import traitlets

from . import metrics
from .errors import BlockTooLargeError, HessExploreError, JobCancelled
from .jobs import JobContext, JobRunner, Publisher, SyncExecutor, ThreadExecutor, summarize_exception
from .results import Block, CouplingMap
from .session import Session
from . import widget_protocol as proto
from . import widget_export
from .widget_format import format_value_err
from .widget_protocol import MAX_PROBES, MESSAGE_TYPES, MODES, PROTOCOL, ProtocolError  # noqa: F401 - public names

STATIC = Path(__file__).parent / "static"
BUNDLE = STATIC / "widget.js"
BUNDLE_CSS = STATIC / "widget.css"

__all__ = ["Explorer", "explore", "ProtocolError", "BundleMissingError", "buf", "decode_buf", "run_json",
           "SyncExecutor", "ThreadExecutor", "PROTOCOL"]

#: spectrum settings of the explorer's streaming jobs (Session.iter_spectrum keywords)
SPECTRUM_K = 5
SPECTRUM_PROBES = 16


class BundleMissingError(RuntimeError):
    """The browser bundle (hessexplore/static/widget.js) was not built."""


def _bundle() -> tuple[str, str | None]:
    if not BUNDLE.is_file():
        raise BundleMissingError(
            f"the explorer's browser bundle is missing ({BUNDLE}). It is built from js/ when the "
            "package is installed: reinstall with `pip install -e .` from the repository (Node.js >= 18 "
            "and npm must be on PATH), or run `cd js && npm ci && npm run build`. The Python library "
            "(hx.Session) works without it.")
    css = BUNDLE_CSS.read_text(encoding="utf-8") if BUNDLE_CSS.is_file() else None
    return BUNDLE.read_text(encoding="utf-8"), css


# ---- encoding --------------------------------------------------------------------------------
_WIRE_DTYPES = {torch.float64: "float64", torch.float32: "float32", torch.uint8: "uint8", torch.bool: "uint8"}


def buf(t: torch.Tensor | np.ndarray, dtype: str | None = None) -> dict:
    """A protocol Buf ``{shape, dtype, data: bytes}`` (row-major, little-endian)."""
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(t))
    t = t.detach()
    if dtype is None:
        dtype = _WIRE_DTYPES.get(t.dtype, "float32")
    tt = {"float64": torch.float64, "float32": torch.float32, "uint8": torch.uint8}[dtype]
    arr = t.to(device="cpu", dtype=tt).contiguous().numpy()
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return {"shape": list(arr.shape), "dtype": dtype, "data": arr.tobytes()}


def decode_buf(b: dict) -> np.ndarray:
    """Inverse of :func:`buf` (for tests and notebooks)."""
    dt = {"float64": "<f8", "float32": "<f4", "uint8": "u1"}[b["dtype"]]
    return np.frombuffer(bytes(b["data"]), dtype=dt).reshape(b["shape"])


def _num(x) -> float | None:
    """JSON number: NaN/Inf/None -> null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def downsample(m: torch.Tensor, max_shown: int) -> torch.Tensor:
    """Block-average a (r, c) matrix to at most (max_shown, max_shown) (near-equal bins)."""
    r, c = m.shape
    if r <= max_shown and c <= max_shown:
        return m
    out = (min(r, max_shown), min(c, max_shown))
    return torch.nn.functional.adaptive_avg_pool2d(m[None, None].to(torch.float64), out)[0, 0].to(m.dtype)


def widget_words(message: str) -> str:
    """An engine message rephrased for the page: its advice to call ``s.estimate(...)`` becomes
    "switch to Stream", ``Session(..., max_exact_dim=...)`` becomes ``hx.explore(...)``."""
    message = re.sub(r"Use s\.estimate\([^)]*\) for streaming estimates with error bars,?",
                     "Switch to Stream for estimates with error bars,", message)
    return message.replace("Session(..., max_exact_dim=...)", "hx.explore(..., max_exact_dim=...)")


def _has_params(session: Session, name: str) -> bool:
    try:
        return session.dim(name, "parameter") > 0
    except HessExploreError:
        return False


# ---- checkpoint replay -----------------------------------------------------------------------
#: statistics first in the page's selector (others follow in the order the run has them)
_STAT_ORDER = ("lambda_max", "lambda_min", "trace", "trace_share", "frobenius", "negative_mass",
               "negative_fraction", "abs_min_over_max", "condition_number", "spectral_entropy",
               "effective_rank", "stable_rank", "numerical_rank")
_STAT_SKIP = ("n", "eps", "tol", "outlier_threshold", "not_estimated", "not_estimable")


def _as_run(run):
    """A :class:`~hessexplore.tracker.Run` from a Run, a Tracker, a path or a saved JSON dict."""
    from .tracker import Run, Tracker
    if isinstance(run, Run):
        return run
    if isinstance(run, Tracker):
        return run.run
    if isinstance(run, (str, os.PathLike)):
        return Run.load(os.fspath(run))
    if isinstance(run, dict):
        return Run.from_json(run)
    raise TypeError(f"run must be a hessexplore Run, Tracker, a path to a saved run or its JSON dict, "
                    f"got {type(run).__name__}")


def run_json(run, part: str = "full") -> dict:
    """The ``run`` trait for a tracked run (docs/widget-protocol.md): per statistic and group the
    values at every checkpoint (``Run.series(stat, group=g, part=part)``; NaN → null), the steps
    and the train/test losses.  ``stats`` lists the raw statistics, then the normalised ones
    that are not raw already (also listed in ``normalized``); only statistics with at least one
    finite value are kept."""
    run = _as_run(run)
    if part not in ("full", "gn", "tensor"):
        raise HessExploreError(f"part must be 'full', 'gn' or 'tensor', got {part!r}")
    records = list(run.records)
    groups = list(run.groups)
    for r in records:       # groups a run recorded without listing them (older files)
        for g in r.get("layers", {}):
            if g not in groups:
                groups.append(g)
    raw: list[str] = []
    norm: list[str] = []
    for r in records:
        for g in groups:
            lay = r.get("layers", {}).get(g, {}).get(part) or {}
            for sect, out in (("stats", raw), ("normalized", norm)):
                for k, v in (lay.get(sect) or {}).items():
                    if k in _STAT_SKIP or isinstance(v, (list, dict, str)) or k in out:
                        continue
                    out.append(k)
    norm = [k for k in norm if k not in raw]
    raw = [k for k in _STAT_ORDER if k in raw] + [k for k in raw if k not in _STAT_ORDER]
    values: dict[str, dict[str, list]] = {}
    for k in raw + norm:
        per = {g: [_num(x) for x in run.series(k, group=g, part=part)[1]] for g in groups}
        if any(x is not None for xs in per.values() for x in xs):
            values[k] = per
    stats = [k for k in raw + norm if k in values]
    _, train = run.series("train_loss")
    _, test = run.series("test_loss")
    return {"name": str(run.name), "part": part, "steps": [int(s) for s in run.steps.tolist()],
            "stats": stats, "normalized": [k for k in norm if k in values], "groups": groups,
            "values": values, "losses": {"train": [_num(x) for x in train], "test": [_num(x) for x in test]}}


def _spectrum_progress(sp, steps: int, probes: int) -> float:
    """0..1 through a streaming spectrum: Lanczos steps, then SLQ probes (halves for lanczos+slq)."""
    if sp.done:
        return 1.0
    # a converged Lanczos stage is complete whatever its step budget (10/200 steps is not 5 %)
    lz = 1.0 if sp.converged else min(sp.lanczos_iterations / max(steps, 1), 0.99)
    slq = min((sp.slq.num_probes if sp.slq is not None else 0) / max(probes, 1), 0.99)
    if sp.method == "lanczos":
        return lz
    if sp.method == "slq":
        return slq
    if sp.method == "lanczos+slq":
        return 0.5 * lz if sp.stage == "lanczos" else 0.5 + 0.5 * slq
    return 0.0


def _stage_words(sp, steps: int) -> str:
    if sp.stage == "lanczos":
        return f" · Lanczos step {sp.lanczos_iterations}/{steps}" + (" (converged)" if sp.converged else "")
    if sp.stage == "slq" and sp.slq is not None:
        return f" · SLQ {sp.slq.num_probes}/{SPECTRUM_PROBES} probes"
    return f" · {sp.stage}" if sp.stage else ""


# ---- the widget ------------------------------------------------------------------------------
def _default_status() -> dict:
    return {"state": "idle", "message": "", "job": 0, "kind": "estimate", "progress": 0.0, "elapsed": 0.0}


def _default_selection() -> dict:
    return {"v": None, "w": None, "space": "activation", "mode": "stream", "probes": 200, "rel_ci": None}


class Explorer(anywidget.AnyWidget):
    """Interactive curvature explorer for one :class:`~hessexplore.session.Session`.

    Parameters
    ----------
    session : the analysis session (model, loss, batch).
    executor : where jobs run: default one daemon worker thread; ``SyncExecutor()`` runs
        them in the calling thread (tests, scripts).
    max_shown : block heatmaps larger than this (per side) are block-averaged for display;
        ``Explorer.result`` keeps the full-resolution object.
    max_rate : most trait writes per second while a job streams.
    history_points : longest sparkline history kept per metric (older points are thinned).
    max_eigen_dim : diagonal blocks up to this size also carry their eigenvalues.
    run : a tracked training run (``hx.Run``, ``hx.Tracker``, or a path to a saved one) to replay
        through the graph's colours; see :meth:`load_run`.
    export_dir : folder the page's Export button writes into (default: the kernel's working
        directory, the notebook's folder).
    """

    graph = traitlets.Dict().tag(sync=True)
    selection = traitlets.Dict(default_value=_default_selection()).tag(sync=True)
    status = traitlets.Dict(default_value=_default_status()).tag(sync=True)
    estimate = traitlets.Dict().tag(sync=True)
    block = traitlets.Dict().tag(sync=True)
    coupling_map = traitlets.Dict().tag(sync=True)
    spectrum = traitlets.Dict().tag(sync=True)
    run = traitlets.Dict().tag(sync=True)
    exported = traitlets.Dict().tag(sync=True)

    def __init__(self, session: Session, *, executor=None, max_shown: int = 128, max_rate: float = 20.0,
                 history_points: int = 200, max_eigen_dim: int = 2048, run=None, export_dir=None, **kwargs):
        if not isinstance(session, Session):
            raise TypeError(f"Explorer needs a hessexplore.Session, got {type(session).__name__}")
        esm, css = _bundle()
        self._esm = esm
        if css is not None:
            self._css = css
        super().__init__(**kwargs)
        self.session = session
        self.max_shown = int(max_shown)
        self.history_points = int(history_points)
        self.max_eigen_dim = int(max_eigen_dim)
        #: where the page's Export writes its files (default: the kernel's working directory,
        #: i.e. the notebook's folder in Jupyter)
        self.export_dir = Path(export_dir) if export_dir is not None else Path.cwd()
        self.result: Any = None
        self._publisher = Publisher(self._write, max_rate=max_rate)
        self._runner = JobRunner(self._publisher, executor if executor is not None else ThreadExecutor())
        self.graph = self._graph_json()
        self.replay_run = None      # the Run behind the `run` trait
        if run is not None:
            self.load_run(run)
        self.on_msg(self._on_custom_msg)

    # -- trait writes (publisher lock held) --
    def _write(self, updates: dict) -> None:
        with self.hold_sync():
            for name, value in updates.items():
                if name == "result":
                    self.result = value
                else:
                    setattr(self, name, value)

    def _graph_json(self) -> dict:
        s = self.session
        g = s.graph.to_json() if s.graph is not None else {"nodes": [], "edges": [], "modules": [],
                                                            "batch_size": s.batch_size}
        g["groups"] = s.groups
        # the kernel's limits, so the page validates its inputs with them
        g["limits"] = {"probes": [1, MAX_PROBES], "rel_ci": [0, 1], "max_exact_dim": s.max_exact_dim,
                       "name": proto.MAX_NAME}
        g["device"] = str(s.device)
        g["dtype"] = str(s.dtype).replace("torch.", "")
        g.setdefault("batch_size", s.batch_size)
        return g

    # -- messages from the page --
    def _on_custom_msg(self, _widget, content, buffers) -> None:
        """Comm callback: never raises; bad input becomes an ``error`` status."""
        try:
            if proto.message_type(content) == "export":
                self._export(content, buffers)
                return
            self._dispatch(content)
        except HessExploreError as exc:
            self._reject(content, str(exc))
        except Exception as exc:  # noqa: BLE001 - never an exception in the comm handler
            self._reject(content, summarize_exception(exc))

    def _reject(self, content, message: str) -> None:
        kind = proto.kind_of(content) or self.status.get("kind", "estimate")
        self._runner.reject(kind, proto.clip_message(message))

    def _dispatch(self, content) -> int | None:
        t = proto.check_envelope(content)
        if t == "cancel":
            sent = content.get("sent_at")     # page's clock (ms since the epoch): measures the message path
            ok = isinstance(sent, (int, float)) and not isinstance(sent, bool) and math.isfinite(sent)
            job = self._runner.cancel(sent_at=sent / 1000.0 if ok else None)
            return job.id if job is not None else None
        if t == "compute":
            return self._compute(content)
        if t == "coupling_map":
            return self._map(content)
        if t == "export":
            raise ProtocolError("'export' carries the files as binary buffers of a message from the page; "
                                "from Python, save figures with hessexplore.plots")
        return self._spectrum(content)

    def _export(self, content: dict, buffers) -> None:
        """Write the page's exported files (SVG / PNG bytes in the message's buffers) into
        :attr:`export_dir` on a short-lived thread; the ``exported`` trait says where they went
        (or why not).  Never touches the running job."""
        seq = content.get("seq") if isinstance(content.get("seq"), int) else None
        try:
            proto.check_envelope(content)
            files = widget_export.validate(content, buffers)
        except HessExploreError as exc:
            self._set_exported({"seq": seq, "files": [], "dir": str(self.export_dir), "error": proto.clip_message(str(exc))})
            return

        def work():
            out = widget_export.write_exports(self.export_dir, files)
            self._set_exported({"seq": seq, **out})
        threading.Thread(target=work, name="hessexplore-export", daemon=True).start()

    def _set_exported(self, payload: dict) -> None:
        with self._publisher.lock:
            with self.hold_sync():
                self.exported = payload

    def _compute(self, c: dict) -> int:
        v = proto.name(c, "v", "a node name")
        w = proto.name(c, "w", "a node name", optional=True) or v
        space = proto.space(c)
        mode = proto.mode(c)
        probes = proto.integer(c, "probes", 200, 1, MAX_PROBES)
        rel_ci = proto.rel_ci(c)
        seed = proto.integer(c, "seed", 0, 0, 2**63 - 1)
        follow = proto.boolean(c, "spectrum")
        s = self.session
        dv, dw = s.dim(v, space), s.dim(w, space)        # unknown names -> UnknownNameError (readable)
        # Exact over the session's limit would only end in an error (and a diagonal pick's
        # spectrum would never start): stream the same pair instead and say why.
        fallback = ""
        asked = mode
        if mode == "exact" and max(dv, dw) > s.max_exact_dim:
            big, d = (w, dw) if dw >= dv else (v, dv)
            fallback = (f"{big} has {d:,} {'entries' if space == 'activation' else 'parameters'}, over the "
                        f"Exact limit ({s.max_exact_dim:,}): streamed instead")
            mode = "stream"
        sel = {"v": v, "w": w, "space": space, "mode": asked, "probes": probes, "rel_ci": rel_ci}
        # a diagonal pick with "spectrum": the local spectrum of the node's parameter group follows
        # the block as a job of its own (queued only if the block ends done and nothing newer came)
        group, why = self.spectrum_group(v, space) if follow and v == w else (None, "")
        spec_head = None
        if follow and v == w:
            spec_head = self._spectrum_head(v, space, group, why)

        def initial(job_id: int, extra: dict | None = None) -> dict:
            out = dict(extra or {})
            if spec_head is not None:
                out["spectrum"] = {**spec_head, "job": job_id}
            return out

        def with_follow(run_fn):
            def fn(ctx: JobContext):
                message = run_fn(ctx)
                if group is not None:
                    ctx.then("spectrum", lambda c2: self._run_spectrum(c2, group, "full", "auto", node=v),
                             f"Local spectrum of {group} (full, auto) · from the pick {v}",
                             initial=lambda jid: {"spectrum": {**spec_head, "job": jid,
                                                               "stage": "starting"}})
                return message
            return fn

        if mode == "exact":
            label = f"Exact H[{v}, {w}] ({space})"
            job = self._runner.submit("block", with_follow(lambda ctx: self._run_block(ctx, v, w, space)), label,
                                      initial=initial, selection=sel)
        else:
            label = f"Streaming H[{v}, {w}] ({space}) · 0/{probes} probes"
            head = {"v": v, "w": w, "space": space, "probes": 0, "budget": probes, "done": False,
                    "metrics": {}, "history": {}}
            if fallback:
                label = f"{fallback} · {label}"

            def stream(ctx):
                msg = self._run_estimate(ctx, v, w, space, probes, rel_ci, seed)
                return f"{msg} · {fallback}" if fallback else msg
            job = self._runner.submit(
                "estimate", with_follow(stream),
                label, initial=lambda job_id: initial(job_id, {"estimate": {"job": job_id, **head}}),
                selection=sel)
        return job.id

    def spectrum_group(self, name: str, space: str = "activation") -> tuple[str | None, str]:
        """The parameter group whose local spectrum a diagonal pick of ``name`` shows, and why.

        Parameter space: ``name`` itself.  Activation space: the node's module when it owns
        parameters (a layer: its own; a container such as ``blocks.0``: all parameters under
        it); otherwise ``(None, reason)`` — e.g. an activation function owns no parameters.
        """
        s = self.session
        if space == "parameter":
            return name, f"parameter group {name}"
        if name in s.groups:
            return name, f"the parameters of module {name}"
        try:
            s.dim(name, "parameter")
            return name, f"all parameters under {name}"
        except HessExploreError:
            pass
        node = s.graph.resolve(name) if s.graph is not None else None
        what = f"{name} ({node.op})" if node is not None and node.op and node.op != name else name
        hint = ""
        if node is not None:
            owners = [a for a in node.aliases if _has_params(s, a)]
            if owners:
                o = owners[0]
                hint = (f" It is the output of {o}: collapse {o} and pick it (or call "
                        f"w.local_spectrum({o!r})) for the spectrum of all its parameters.")
        return None, f"{what} owns no parameters, so it has no local spectrum.{hint}"

    @staticmethod
    def _spectrum_head(node: str, space: str, group: str | None, why: str) -> dict:
        base = {"node": node, "space": space, "group": group, "part": "full", "method": "auto",
                "eigenvalues": None, "density": None, "stats": {}, "done": group is None, "stage": ""}
        if group is None:
            return {**base, "pending": False, "message": why}
        return {**base, "pending": True, "note": f"Local spectrum of {group} ({why}): follows the block H[{node}, {node}]."}

    def _map(self, c: dict) -> int:
        space = proto.space(c)
        nodes = proto.names(c, "nodes")
        if nodes is not None:
            for n in nodes:
                self.session.dim(n, space)
        n = len(nodes) if nodes is not None else len(self.session.nodes if space == "activation" else self.session.groups)
        label = f"Coupling map of {n} {'nodes' if space == 'activation' else 'groups'} ({space})"
        return self._runner.submit("map", lambda ctx: self._run_map(ctx, nodes, space), label).id

    def _spectrum(self, c: dict) -> int:
        group = proto.name(c, "group", "a parameter group name")
        if getattr(self.session, "iter_spectrum", None) is None:
            raise HessExploreError("the local spectrum is not available in this version of hessexplore "
                                   "(Session.iter_spectrum is missing)")
        from .spectra import METHODS, PARTS
        part = proto.choice(c, "part", PARTS, "full")
        method = proto.choice(c, "method", METHODS, "auto")
        self.session.dim(group, "parameter")       # unknown group -> readable error
        label = f"Local spectrum of {group} ({part}, {method})"
        head = {"group": group, "node": None, "part": part, "method": method, "eigenvalues": None, "density": None,
                "stats": {}, "done": False, "pending": True, "stage": "starting"}
        return self._runner.submit("spectrum", lambda ctx: self._run_spectrum(ctx, group, part, method), label,
                                   initial=lambda job_id: {"spectrum": {**head, "job": job_id}}).id

    # -- jobs (worker thread) --
    def _run_block(self, ctx: JobContext, v: str, w: str, space: str) -> str:
        def progress(done, total):
            ctx.publish(progress=0.8 * done / max(total, 1),
                        message=f"Exact H[{v}, {w}] ({space}) · {done}/{total} columns")
            ctx.summary = f"{done}/{total} columns"
        try:
            b = self.session.block(v, w, space, should_stop=ctx.should_stop, progress=progress)
        except BlockTooLargeError as exc:      # the library's advice, in the page's words
            raise HessExploreError(widget_words(str(exc))) from None
        ctx.check()
        payload = self._block_json(ctx.id, b)
        ctx.check()
        size = f"{b.shape[0]}×{b.shape[1]}" + (
            f" (shown {payload['shown_shape'][0]}×{payload['shown_shape'][1]})" if payload["downsampled"] else "")
        coupling = None if b.diagonal else self._exact_coupling(ctx, b)
        if coupling is not None:
            payload["metrics"]["coupling"] = _num(coupling)
        ctx.publish(progress=1.0, block=payload, result=b)
        return f"Exact H[{v}, {w}] ({space}) · {size} · {ctx.elapsed:.2f} s"

    def _exact_coupling(self, ctx: JobContext, b: Block) -> float | None:
        """C(v, w) of an off-diagonal exact block: needs ‖H_vv‖_F and ‖H_ww‖_F (d_v + d_w more
        products).  The block is shown first; C follows (None when a side is too large)."""
        s = self.session
        if max(s.dim(b.v, b.space), s.dim(b.w, b.space)) > s.max_exact_dim:
            return None
        pending = self._block_json(ctx.id, b)
        ctx.publish(progress=0.85, block=pending, result=b,
                    message=f"Exact H[{b.v}, {b.w}] ({b.space}) · {b.shape[0]}×{b.shape[1]} · coupling …")
        cm = None
        for cm in s.iter_coupling_map([b.v, b.w], space=b.space, should_stop=ctx.should_stop):
            ctx.check()
        if cm is None or len(cm.names) != 2:   # v and w resolve to the same node
            return None
        return metrics.coupling_from_norms(b.resonance, float(cm.R[0, 0]), float(cm.R[1, 1]))

    def _block_json(self, job: int, b: Block) -> dict:
        parts = {k: downsample(getattr(b, k).detach().cpu(), self.max_shown) for k in ("full", "gn", "tensor")}
        wire = "float64" if b.full.dtype == torch.float64 else "float32"
        vmax = max(float(p.abs().max()) if p.numel() else 0.0 for p in parts.values())
        eig = None
        if b.diagonal and b.shape[0] <= self.max_eigen_dim:
            eig = buf(b.eigenvalues.detach().cpu(), wire)
        shown = list(parts["full"].shape)
        return {"job": job, "v": b.v, "w": b.w, "space": b.space, "shape": list(b.shape), "shown_shape": shown,
                "downsampled": shown != list(b.shape), "parts": {k: buf(p, wire) for k, p in parts.items()},
                "vmax": _num(vmax), "eigenvalues": eig,
                "metrics": {k: _num(x) for k, x in b.metrics.items()}}

    def _run_estimate(self, ctx: JobContext, v: str, w: str, space: str, probes: int, rel_ci, seed: int) -> str:
        gen = self.session.estimate(v, w, space, probes=probes, seed=seed, rel_ci=rel_ci,
                                    should_stop=ctx.should_stop)
        rows: list[tuple[int, dict]] = []
        snap = None
        try:
            for snap in gen:
                js = snap.to_json()
                rows.append((snap.probes, js["metrics"]))
                if len(rows) > self.history_points:
                    rows = rows[:-1][::2] + rows[-1:]
                ctx.summary = f"{snap.probes}/{probes} probes"
                history: dict[str, list] = {}
                for p, ms in rows:
                    for name, e in ms.items():
                        history.setdefault(name, []).append([p, e["value"], e["stderr"]])
                payload = {"job": ctx.id, "v": v, "w": w, "space": space, "probes": snap.probes, "budget": probes,
                           "done": bool(snap.done), "elapsed": round(snap.elapsed, 4),
                           "krylov_steps": snap.krylov_steps, "metrics": js["metrics"], "history": history}
                ctx.publish(progress=snap.probes / probes, estimate=payload, result=snap,
                            message=f"Streaming H[{v}, {w}] ({space}) · {snap.probes}/{probes} probes")
                if ctx.should_stop():
                    raise JobCancelled()
        finally:
            gen.close()
        if snap is None:
            return f"H[{v}, {w}] ({space}) · no probes"
        early = f" (target ±{100 * rel_ci:.3g} % reached)" if rel_ci is not None and snap.probes < probes else ""
        R = snap.resonance
        return f"H[{v}, {w}] ({space}) · {snap.probes} probes{early} · R = {format_value_err(R.value, R.stderr)}"

    def _run_map(self, ctx: JobContext, nodes, space: str) -> str:
        cm = None
        for cm in self.session.iter_coupling_map(nodes, space=space, should_stop=ctx.should_stop):
            n = len(cm.names)
            done_pairs = int(cm.filled.sum())
            ctx.summary = f"{done_pairs}/{n * n} pairs"
            ctx.publish(progress=done_pairs / max(n * n, 1), coupling_map=self._map_json(ctx.id, cm), result=cm,
                        message=f"Coupling map ({space}) · {done_pairs}/{n * n} pairs")
            ctx.check()
        if cm is None:
            return "Coupling map: no nodes"
        return f"Coupling map of {len(cm.names)} nodes ({space}) · {ctx.elapsed:.2f} s"

    @staticmethod
    def _map_json(job: int, cm: CouplingMap) -> dict:
        return {"job": job, "space": cm.space, "names": list(cm.names), "R": buf(cm.R, "float64"),
                "C": buf(cm.C, "float64"), "gap": buf(cm.gap, "float64"), "D": buf(cm.D, "float64"),
                "distance": buf(cm.distance.to(torch.float64), "float64"),
                "filled": buf(cm.filled, "uint8"), "done": cm.done}

    def _run_spectrum(self, ctx: JobContext, group: str, part: str, method: str, node: str | None = None) -> str:
        n = self.session.dim(group, "parameter")
        steps = min(n, max(200, 4 * SPECTRUM_K))          # Lanczos' step budget (iter_spectrum's default)
        budget = {"lanczos_iterations": steps, "slq_probes": SPECTRUM_PROBES}
        sp = None
        # "auto" must pick a method that works: never a dense matrix over the session's exact limit
        from .spectra import DENSE_MAX
        extra = {"dense_max": min(DENSE_MAX, self.session.max_exact_dim)} if method == "auto" else {}
        for sp in self.session.iter_spectrum(group, part, method, should_stop=ctx.should_stop,
                                             k=SPECTRUM_K, num_probes=SPECTRUM_PROBES, **extra):
            progress = _spectrum_progress(sp, steps, SPECTRUM_PROBES)
            ctx.summary = (f"{sp.matvecs} products" if sp.matvecs else "") + (f" ({sp.stage})" if sp.stage else "")
            payload = self._spectrum_json(ctx.id, sp)
            payload.update(progress=progress, budget=budget, node=node)
            ctx.publish(spectrum=payload, result=sp, progress=progress,
                        message=f"Local spectrum of {group} · {sp.method}" + _stage_words(sp, steps))
            ctx.check()
        if sp is None:
            return f"Local spectrum of {group}: nothing computed"
        return f"Local spectrum of {group} ({sp.n:,} parameters, {sp.method}) · {ctx.elapsed:.2f} s"

    @staticmethod
    def _spectrum_json(job: int, sp) -> dict:
        out = sp.to_json(eigenvalues=False, density=False)
        out["job"] = job
        out["pending"] = False
        out["eigenvalues"] = buf(sp.eigenvalues.detach().cpu(), "float64") if sp.eigenvalues is not None else None
        out["density"] = ({"grid": buf(sp.grid.detach().cpu(), "float64"),
                           "density": buf(sp.density.detach().cpu(), "float64")}
                          if sp.grid is not None and sp.density is not None else None)
        out["slq_probes"] = sp.slq.num_probes if sp.slq is not None else 0
        return out

    # -- checkpoint replay --
    def load_run(self, run, *, part: str = "full") -> dict:
        """Replay a tracked training run through the graph: the page shows a checkpoint slider and
        colours every node whose module owns a tracked group by the chosen statistic there.

        ``run``: an ``hx.Run`` (``tracker.run``), an ``hx.Tracker``, a path to a saved run, or
        None (remove the replay).  ``part``: whose spectra ("full", "gn", "tensor").  Returns
        the ``run`` trait (see :func:`run_json`).
        """
        if run is None:
            payload, self.replay_run = {}, None
        else:
            r = _as_run(run)
            r.check_model(self.session.model, "the run")   # a run of another model would colour wrong nodes
            payload = run_json(r, part)
            self.replay_run = r
        with self._publisher.lock:       # the publisher's lock: never interleave with a job's writes
            with self.hold_sync():
                self.run = payload
        return payload

    # -- Python-side mirror of the page --
    def _call(self, msg: dict) -> int | None:
        try:
            return self._dispatch(msg)
        except HessExploreError as exc:
            self._reject(msg, str(exc))
            raise

    def select(self, v: str, w: str | None = None, *, space: str = "activation", mode: str = "stream",
               probes: int = 200, rel_ci: float | None = None, seed: int = 0, spectrum: bool = False) -> int:
        """Compute H[v, w] as a click on v then w does (``mode="exact"`` for the dense block).

        ``spectrum=True`` with a diagonal pick (``w`` None or ``v``) also computes, as a follow-up
        job, the local spectrum of the parameter group behind ``v`` (see :meth:`spectrum_group`),
        as a click on the same node twice does in the page.  Returns the job id of the block;
        raises :class:`~hessexplore.errors.HessExploreError` for bad input (and shows it in the
        page).  Use :meth:`wait` to block until the job (and its follow-up) ends.
        """
        return self._call({"protocol": PROTOCOL, "type": "compute", "v": v, "w": w, "space": space,
                           "mode": mode, "probes": probes, "rel_ci": rel_ci, "seed": seed, "spectrum": spectrum})

    def compute_map(self, nodes: Sequence[str] | None = None, *, space: str = "activation") -> int:
        """Exact coupling map among ``nodes`` (default all), filled column by column."""
        return self._call({"protocol": PROTOCOL, "type": "coupling_map", "space": space,
                           "nodes": list(nodes) if nodes is not None else None})

    def local_spectrum(self, group: str, *, part: str = "full", method: str = "auto") -> int:
        """Local Hessian spectrum of a parameter group (the ``spectrum`` trait; ``result`` = Spectrum)."""
        return self._call({"protocol": PROTOCOL, "type": "spectrum", "group": group, "part": part,
                           "method": method})

    def cancel(self) -> int | None:
        """Cancel the running job (it ends ``cancelled``); the id of that job or None."""
        return self._dispatch({"protocol": PROTOCOL, "type": "cancel"})

    def wait(self, timeout: float | None = 60.0) -> dict:
        """Block until the current job ends; returns the final ``status``.  TimeoutError if it doesn't."""
        if not self._runner.wait(timeout):
            raise TimeoutError(f"the job did not finish within {timeout} s (status: {self.status.get('message')!r}); "
                               "call .cancel() to stop it")
        return dict(self.status)

    @property
    def busy(self) -> bool:
        return self._runner.busy

    @property
    def last_error(self) -> str | None:
        """Traceback of the last unexpected (non-HessExploreError) failure in a job, if any."""
        return self._runner.last_traceback

    def close(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None:
            runner.shutdown(wait=False)
            self._publisher.close()
        super().close()


def explore(model: torch.nn.Module, loss_fn, batch, *, executor=None, max_shown: int = 128, run=None,
            **session_kwargs) -> Explorer:
    """Open an explorer on ``loss_fn(model(x), y)`` for ``batch = (x, y)``; returns the widget.

    ``session_kwargs`` go to :class:`~hessexplore.session.Session` (``dtype``,
    ``max_exact_dim``, ``leaf_modules``, ...).  Display the result (last expression of a
    cell) to see the graph; click two nodes for their Hessian block, one node twice for its
    diagonal block and local spectrum.  ``run`` (``tracker.run``, a Tracker or a saved run's
    path) adds a checkpoint slider that replays it through the graph's colours.
    """
    return Explorer(Session(model, loss_fn, batch, **session_kwargs), executor=executor, max_shown=max_shown,
                    run=run)
