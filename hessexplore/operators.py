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

* ``"forward-over-reverse"`` (``vmap(jvp(grad))``): stateless; used for exact
  column sweeps.  GN products are a ``jvp`` through the model, a
  Hessian-vector product of the loss in its outputs, and a cached ``vjp``.
* ``"double-backward"``: the forward pass and the first backward are recorded
  once (``create_graph=True``) and every batch of directions costs one
  batched backward (``is_grads_batched``); J t comes from the double-vjp
  trick.  Nothing constant across probes is recomputed: used for streaming.

The loss Hessian in the outputs is always taken by autodiff, so any
mean-reduced loss works.  One product with a direction in group w's space
yields H_{a,w}·t for *every* atom a at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.func import grad, jvp, vjp, vmap

from . import compat
from .compat import curvature_mode
from .errors import AutodiffError, JobCancelled
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

    def __init__(self, loss_fn: Callable, targets):
        self.loss_fn = loss_fn
        self.targets = targets

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
        return self.forward(*[values[n].view(self.shapes[n]) for n in self.names])


class ParameterProblem(Problem):
    """Atoms are parameter tensors θ_a (flattened, canonical names); the others stay at the model's values.

    ``forward(params)`` is the model output with the given parameters replaced;
    it never writes into the user's modules (a captured graph takes them as
    arguments, or a private structural twin is re-parametrised).
    """

    def __init__(self, params: dict[str, torch.Tensor], forward: Callable[[Flat], torch.Tensor], loss_fn,
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
        return self.forward({n: values[n].view(self.shapes[n]) for n in self.names})


def _split(t: torch.Tensor, atoms: Sequence[str], dims: dict[str, int]) -> Flat:
    return dict(zip(atoms, torch.split(t, [dims[a] for a in atoms], dim=-1)))


@dataclass
class Products:
    """Results of one batched product, each (k, d_a) per output atom: row i is (H t_i)_a."""

    full: Flat | None
    gn: Flat | None

    def rows(self, part: str, atoms: Sequence[str]) -> torch.Tensor:
        """Concatenate the output atoms of a group: (k, d_group)."""
        got = getattr(self, part)
        if part == "tensor":
            return self.rows("full", atoms) - self.rows("gn", atoms)
        return torch.cat([got[a] for a in atoms], dim=-1)


class CurvatureOperator:
    """Batched products with H and H^GN of a :class:`Problem` (see module docstring).

    ``products(w, T, out)`` takes T (k, d_w) — k directions in the space of
    the atoms ``w`` — and returns, for every atom a in ``out``, the rows
    (H_{a,w} t_i)ᵀ and (H^GN_{a,w} t_i)ᵀ stacked as (k, d_a).
    """

    MODES = ("forward-over-reverse", "double-backward")

    def __init__(self, problem: Problem, mode: str = "forward-over-reverse", chunk_size: int | None = None):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        self.problem = problem
        self.mode = mode
        self.chunk_size = chunk_size
        self._vjp_cache: dict[tuple[str, ...], tuple[torch.Tensor, Callable]] = {}
        self._recorded: _Recorded | None = None
        self.fallback: str | None = None      # set when the operator had to change mode

    def dim(self, atoms: Sequence[str]) -> int:
        return sum(self.problem.dims[a] for a in atoms)

    def _full(self, w: list[str], T: torch.Tensor, out: list[str]) -> Flat:
        p = self.problem
        base = p.base
        others = {a: base[a] for a in out if a not in w}
        wbase = {a: base[a] for a in w}
        y0 = p.targets

        def gradient(wvals: Flat, y) -> Flat:
            def L(ovals, wv):
                return p.loss({**base, **ovals, **wv}, y)
            go, gw = grad(L, argnums=(0, 1))(others, wvals)
            return {a: (go[a] if a in go else gw[a]) for a in out}

        if p._dual_targets():
            def column(t: torch.Tensor) -> Flat:
                return jvp(gradient, (wbase, y0), (_split(t, w, p.dims), torch.zeros_like(y0)))[1]
        else:
            def column(t: torch.Tensor) -> Flat:
                return jvp(lambda wv: gradient(wv, y0), (wbase,), (_split(t, w, p.dims),))[1]

        return vmap(column, chunk_size=self.chunk_size)(T)

    @torch.no_grad()
    def _output_vjp(self, out: list[str]):
        key = tuple(out)
        if key not in self._vjp_cache:
            p = self.problem
            base = p.base
            z, pullback = vjp(lambda ovals: p.output({**base, **ovals}), {a: base[a] for a in out})
            self._vjp_cache[key] = (z.detach(), pullback)
        return self._vjp_cache[key]

    def _gn(self, w: list[str], T: torch.Tensor, out: list[str]) -> Flat:
        p = self.problem
        base = p.base
        z, pullback = self._output_vjp(out)
        wbase = {a: base[a] for a in w}
        loss_grad = grad(p.loss_of_output)   # ∂L/∂z as a function of (z, y)
        y0 = p.targets
        dual = p._dual_targets()

        def column(t: torch.Tensor) -> Flat:
            _, dz = jvp(lambda wv: p.output({**base, **wv}), (wbase,), (_split(t, w, p.dims),))
            if dual:
                _, hdz = jvp(loss_grad, (z, y0), (dz, torch.zeros_like(y0)))
            else:
                _, hdz = jvp(lambda zz: loss_grad(zz, y0), (z,), (dz,))
            return pullback(hdz)[0]

        return vmap(column, chunk_size=self.chunk_size)(T)

    @torch.no_grad()
    def products(self, w: Sequence[str], T: torch.Tensor, out: Sequence[str],
                 full: bool = True, gn: bool = True) -> Products:
        """Rows of H_{a,w} Tᵀ (and GN) for a in ``out``; T is (k, d_w).

        Runs under :func:`~hessexplore.compat.curvature_mode`.  When an op of the
        model has no forward-mode derivative, the operator switches itself to
        ``"double-backward"`` (same numbers, reverse-over-reverse) and says so in
        ``fallback``; an op without any second derivative raises
        :class:`~hessexplore.errors.AutodiffError` naming the op and module.
        """
        w, out = list(w), list(out)
        with curvature_mode():
            try:
                return self._products(w, T, out, full, gn)
            except (RuntimeError, NotImplementedError) as exc:
                if not compat.is_autodiff_error(exc):
                    raise
                if self.mode == "double-backward":
                    raise AutodiffError(compat.explain_autodiff_error(exc, self.problem.locate)) from exc
                self.fallback = (f"forward-mode AD is not available for "
                                 f"'{compat.failing_op(exc) or 'an op'}': products use double backward")
                self.mode = "double-backward"
                try:
                    return self._products(w, T, out, full, gn)
                except (RuntimeError, NotImplementedError) as exc2:
                    if not compat.is_autodiff_error(exc2):
                        raise
                    raise AutodiffError(compat.explain_autodiff_error(
                        exc2, self.problem.locate, tried=" (tried forward-over-reverse and double backward)")
                    ) from exc2

    def _products(self, w: list[str], T: torch.Tensor, out: list[str], full: bool, gn: bool) -> Products:
        if self.mode == "double-backward":
            if self._recorded is None:
                self._recorded = _Recorded(self.problem)
            rec = self._recorded
            return Products(rec.full(w, T, out) if full else None, rec.gn(w, T, out) if gn else None)
        return Products(self._full(w, T, out) if full else None,
                        self._gn(w, T, out) if gn else None)

    def dense_columns(self, w: Sequence[str], out: Sequence[str], chunk: int,
                      parts: Sequence[str] = ("full", "gn"),
                      should_stop: Callable[[], bool] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Flat]:
        """Exact H_{a,w} (and GN) for every a in ``out``: {part: {a: (d_a, d_w)}}.

        Sweeps the d_w unit vectors of w's space in chunks of ``chunk``
        columns; each chunk is one vmapped product.
        """
        w, out = list(w), list(out)
        d_w = self.dim(w)
        ref = next(iter(self.problem.base.values()))
        acc: dict[str, dict[str, list[torch.Tensor]]] = {p: {a: [] for a in out} for p in parts}
        for start in range(0, d_w, chunk):
            if should_stop is not None and should_stop():
                raise JobCancelled()
            k = min(chunk, d_w - start)
            T = torch.zeros(k, d_w, dtype=ref.dtype, device=ref.device)
            T[torch.arange(k), torch.arange(start, start + k)] = 1
            res = self.products(w, T, out, full="full" in parts, gn="gn" in parts)
            for part in parts:
                got = getattr(res, part)
                for a in out:
                    acc[part][a].append(got[a])
            if progress is not None:
                progress(start + k, d_w)
        return {p: {a: torch.cat(chunks, dim=0).T for a, chunks in d.items()} for p, d in acc.items()}


def _has_error_node(t: torch.Tensor) -> bool:
    """True if ``t``'s autograd graph holds the node @once_differentiable leaves to raise later."""
    todo, seen = [t.grad_fn], set()
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

    Keeps ``g = ∂L/∂u`` with its graph (create_graph) so that H_{a,w} t =
    ∂(g_w·t)/∂u_a is one backward; and, for GN, ``Jᵀ ν`` as a linear function
    of a dummy cotangent ν so that J_w t = ∂(J_wᵀν·t)/∂ν (double-vjp trick),
    the loss gradient in the outputs ``∂L/∂z`` for H_z, and z itself for Jᵀ.
    Every product is batched over the k directions with ``is_grads_batched``.
    """

    def __init__(self, problem: Problem):
        self.problem = problem
        self.atoms = list(problem.dims)
        with torch.enable_grad():
            self.vals = {a: problem.base[a].detach().clone().requires_grad_(True) for a in self.atoms}
            inputs = list(self.vals.values())
            self.z = problem.output(self.vals)
            loss = problem.loss_of_output(self.z)
            self.grads = dict(zip(self.atoms, torch.autograd.grad(loss, inputs, create_graph=True,
                                                                  allow_unused=True)))
            self.z_leaf = self.z.detach().requires_grad_(True)
            (self.gz,) = torch.autograd.grad(problem.loss_of_output(self.z_leaf), self.z_leaf, create_graph=True)
            self.nu = torch.zeros_like(self.z, requires_grad=True)
            self.jt_nu = dict(zip(self.atoms, torch.autograd.grad(self.z, inputs, self.nu, create_graph=True,
                                                                  allow_unused=True)))
        for a, g in self.grads.items():
            # a gradient that autograd cannot differentiate again: a backward that detaches or is marked
            # @once_differentiable (an "Error" node in its graph) — its Hessian would silently read as 0
            if g is not None and ((not g.requires_grad and bool(g.ne(0).any())) or _has_error_node(g)):
                raise AutodiffError(
                    f"the gradient with respect to {a!r} cannot be differentiated again: an op on its path has a "
                    "backward that is not itself differentiable (a custom autograd.Function marked "
                    "@once_differentiable, or one whose backward detaches). Give that Function a differentiable "
                    "backward (and a jvp), or restrict the analysis to nodes/groups after it.")

    batched = True   # is_grads_batched (vmap) works for this model; False: one backward per direction

    def _backward(self, outputs, inputs, cotangents, k):
        """Batched Σ_i ∂(outputs_i · cotangents_i)/∂inputs with missing links as zeros: (k, *input.shape).

        One ``is_grads_batched`` backward; if an op of the model has no vmap rule,
        one backward per direction from then on (same numbers).
        """
        pairs = [(o, c) for o, c in zip(outputs, cotangents) if o is not None and o.requires_grad]
        if not pairs:
            return [torch.zeros((k,) + tuple(x.shape), dtype=x.dtype, device=x.device) for x in inputs]
        outs, cots = [o for o, _ in pairs], [c for _, c in pairs]
        got = None
        if self.batched:
            try:
                got = torch.autograd.grad(outs, inputs, cots, retain_graph=True, allow_unused=True,
                                          is_grads_batched=True)
            except (RuntimeError, NotImplementedError) as exc:
                if not compat.is_autodiff_error(exc) or "vmap" not in str(exc).lower() and \
                        "batching" not in str(exc).lower() and "functorch" not in str(exc):
                    raise
                self.batched = False
        if got is None:
            rows = [torch.autograd.grad(outs, inputs, [c[i] for c in cots], retain_graph=True, allow_unused=True)
                    for i in range(k)]
            got = [None if all(r[j] is None for r in rows) else
                   torch.stack([r[j] if r[j] is not None else torch.zeros_like(x) for r in rows])
                   for j, x in enumerate(inputs)]
        return [g if g is not None else torch.zeros((k,) + tuple(x.shape), dtype=x.dtype, device=x.device)
                for g, x in zip(got, inputs)]

    def full(self, w: list[str], T: torch.Tensor, out: list[str]) -> Flat:
        k = T.shape[0]
        ts = _split(T, w, self.problem.dims)
        got = self._backward([self.grads[a] for a in w], [self.vals[a] for a in out], [ts[a] for a in w], k)
        return dict(zip(out, got))

    def gn(self, w: list[str], T: torch.Tensor, out: list[str]) -> Flat:
        k = T.shape[0]
        ts = _split(T, w, self.problem.dims)
        (dz,) = self._backward([self.jt_nu[a] for a in w], [self.nu], [ts[a] for a in w], k)
        (hdz,) = self._backward([self.gz], [self.z_leaf], [dz], k)
        got = self._backward([self.z], [self.vals[a] for a in out], [hdz], k)
        return dict(zip(out, got))
