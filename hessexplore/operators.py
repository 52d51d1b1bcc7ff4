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
products are forward-over-reverse (``jvp`` of ``grad``: exact through
LayerNorm/BatchNorm, SCIENCE.md §6); GN products are a ``jvp`` through the
model, a Hessian-vector product of the loss in the outputs (autodiff, so any
mean-reduced loss works), and a cached ``vjp`` back.  One product with a
direction in group w's space yields H_{a,w}·t for *every* atom a at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from .errors import JobCancelled
from .graph import ModelGraph

Flat = dict[str, torch.Tensor]


class Problem:
    """Mean loss as a function of flat atoms.  Subclasses set ``dims``, ``base`` and ``output``."""

    dims: dict[str, int]
    base: Flat

    def __init__(self, loss_of_output: Callable[[torch.Tensor], torch.Tensor]):
        self.loss_of_output = loss_of_output

    def output(self, values: Flat) -> torch.Tensor:  # pragma: no cover - abstract
        """Model output z (B, …) with the given atoms replaced (others at ``base``)."""
        raise NotImplementedError

    def loss(self, values: Flat) -> torch.Tensor:
        return self.loss_of_output(self.output(values))


class ActivationProblem(Problem):
    """Atoms are shared zero perturbations δ_a of graph nodes (per-sample shape, flattened)."""

    def __init__(self, graph: ModelGraph, inputs: tuple, loss_of_output, names: Sequence[str],
                 dtype: torch.dtype, device: torch.device):
        super().__init__(loss_of_output)
        self.names = list(dict.fromkeys(names))
        self.shapes = {n: graph.resolve(n).shape for n in self.names}
        self.dims = {n: math.prod(s) for n, s in self.shapes.items()}
        self.base = {n: torch.zeros(d, dtype=dtype, device=device) for n, d in self.dims.items()}
        self.forward = graph.perturbed_forward(self.names)
        self.inputs = inputs

    def output(self, values: Flat) -> torch.Tensor:
        deltas = [values[n].view(self.shapes[n]) for n in self.names]
        return self.forward(*self.inputs, *deltas)


class ParameterProblem(Problem):
    """Atoms are parameter tensors θ_a (flattened); the others stay at the model's values."""

    def __init__(self, model: nn.Module, inputs: tuple, loss_of_output, names: Sequence[str]):
        super().__init__(loss_of_output)
        params = dict(model.named_parameters())
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.shapes = {n: params[n].shape for n in self.names}
        self.dims = {n: params[n].numel() for n in self.names}
        self.base = {n: params[n].detach().reshape(-1) for n in self.names}
        self.inputs = inputs

    def output(self, values: Flat) -> torch.Tensor:
        params = {n: values[n].view(self.shapes[n]) for n in self.names}
        return functional_call(self.model, params, self.inputs)


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

    def __init__(self, problem: Problem, chunk_size: int | None = None):
        self.problem = problem
        self.chunk_size = chunk_size
        self._vjp_cache: dict[tuple[str, ...], tuple[torch.Tensor, Callable]] = {}

    def dim(self, atoms: Sequence[str]) -> int:
        return sum(self.problem.dims[a] for a in atoms)

    def _full(self, w: list[str], T: torch.Tensor, out: list[str]) -> Flat:
        p = self.problem
        base = p.base
        others = {a: base[a] for a in out if a not in w}
        wbase = {a: base[a] for a in w}

        def gradient(wvals: Flat) -> Flat:
            def L(ovals, wv):
                return p.loss({**base, **ovals, **wv})
            go, gw = grad(L, argnums=(0, 1))(others, wvals)
            return {a: (go[a] if a in go else gw[a]) for a in out}

        def column(t: torch.Tensor) -> Flat:
            return jvp(gradient, (wbase,), (_split(t, w, p.dims),))[1]

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
        loss_grad = grad(p.loss_of_output)

        def column(t: torch.Tensor) -> Flat:
            _, dz = jvp(lambda wv: p.output({**base, **wv}), (wbase,), (_split(t, w, p.dims),))
            _, hdz = jvp(loss_grad, (z,), (dz,))
            return pullback(hdz)[0]

        return vmap(column, chunk_size=self.chunk_size)(T)

    @torch.no_grad()
    def products(self, w: Sequence[str], T: torch.Tensor, out: Sequence[str],
                 full: bool = True, gn: bool = True) -> Products:
        """Rows of H_{a,w} Tᵀ (and GN) for a in ``out``; T is (k, d_w)."""
        w, out = list(w), list(out)
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
