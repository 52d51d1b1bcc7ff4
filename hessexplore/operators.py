"""Curvature operators: products with Hessian blocks and their Gauss–Newton parts.

A :class:`Problem` is the mean loss L(u) = (1/B) Σ_b ℓ_b(z_b(u)) as a function
of a set of *atoms* u = (u_a)_a, each a flat vector:

* activation space: u_a = δ_a ∈ R^{d_a}, a zero perturbation shared by all
  samples and added to node a's output (:class:`ActivationProblem`);
* parameter space: u_a = θ_a, one parameter tensor, flattened
  (:class:`ParameterProblem`).

A *group* is an ordered list of atoms (a node is one atom; a parameter group
is the parameters under a module).  For groups v, w the block is

    H_{v,w}    = ∂²L / ∂u_v ∂u_w                                  (d_v, d_w)
    H^GN_{v,w} = Σ_b J_{z_b←u_v}ᵀ (∂²L/∂z_b²) J_{z_b←u_w}          (d_v, d_w)
    H^T_{v,w}  = H_{v,w} − H^GN_{v,w}

:class:`CurvatureOperator` multiplies these by batches of vectors.  Full
products come in two exact flavours (both agree with finite differences
through LayerNorm/BatchNorm, SCIENCE.md §6; forward-over-forward is never used):

* ``"double-backward"``: the forward pass and the first backward are recorded
  once (create_graph), and one backward through that graph per direction gives
  H t *and*, caught on its way through ∂L/∂z, the model's tangent J t; one
  more backward through the forward graph gives the GN part (see
  :class:`_Recorded`).  H t alone is one reverse-over-reverse Hessian-vector
  product, and its GN part adds about one backward; nothing constant across
  directions is recomputed: used for exact sweeps, streaming, spectra and maps.
  k directions run as one batched backward or as k plain ones, whichever the
  operator measured to be faster on this model and device.
* ``"forward-over-reverse"`` (``vmap(jvp(grad))``): stateless, nothing held
  between products; its forward tangent of z is J t, so the GN part adds a
  loss Hessian-vector product and a cached ``vjp``.  It is the default of
  :meth:`~hessexplore.Session.operator`.

The loss Hessian in the outputs is always taken by autodiff, so any
mean-reduced loss works.  One product with a direction in group w's space
yields H_{a,w}·t for *every* atom a at once.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch.func import grad, jvp, vjp, vmap

from . import compat
from .compat import curvature_mode
from .errors import AutodiffError, HessExploreError, JobCancelled
from .graph import ModelGraph

Flat = dict[str, torch.Tensor]


class Problem:
    """Mean loss ``loss_fn(z(u), targets)`` as a function of flat atoms.

    Subclasses set ``dims``, ``base`` and ``output``.
    """

    dims: dict[str, int]
    base: Flat

    #: op name -> modules calling it (from the captured graph), for error messages
    locate: Callable[[str], list[str]] | None = None
    #: the data set (:class:`~hessexplore.batches.Batches`) when products sum over several batches or ranks
    data = None
    #: the batch the products run on now (None: the one the problem was built with)
    batch = None
    #: products may use oneDNN kernels (False for models with RNN layers; see compat.curvature_mode)
    onednn = False

    def __init__(self, loss_fn: Callable, targets):
        self.loss_fn = loss_fn
        self.targets = targets
        #: atoms whose recorded gradient was found twice differentiable: the graph's structure is the same
        #: for every batch and recording, so later recordings skip the walk (see ``_Recorded._check``)
        self.twice_differentiable: set[str] = set()

    def use(self, batch) -> None:
        """Run the following products on ``batch`` (a :class:`~hessexplore.batches.Batch`)."""
        self.batch = batch
        self.targets = batch.targets

    @property
    def several(self) -> bool:
        """True when products are sums over several batches (a data set) or several ranks."""
        d = self.data
        return d is not None and (not d.single or d.distributed)

    def output(self, values: Flat) -> torch.Tensor:  # pragma: no cover - abstract
        """Model output z (B, …) with the given atoms replaced (others at ``base``)."""
        raise NotImplementedError

    def loss_of_output(self, z: torch.Tensor, targets=None) -> torch.Tensor:
        return self.loss_fn(z, self.targets if targets is None else targets)

    def loss(self, values: Flat, targets=None) -> torch.Tensor:
        return self.loss_of_output(self.output(values), targets)

    def _dual_targets(self) -> bool:
        """Float targets get an explicit zero tangent in forward mode: torch 2.13's forward-over-reverse
        of e.g. ``mse_loss`` fails with "ZeroTensors are immutable" when the target has none (pytorch#123996)."""
        return torch.is_tensor(self.targets) and self.targets.is_floating_point()


class ActivationProblem(Problem):
    """Atoms are shared zero perturbations δ_a of graph nodes (per-sample shape, flattened)."""

    def __init__(self, graph: ModelGraph, loss_fn, targets, names: Sequence[str],
                 dtype: torch.dtype, device: torch.device):
        super().__init__(loss_fn, targets)
        self.names = list(dict.fromkeys(names))
        self.shapes = {n: graph.resolve(n).shape for n in self.names}
        self.dims = {n: math.prod(s) for n, s in self.shapes.items()}
        self.base = {n: torch.zeros(d, dtype=dtype, device=device) for n, d in self.dims.items()}
        self.forward = graph.perturbed_forward(self.names)

    def output(self, values: Flat) -> torch.Tensor:
        flat = None if self.batch is None else self.batch.flat
        return self.forward(*[values[n].view(self.shapes[n]) for n in self.names], inputs=flat)


class ParameterProblem(Problem):
    """Atoms are parameter tensors θ_a (flattened, canonical names); the others stay at the model's values.

    ``forward(params, batch)`` is the model output with the given parameters replaced (on
    ``batch``, or the session's batch for None);
    it never writes into the user's modules (a captured graph takes them as
    arguments, or a private structural twin is re-parametrised).
    """

    def __init__(self, params: dict[str, torch.Tensor], forward: Callable[..., torch.Tensor], loss_fn,
                 targets, names: Sequence[str]):
        super().__init__(loss_fn, targets)
        self.forward = forward
        self.names = list(dict.fromkeys(names))
        self.shapes = {n: params[n].shape for n in self.names}
        self.dims = {n: params[n].numel() for n in self.names}
        # private copies: forward-mode AD keeps tangents on a view's base tensor, so views of the
        # user's parameters would share that state with every other thread using them
        self.base = {n: params[n].detach().clone().reshape(-1) for n in self.names}

    def output(self, values: Flat) -> torch.Tensor:
        return self.forward({n: values[n].view(self.shapes[n]) for n in self.names}, self.batch)


def _split(t: torch.Tensor, atoms: Sequence[str], dims: dict[str, int]) -> Flat:
    if len(atoms) == 1:
        return {atoms[0]: t}
    return dict(zip(atoms, torch.split(t, [dims[a] for a in atoms], dim=-1)))


@dataclass
class Tuning:
    """What an operator measured on its model and device: batched or looped backwards, per product
    shape (``ways``; ``batched`` / ``timings`` force one way / one time per direction for every shape
    when set), memory costs (``memory``: (w, out, parts) → (fixed,
    per-direction) bytes; ``chunks``: directions per product within a budget) and which operator
    exact column sweeps run on (``sweeps``).  Costs depend on
    shapes, not on weight values, so a session hands the same Tuning to every operator it builds on
    the same atoms (after a training step, or when its operator cache is cleared)."""

    batched: bool | None = None
    timings: dict = field(default_factory=dict)
    #: measured per product shape: (w, out, full, gn) → (batched, {"loop": s, "batched": s} per direction)
    ways: dict = field(default_factory=dict)
    #: the last measurement (what :attr:`CurvatureOperator.batched` / ``timings`` show when nothing is forced)
    last: tuple | None = None
    memory: dict = field(default_factory=dict)
    chunks: dict = field(default_factory=dict)
    #: exact sweeps: (swept atoms, budget) → (operator mode, chunk), chosen by measurement
    sweeps: dict = field(default_factory=dict)


@dataclass
class Products:
    """Results of one batched product, each (k, d_a) per output atom: row i is (H t_i)_a."""

    full: Flat | None
    gn: Flat | None

    def rows(self, part: str, atoms: Sequence[str]) -> torch.Tensor:
        """Concatenate the output atoms of a group: (k, d_group)."""
        if part == "tensor":
            return self.rows("full", atoms) - self.rows("gn", atoms)
        got = getattr(self, part)
        if len(atoms) == 1:
            return got[atoms[0]]
        return torch.cat([got[a] for a in atoms], dim=-1)


class CurvatureOperator:
    """Batched products with H and H^GN of a :class:`Problem` (see module docstring).

    ``products(w, T, out)`` takes T (k, d_w) — k directions in the space of
    the atoms ``w`` — and returns, for every atom a in ``out``, the rows
    (H_{a,w} t_i)ᵀ and (H^GN_{a,w} t_i)ᵀ stacked as (k, d_a).
    """

    MODES = ("forward-over-reverse", "double-backward")

    def __init__(self, problem: Problem, mode: str = "forward-over-reverse", chunk_size: int | None = None,
                 tuning: "Tuning | None" = None):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        self.problem = problem
        self.mode = mode
        self.chunk_size = chunk_size
        self._vjp_cache: dict[tuple[str, ...], tuple[torch.Tensor, Callable]] = {}
        self._recorded: _Recorded | None = None
        self.fallback: str | None = None      # set when the operator had to change mode
        #: what was measured about this model, device and atoms (shareable between operators)
        self.tuning = tuning if tuning is not None else Tuning()
        self._memory = self.tuning.memory
        self._chunks = self.tuning.chunks

    @property
    def batched(self) -> bool | None:
        """How the recorded operator runs k directions: True one batched backward (``is_grads_batched``),
        False k plain backwards, None not measured yet.  The way is measured per product shape (the
        first product of ≥ 3 directions for given w, out and parts times both, see :meth:`way`):
        this shows the last measurement; setting it forces one way for every shape."""
        if self.tuning.batched is not None:
            return self.tuning.batched
        return self.tuning.last[0] if self.tuning.last else None

    @batched.setter
    def batched(self, value: bool | None) -> None:
        self.tuning.batched = value

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per direction of each way, as last measured (empty until measured); setting it
        fixes the times every shape's chunks are capped by."""
        if self.tuning.timings:
            return self.tuning.timings
        return self.tuning.last[1] if self.tuning.last else {}

    @timings.setter
    def timings(self, value: dict[str, float]) -> None:
        self.tuning.timings = value

    def way(self, w: Sequence[str], out: Sequence[str], full: bool = True, gn: bool = True
            ) -> tuple[bool | None, dict[str, float]]:
        """(batched, seconds per direction of each way) for products of directions in ``w`` with rows of
        ``out``: what is forced, else what was measured for that shape (None, {} before).  Shapes
        differ: on CPU ResNet-18 a batched backward from layer4 is 10 % faster than a loop, from
        layer3 twice as slow."""
        got = self.tuning.ways.get((tuple(w), tuple(out), full, gn), (None, {}))
        return (self.tuning.batched if self.tuning.batched is not None else got[0]), (self.tuning.timings or got[1])

    def dim(self, atoms: Sequence[str]) -> int:
        return sum(self.problem.dims[a] for a in atoms)

    def _stateless(self, w: list[str], T: torch.Tensor, out: list[str], full: bool, gn: bool) -> Products:
        """Forward-over-reverse: ``vmap(jvp(grad))``; its forward tangent of z is J_w t, so the GN
        part costs only a Hessian-vector product of the loss in z and the cached vjp Jᵀ."""
        p = self.problem
        base = p.base
        others = {a: base[a] for a in out if a not in w}
        wbase = {a: base[a] for a in w}
        y0 = p.targets
        dual = p._dual_targets()
        z0, pullback = self._output_vjp(out) if gn else (None, None)
        loss_grad = grad(p.loss_of_output)   # ∂L/∂z as a function of (z, y)

        def gradient(wvals: Flat, y):
            def L(ovals, wv):
                z = p.output({**base, **ovals, **wv})
                return p.loss_of_output(z, y), z
            (go, gw), z = grad(L, argnums=(0, 1), has_aux=True)(others, wvals)
            return {a: (go[a] if a in go else gw[a]) for a in out}, z

        def tangent(fn, t: torch.Tensor):
            if dual:
                return jvp(fn, (wbase, y0), (_split(t, w, p.dims), torch.zeros_like(y0)))[1]
            return jvp(lambda wv: fn(wv, y0), (wbase,), (_split(t, w, p.dims),))[1]

        def gn_of(dz: torch.Tensor) -> Flat:
            if dual:
                _, hdz = jvp(loss_grad, (z0, y0), (dz, torch.zeros_like(y0)))
            else:
                _, hdz = jvp(lambda zz: loss_grad(zz, y0), (z0,), (dz,))
            return pullback(hdz)[0]

        if full:
            def column(t: torch.Tensor):
                ht, dz = tangent(gradient, t)
                return ht, (gn_of(dz) if gn else {})
        else:
            def column(t: torch.Tensor):
                dz = tangent(lambda wv, y: p.output({**base, **wv}), t)
                return {}, gn_of(dz)

        h, g = vmap(column, chunk_size=self.chunk_size)(T)
        return Products(h if full else None, g if gn else None)

    @torch.no_grad()
    def _output_vjp(self, out: list[str]):
        key = tuple(out)
        if key not in self._vjp_cache:
            p = self.problem
            base = p.base
            z, pullback = vjp(lambda ovals: p.output({**base, **ovals}), {a: base[a] for a in out})
            self._vjp_cache[key] = (z.detach(), pullback)
        return self._vjp_cache[key]

    @torch.no_grad()
    def products(self, w: Sequence[str], T: torch.Tensor, out: Sequence[str],
                 full: bool = True, gn: bool = True) -> Products:
        """Rows of H_{a,w} Tᵀ (and GN) for a in ``out``; T is (k, d_w).

        Runs under :func:`~hessexplore.compat.curvature_mode` (with oneDNN while
        ``problem.onednn``; a oneDNN kernel without the derivative asked for turns it
        off and runs again).  When an op of the model has no forward-mode derivative,
        the operator switches itself to
        ``"double-backward"`` (same numbers, reverse-over-reverse) and says so in
        ``fallback``; an op without any second derivative raises
        :class:`~hessexplore.errors.AutodiffError` naming the op and module.
        """
        w, out = list(w), list(out)
        while True:
            with curvature_mode(self.problem.onednn):
                try:
                    return self._guarded(w, T, out, full, gn)
                except (RuntimeError, NotImplementedError) as exc:
                    if not (self.problem.onednn and compat.is_onednn_error(exc)):
                        raise
            self.problem.onednn = False       # a oneDNN kernel without the derivative: native kernels
            self._recorded, self._vjp_cache = None, {}

    def _guarded(self, w: list[str], T: torch.Tensor, out: list[str], full: bool, gn: bool) -> Products:
        """:meth:`_over_data`, switching modes when an op lacks forward-mode AD (see :meth:`products`)."""
        try:
            return self._over_data(w, T, out, full, gn)
        except (RuntimeError, NotImplementedError) as exc:
            if not compat.is_autodiff_error(exc) or (self.problem.onednn and compat.is_onednn_error(exc)):
                raise
            if self.mode == "double-backward":
                raise AutodiffError(compat.explain_autodiff_error(exc, self.problem.locate)) from exc
            self.fallback = (f"forward-mode AD is not available for "
                             f"'{compat.failing_op(exc) or 'an op'}': products use double backward")
            self.mode = "double-backward"
            try:
                return self._over_data(w, T, out, full, gn)
            except (RuntimeError, NotImplementedError) as exc2:
                if not compat.is_autodiff_error(exc2) or (self.problem.onednn and compat.is_onednn_error(exc2)):
                    raise
                raise AutodiffError(compat.explain_autodiff_error(
                    exc2, self.problem.locate, tried=" (tried forward-over-reverse and double backward)")
                ) from exc2

    #: polled between the batches of a data set (True raises JobCancelled); set by the caller
    should_stop: Callable[[], bool] | None = None

    def _over_data(self, w: list[str], T: torch.Tensor, out: list[str], full: bool, gn: bool) -> Products:
        """One batch: :meth:`_products`.  A data set / several ranks: Σ_b (n_b/N) products on batch b.

        Per-batch state (the recorded graph, the output vjp) is rebuilt for every batch.
        """
        p = self.problem
        if not p.several:
            return self._products(w, T, out, full, gn)
        from .batches import for_each
        keys = [(part, a) for part, on in (("full", full), ("gn", gn)) if on for a in out]

        def one(batch) -> list[torch.Tensor]:
            p.use(batch)
            self._recorded, self._vjp_cache = None, {}
            res = self._products(w, T, out, full, gn)
            return [getattr(res, part)[a] for part, a in keys]

        try:
            got = for_each(p.data, one, should_stop=self.should_stop)
        finally:
            self._recorded, self._vjp_cache = None, {}
        parts: dict[str, Flat] = {"full": {}, "gn": {}}
        for (part, a), t in zip(keys, got):
            parts[part][a] = t
        return Products(parts["full"] if full else None, parts["gn"] if gn else None)

    def _products(self, w: list[str], T: torch.Tensor, out: list[str], full: bool, gn: bool) -> Products:
        if self.mode == "double-backward":
            return self._recorded_products(w, T, out, full, gn)
        return self._stateless(w, T, out, full, gn)

    def _recorded_products(self, w: list[str], T: torch.Tensor, out: list[str], full: bool, gn: bool
                           ) -> Products:
        """Products on the recorded graph, batched or looped, whichever this model, device and shape run faster.

        Batched backwards vmap every op, which is not always faster than k plain
        backwards (convolutions on CPU are often slower); so the first product of
        ≥ 3 directions for each (w, out, parts) first times both ways on some of its
        directions (:meth:`_measure`) and keeps the faster for that shape.
        """
        if self._recorded is None or (gn and not self._recorded.gn):
            self._recorded = _Recorded(self.problem, gn=gn)
        rec = self._recorded
        k = T.shape[0]
        batched = self.way(w, out, full, gn)[0]
        if k == 1 or batched is False:
            return rec.products(w, T, out, full, gn, batched=False)
        if batched:
            try:
                return rec.products(w, T, out, full, gn, batched=True)
            except (RuntimeError, NotImplementedError) as exc:
                if not _no_batching_rule(exc):
                    raise
                self.batched = False
                return rec.products(w, T, out, full, gn, batched=False)
        if k < 3:
            return rec.products(w, T, out, full, gn, batched=False)
        got = self._measure(rec, w, T, out, full, gn)
        return got if got is not None else self._recorded_products(w, T, out, full, gn)

    def _measure(self, rec: "_Recorded", w: list[str], T: torch.Tensor, out: list[str], full: bool, gn: bool
                 ) -> Products | None:
        """Time 4 directions as plain backwards (their cost per direction does not depend on k) and up
        to 8 as one batched backward (vmapped kernels change with k), each warmed up first, interleaved;
        a second round, keeping the faster run of each, only when the first is within 25 %.  Keep the
        faster way for this shape (:meth:`way`).

        Returns the product of T when the timed runs already computed it the way that won (so
        every product the caller sees runs one way, bitwise as a later call would): the batched
        run when it covered all of T, else the looped rows with the rest of T looped on; None
        when the winner did not run on T (the caller then runs it)."""
        key = (tuple(w), tuple(out), full, gn)
        k = T.shape[0]
        mb = T[: min(8, k)]
        ml = mb[:4]
        rec.products(w, ml[:1], out, full, gn, batched=False)                    # warm-up
        try:
            rec.products(w, mb[:2], out, full, gn, batched=True)
        except (RuntimeError, NotImplementedError) as exc:
            if not _no_batching_rule(exc):
                raise
            self.batched = False
            return None
        runs: dict[str, list[float]] = {"loop": [], "batched": []}
        last: dict[str, Products] = {}
        for _ in range(2):
            for name, m in (("loop", ml), ("batched", mb)):
                t, last[name] = _timed(lambda: rec.products(w, m, out, full, gn, batched=name == "batched"),
                                       T.device)
                runs[name].append(t / m.shape[0])
            fast, slow = sorted(min(ts) for ts in runs.values())
            if fast < 0.8 * slow:                   # clear after one round: spare the session the second
                break
        timings = {name: min(ts) for name, ts in runs.items()}
        batched = timings["batched"] < timings["loop"]
        self.tuning.ways[key] = self.tuning.last = (batched, timings)
        if batched:
            return last["batched"] if mb.shape[0] == k else None
        head = last["loop"]
        if ml.shape[0] == k:
            return head
        rest = rec.products(w, T[ml.shape[0]:], out, full, gn, batched=False)   # looped rows are independent
        cat = lambda a, b: None if a is None else {x: torch.cat([a[x], b[x]]) for x in a}   # noqa: E731
        return Products(cat(head.full, rest.full), cat(head.gn, rest.gn))

    def memory_cost(self, w: Sequence[str], out: Sequence[str], full: bool = True, gn: bool = True
                    ) -> tuple[int, int]:
        """Measured bytes of one :meth:`products` call with k directions: (fixed, per_direction).

        Peak allocation ≈ fixed + k·per_direction, from products with 2 and 4 unit
        directions (:func:`hessexplore.memory.linear_cost`), after a first product (of 8
        directions) that records the graph and chooses batched or looped backwards for this
        shape, so what is measured is what later products do.  The k × d_w direction matrix is included, and per_direction
        is at least twice the output rows (kept, then stacked).  Cached per (w, out, parts).
        """
        from . import memory
        w, out = list(w), list(out)
        key = (tuple(w), tuple(out), full, gn)
        if key not in self._memory:
            d = self.dim(w)
            ref = next(iter(self.problem.base.values()))
            E = _units(0, 8, d, ref)
            self.products(w, E if self.mode == "double-backward" else E[:1], out, full, gn)

            def run(k: int):
                T = E[:k].clone()
                return T, self.products(w, T, out, full, gn)
            fixed, per = memory.linear_cost(run, ref.device)
            # with few directions the working set of one backward hides the rows that pile up: each
            # direction keeps its output rows, and stacking them copies them once more
            rows = 2 * ref.element_size() * self.dim(out) * (int(full) + int(gn))
            self._memory[key] = (fixed, max(per, rows))
        return self._memory[key]

    #: the largest product :meth:`directions_within` measures to check its line
    VERIFY_MAX = 32
    #: :meth:`directions_within` keeps a product's measured duration under about this many seconds
    PRODUCT_SECONDS = 1.0

    def directions_within(self, budget: int, w: Sequence[str], out: Sequence[str], most: int,
                          full: bool = True, gn: bool = True) -> int:
        """How many directions one product may take so that its peak allocation stays within ``budget``.

        From :meth:`memory_cost`'s line.  Looped products cost a fixed working set plus
        one output row per direction, so the line is exact.  Batched ones (and the
        stateless mode's, which vmaps) are convex in k (vmap switches to larger kernels),
        so when the line allows more than 4 batched directions and the budget binds, one
        batched product of that many (at most :attr:`VERIFY_MAX`; results discarded) is
        measured too, and the count re-derived from the slope between it and the 4-direction point.  At most what runs in about
        :attr:`PRODUCT_SECONDS` by the measured time per direction (at least 4), so that
        progress, partial results and cancel are never far apart.  Between 1 and ``most``;
        cached per budget.
        """
        from . import memory
        w, out = list(w), list(out)
        key = (tuple(w), tuple(out), full, gn, int(budget), int(most))
        if key in self._chunks:
            return self._chunks[key]
        fixed, per = self.memory_cost(w, out, full, gn)
        k = int(max(1, min(most, (budget - fixed) // per)))
        batched, timings = self.way(w, out, full, gn)
        vmapped = batched if self.mode == "double-backward" else True
        if vmapped and k > 4 and not (k == most and fixed + k * per <= budget / 2):
            ref = next(iter(self.problem.base.values()))
            d = self.dim(w)
            m = min(k, self.VERIFY_MAX)
            T = _units(0, m, d, ref)
            peak, got = memory.peak_bytes(lambda: self.products(w, T, out, full, gn), ref.device)
            del got, T
            p4 = fixed + 4 * per
            slope = max((peak - p4) / (m - 4), per)
            k = int(max(1, min(most, 4 + (budget - p4) // slope)))
        t = timings.get("batched" if batched else "loop")
        if t:             # short products: progress, partial results and cancel come at least this often
            k = min(k, max(4, int(self.PRODUCT_SECONDS / t)))
        self._chunks[key] = k
        return k

    def iter_dense_columns(self, w: Sequence[str], out: Sequence[str], chunk: int,
                           parts: Sequence[str] = ("full", "gn"),
                           should_stop: Callable[[], bool] | None = None, first: int | None = None,
                           start: int = 0, stop: int | None = None):
        """Yield (start, k, {part: {a: (k, d_a)}}) per chunk of unit vectors e_start … e_{start+k−1}.

        Row i of the chunk is (H_{a,w} e_{start+i})ᵀ, i.e. column start+i of H_{a,w}.
        Columns ``start`` … ``stop`` − 1 (default: all d_w).  Chunks hold ``chunk`` columns;
        with ``first`` they start at ``first`` columns and double up to ``chunk`` (a first
        result after one small product).  ``should_stop`` is polled before every batched
        product (:class:`JobCancelled`).
        """
        w, out = list(w), list(out)
        d_w = self.dim(w) if stop is None else min(stop, self.dim(w))
        ref = next(iter(self.problem.base.values()))
        size = max(1, min(chunk, first)) if first else max(1, chunk)
        while start < d_w:
            if should_stop is not None and should_stop():
                raise JobCancelled()
            k = min(size, d_w - start)
            res = self.products(w, _units(start, k, self.dim(w), ref), out, full="full" in parts, gn="gn" in parts)
            yield start, k, {part: getattr(res, part) for part in parts}
            start += k
            size = min(2 * size, max(1, chunk))

    def dense_columns(self, w: Sequence[str], out: Sequence[str], chunk: int,
                      parts: Sequence[str] = ("full", "gn"),
                      should_stop: Callable[[], bool] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Flat]:
        """Exact H_{a,w} (and GN) for every a in ``out``: {part: {a: (d_a, d_w)}}.

        Sweeps the d_w unit vectors of w's space in chunks of ``chunk``
        columns; each chunk is one vmapped product.
        """
        out = list(out)
        d_w = self.dim(list(w))
        acc: dict[str, dict[str, list[torch.Tensor]]] = {p: {a: [] for a in out} for p in parts}
        for start, k, got in self.iter_dense_columns(w, out, chunk, parts, should_stop):
            for part in parts:
                for a in out:
                    acc[part][a].append(got[part][a])
            if progress is not None:
                progress(start + k, d_w)
        return {p: {a: torch.cat(chunks, dim=0).T for a, chunks in d.items()} for p, d in acc.items()}


def _units(start: int, k: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """(k, d): the unit vectors e_start … e_{start+k−1} as rows (indices modulo d)."""
    T = torch.zeros(k, d, dtype=like.dtype, device=like.device)
    T[torch.arange(k), torch.arange(start, start + k) % d] = 1
    return T


def faster_sweep(recorded: CurvatureOperator, stateless: CurvatureOperator, w: Sequence[str], out: Sequence[str],
                 chunk: int, budget: int, margin: float = 0.85) -> tuple[str, int]:
    """Which operator an exact column sweep should run on: ("double-backward", ``chunk``) or
    ("forward-over-reverse", its own chunk).

    The stateless forward-over-reverse operator (``vmap(jvp(grad))``) redoes the forward and first
    backward for every product but runs its columns as one vmapped computation, which on some models
    and devices (convolutions on CPU) sweeps columns faster than the recorded operator's backwards.
    Its chunk comes from its own measured memory line (capped to about
    :attr:`CurvatureOperator.PRODUCT_SECONDS` per product); then one product of that many unit
    columns is timed against ``min(chunk, 8)`` columns on the recorded operator (full and GN rows,
    results discarded), and the stateless one is kept when its time per column is below ``margin``
    times the recorded one's.  Any failure of the stateless operator (an op without forward-mode AD or
    a batching rule, memory) keeps the recorded one.
    """
    w, out = list(w), list(out)
    d = recorded.dim(w)
    ref = next(iter(recorded.problem.base.values()))
    keep = ("double-backward", chunk)
    batched, timings = recorded.way(w, out)
    t_rec = timings.get("batched" if batched else "loop")
    try:
        k = stateless.directions_within(budget, w, out, d)
        if stateless.mode != "forward-over-reverse" or k < 4:
            return keep
        if t_rec:
            k = min(k, max(4, int(CurvatureOperator.PRODUCT_SECONDS / t_rec)))
        m = max(1, min(chunk, 8, d))
        t_r, _ = _timed(lambda: recorded.products(w, _units(0, m, d, ref), out), ref.device)
        t_s, _ = _timed(lambda: stateless.products(w, _units(0, k, d, ref), out), ref.device)
    except (RuntimeError, NotImplementedError, HessExploreError):
        return keep
    if stateless.mode != "forward-over-reverse" or t_s / k >= margin * t_r / m:
        return keep
    return ("forward-over-reverse", min(k, max(4, int(CurvatureOperator.PRODUCT_SECONDS * k / t_s))))


def _no_batching_rule(exc: BaseException) -> bool:
    """True when torch says an op cannot run under vmap (no batching rule)."""
    msg = str(exc).lower()
    return compat.is_autodiff_error(exc) and ("vmap" in msg or "batching" in msg or "functorch" in msg)


def _timed(fn: Callable, device: torch.device):
    """(seconds, fn()) with the device synchronised around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out


def _has_error_node(t: torch.Tensor, seen: set | None = None) -> bool:
    """True if ``t``'s autograd graph holds the node @once_differentiable leaves to raise later.

    Nodes in ``seen`` (shared across calls: the gradients of many atoms share most of their graph)
    are known clean and skipped."""
    todo = [t.grad_fn]
    seen = set() if seen is None else seen
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__ in ("Error", "DelayedError"):
            return True
        todo.extend(f for f, _ in fn.next_functions)
    return False


class _Recorded:
    """Forward pass and first backward of a :class:`Problem`, recorded once at its base point.

    Keeps the gradient ``g[a] = ∂L/∂u_a = J_aᵀ γ`` with its graph (create_graph), where
    γ = ∂L/∂z is itself a recorded function of z(u).  One backward of Σ_i t_i·g_w through
    that graph yields, for every atom a at once,

        ∂/∂u_a = H_{a,w} t                 (the Hessian-vector product)
        ∂/∂γ   = J_w t                     (the model's tangent: g_w is linear in γ)

    since autograd hands out the gradient reaching the intermediate γ on its way.  Then
    H^GN_{a,w} t = J_aᵀ (∂²L/∂z²) J_w t costs a cheap backward through the loss alone
    and one backward through the forward graph; H^T = H − H^GN.  A product without GN
    part is a single double backward.  k directions run either as one batched backward
    (``is_grads_batched``) or as k plain ones (see :class:`CurvatureOperator`).

    ``gn=False`` records only what full products need: the loss, without the intermediate γ
    and the loss's own gradient graph; :attr:`gn` says which was recorded.  Gradients are
    taken only for the atoms a product differentiates (its ``w``), when first asked: a
    product from a late atom never pays a create_graph backward down to the first one.
    """

    def __init__(self, problem: Problem, gn: bool = True):
        self.problem = problem
        self.atoms = list(problem.dims)
        self.gn = gn
        self.grads: dict[str, torch.Tensor | None] = {}
        self._seen: set = set()          # graph nodes known to be twice differentiable
        with torch.enable_grad():
            self.vals = {a: problem.base[a].detach().clone().requires_grad_(True) for a in self.atoms}
            self.z = problem.output(self.vals)
            if gn:
                (self.gamma,) = torch.autograd.grad(problem.loss_of_output(self.z), self.z, create_graph=True)
                self.z_leaf = self.z.detach().requires_grad_(True)
                (self.gz,) = torch.autograd.grad(problem.loss_of_output(self.z_leaf), self.z_leaf,
                                                 create_graph=True)
            else:
                self.loss = problem.loss_of_output(self.z)

    def gradients(self, atoms: list[str]) -> list[torch.Tensor | None]:
        """g[a] = ∂L/∂u_a with its graph, for each of ``atoms`` (None where L does not depend on u_a);
        the missing ones in one create_graph backward, J_aᵀ γ (GN recording) or of L itself."""
        todo = [a for a in dict.fromkeys(atoms) if a not in self.grads]
        if todo:
            inputs = [self.vals[a] for a in todo]
            with torch.enable_grad():
                if self.gn:
                    got = torch.autograd.grad(self.z, inputs, self.gamma, create_graph=True, retain_graph=True,
                                              allow_unused=True)
                else:
                    got = torch.autograd.grad(self.loss, inputs, create_graph=True, retain_graph=True,
                                              allow_unused=True)
            for a, g in zip(todo, got):
                if a not in self.problem.twice_differentiable:
                    self._check(a, g)
                    self.problem.twice_differentiable.add(a)
                self.grads[a] = g
        return [self.grads[a] for a in atoms]

    def _check(self, a: str, g: torch.Tensor | None) -> None:
        """Refuse a gradient that autograd cannot differentiate again: a backward that detaches or is marked
        @once_differentiable (an "Error" node in its graph) — its Hessian would silently read as 0."""
        if g is not None and ((not g.requires_grad and bool(g.ne(0).any())) or _has_error_node(g, self._seen)):
            raise AutodiffError(
                f"the gradient with respect to {a!r} cannot be differentiated again: an op on its path has a "
                "backward that is not itself differentiable (a custom autograd.Function marked "
                "@once_differentiable, or one whose backward detaches). Give that Function a differentiable "
                "backward (and a jvp), or restrict the analysis to nodes/groups after it.")

    def _backward(self, outputs, inputs, cotangents, k, batched: bool):
        """Σ_i ∂(outputs · cotangents_i)/∂inputs for each of the k cotangents, missing links as zeros:
        (k, *input.shape) per input.  ``batched``: one ``is_grads_batched`` backward, else k plain ones."""
        pairs = [(o, c) for o, c in zip(outputs, cotangents) if o is not None and o.requires_grad]
        if not pairs:
            return [torch.zeros((k,) + tuple(x.shape), dtype=x.dtype, device=x.device) for x in inputs]
        outs, cots = [o for o, _ in pairs], [c for _, c in pairs]
        if batched:
            got = torch.autograd.grad(outs, inputs, cots, retain_graph=True, allow_unused=True,
                                      is_grads_batched=True)
        else:
            rows = [torch.autograd.grad(outs, inputs, [c[i] for c in cots], retain_graph=True, allow_unused=True)
                    for i in range(k)]
            if k == 1:
                got = [None if r is None else r[None] for r in rows[0]]
            else:
                got = [None if all(r[j] is None for r in rows) else
                       torch.stack([r[j] if r[j] is not None else torch.zeros_like(x) for r in rows])
                       for j, x in enumerate(inputs)]
        return [g if g is not None else torch.zeros((k,) + tuple(x.shape), dtype=x.dtype, device=x.device)
                for g, x in zip(got, inputs)]

    def products(self, w: list[str], T: torch.Tensor, out: list[str], full: bool, gn: bool,
                 batched: bool) -> Products:
        """Rows of H_{a,w} Tᵀ and H^GN_{a,w} Tᵀ for a in ``out`` (T: (k, d_w)), as in the class docstring."""
        if gn and not self.gn:
            raise ValueError("this recording has no GN part: record with gn=True")
        k = T.shape[0]
        ts = _split(T, w, self.problem.dims)
        tangents = [ts[a] for a in w]
        outs = [self.vals[a] for a in out] if full else []
        roots = self.gradients(w)
        # a loss linear in z (KLDivLoss of log-probabilities) has a constant ∂L/∂z: its GN part is 0
        curved = gn and self.gamma.requires_grad
        got = self._backward(roots, outs + ([self.gamma] if curved else []), tangents, k, batched)
        full_rows = {a: g.reshape(k, -1) for a, g in zip(out, got)} if full else None
        if not gn:
            return Products(full_rows, None)
        if not curved:
            return Products(full_rows, {a: torch.zeros(k, self.problem.dims[a], dtype=T.dtype, device=T.device)
                                        for a in out})
        (hdz,) = self._backward([self.gz], [self.z_leaf], [got[-1]], k, batched)
        gnr = self._backward([self.z], [self.vals[a] for a in out], [hdz], k, batched)
        return Products(full_rows, {a: g.reshape(k, -1) for a, g in zip(out, gnr)})


