"""A curvature analysis session: one model, one mean-reduced loss, one batch.

    s = Session(model, loss_fn, (x, y), dtype=None)
    s.nodes, s.groups                   # what can be addressed
    s.block(v, w, space=...)            # exact dense block with GN / tensor parts
    s.coupling(v, w), s.coupling_map(), s.phi()
    for snap in s.estimate(v, w, probes=200): ...   # streaming estimates

Everything runs on the model's device.  With ``dtype=None`` the session reads
the model's parameters live (results follow training); with a ``dtype`` it
works on a private converted copy.
"""
from __future__ import annotations

import copy
import inspect
import threading
import warnings
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

from . import metrics
from .errors import BlockTooLargeError, HessExploreError, LossError, ModelStateError
from .estimators import EstimateSnapshot, stream_block
from .capture import capture as _capture
from .capture import select_output, structural_twin
from .compat import curvature_mode
from .errors import TracingError
from .graph import ModelGraph, Node, ParameterGroups
from .operators import ActivationProblem, CurvatureOperator, ParameterProblem
from .results import Block, CouplingMap

if TYPE_CHECKING:  # spectra is imported lazily by the methods that need it
    from .spectra import Spectrum

SPACES = ("activation", "parameter")
_STOCHASTIC_MODULES = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def _check_modes(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if m.training and isinstance(m, _STOCHASTIC_MODULES):
            what = "BatchNorm" if isinstance(m, nn.modules.batchnorm._BatchNorm) else "Dropout"
            why = ("in train mode it normalises with batch statistics, which couples the samples and "
                   "breaks the per-sample Hessian" if what == "BatchNorm" else
                   "in train mode it is random, so the Hessian would change from call to call")
            raise ModelStateError(f"module {name!r} ({type(m).__name__}) is in train mode: {why}. "
                                  "Call model.eval() before creating the session.")


def _check_finite_params(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise ModelStateError(f"parameter {name!r} contains NaN or Inf; curvature is undefined there. "
                                  "Check the training run or reload a finite checkpoint.")


def _takes(model: nn.Module, arg: str) -> bool:
    try:
        return arg in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _to(t, device, dtype):
    if torch.is_tensor(t):
        t = t.detach().to(device)
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t
    if isinstance(t, (tuple, list)):
        return type(t)(_to(a, device, dtype) for a in t)
    return t


class Session:
    """Curvature of ``loss_fn(model(x), y)`` (a batch mean) on one batch.

    Parameters
    ----------
    model : nn.Module in eval mode (no train-mode BatchNorm/Dropout).
    loss_fn : callable (z, y) -> scalar, the **mean** over the batch of per-sample losses.
    batch : (x, y); x a tensor (B, …), a tuple of positional model inputs, or a dict of keyword
        inputs (e.g. HF ``{"input_ids": ..., "attention_mask": ...}``); integer inputs are fine.
    dtype : None (use the model's), or e.g. torch.float64 for teaching-grade exactness.
    output : which output the loss is applied to when the model returns a tuple, dict or
        ``ModelOutput``: a key (``"logits"``), an index, or a callable; default its first tensor.
    capture : "auto" (torch.fx, else torch.export), "fx" or "export"; ``s.graph.backend`` says which ran.
    leaf_modules : module names that torch.fx should not trace into (fx capture only).
    trace : False skips capturing (parameter space only).
    max_exact_dim : largest swept dimension for exact blocks (columns = Hessian-vector products).
    memory_budget : bytes per batched product (default 1 GiB on CPU, ¼ of free GPU memory).
    check_loss : verify that loss_fn is a per-sample mean (needs loss_fn to accept single samples).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, batch, dtype: torch.dtype | None = None, *,
                 output=None, capture: str = "auto", leaf_modules: Sequence[str] = (), trace: bool = True,
                 max_exact_dim: int = 8192, memory_budget: int | None = None, check_loss: bool = True):
        if not isinstance(model, nn.Module):
            raise HessExploreError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise HessExploreError("batch must be a pair (x, y): inputs and targets for loss_fn(model(x), y)")
        _check_modes(model)
        _check_finite_params(model)
        p0 = next(model.parameters(), None)
        if p0 is None:
            raise HessExploreError("the model has no parameters; there is no curvature to analyse")
        self.device = p0.device
        if dtype is not None and dtype != p0.dtype:
            model = copy.deepcopy(model).to(dtype)
        self.dtype = dtype or p0.dtype
        self.model = model
        self.loss_fn = loss_fn
        self.output_selector = output
        x, y = batch
        if isinstance(x, dict):
            self.inputs, self.input_kwargs = (), {k: _to(v, self.device, self.dtype) for k, v in x.items()}
        elif isinstance(x, (tuple, list)):
            self.inputs, self.input_kwargs = tuple(_to(x, self.device, self.dtype)), {}
        else:
            self.inputs, self.input_kwargs = (_to(x, self.device, self.dtype),), {}
        self.targets = _to(y, self.device, self.dtype)
        if _takes(model, "use_cache") and "use_cache" not in self.input_kwargs:
            self.input_kwargs["use_cache"] = False    # HF: a key/value cache is no part of the curvature
        first = next((t for t in list(self.inputs) + list(self.input_kwargs.values()) if torch.is_tensor(t)), None)
        if first is None or first.dim() == 0:
            raise HessExploreError("the model inputs must include a tensor with the batch as first dimension "
                                   "(x a tensor, a tuple of positional inputs, or a dict of keyword inputs)")
        for t in list(self.inputs) + list(self.input_kwargs.values()):
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise HessExploreError("the input batch x contains NaN or Inf, so the loss and its curvature "
                                       "are undefined: drop or impute those samples (e.g. x[torch.isfinite(x)"
                                       ".flatten(1).all(1)]) before creating the session")
        self.batch_size = int(first.shape[0])
        self.max_exact_dim = int(max_exact_dim)
        self.memory_budget = memory_budget
        self._check_output_and_loss(check_loss)
        self.graph = ModelGraph(_capture(model, self.inputs, self.input_kwargs, output=output, backend=capture,
                                         leaf_modules=leaf_modules), model) if trace else None
        self.param_groups = ParameterGroups(model)
        self._twin_forward = None
        self._ops: dict = {}

    # -- validation --------------------------------------------------------------------------
    def _check_output_and_loss(self, check_loss: bool) -> None:
        with torch.no_grad(), curvature_mode():
            out = self.model(*self.inputs, **self.input_kwargs)
        try:
            z = select_output(out, self.output_selector)
        except TracingError as exc:
            raise HessExploreError(f"{exc}. For a model returning a tuple, dict or ModelOutput, pass "
                                   "Session(..., output=...) naming the tensor the loss is applied to "
                                   "(e.g. output='logits'); by default its first tensor is used") from exc
        if z.dim() == 0 or z.shape[0] != self.batch_size:
            raise HessExploreError(f"the model output has shape {tuple(z.shape)}; its first dimension must be "
                                   f"the batch ({self.batch_size})")
        red = getattr(self.loss_fn, "reduction", "mean")
        if red != "mean":
            raise LossError(f"loss_fn has reduction={red!r}; hessexplore needs the batch mean "
                            "L = (1/B) Σ_b ℓ_b. Use reduction='mean'.")
        try:
            with torch.no_grad():
                L = self.loss_fn(z, self.targets)
        except Exception as exc:  # noqa: BLE001
            raise LossError(f"loss_fn(model(x), y) failed: {exc}") from exc
        if not torch.is_tensor(L) or L.numel() != 1 or L.dim() > 1:
            shape = tuple(L.shape) if torch.is_tensor(L) else type(L).__name__
            raise LossError(f"loss_fn must return a scalar (the batch mean), got {shape}. "
                            "Use reduction='mean'.")
        if not bool(torch.isfinite(L)):
            raise LossError(f"the loss on this batch is {float(L)}; check the model, the data and the labels")
        if check_loss and self.batch_size > 1:
            self._check_mean_reduction(z, float(L))

    def _check_mean_reduction(self, z: torch.Tensor, L: float) -> None:
        y = self.targets
        try:
            with torch.no_grad():
                per = torch.stack([self.loss_fn(z[b:b + 1], y[b:b + 1]).reshape(())
                                   for b in range(self.batch_size)])
        except Exception:  # noqa: BLE001 - a loss that can't take single samples: can't check
            warnings.warn("could not evaluate loss_fn on single samples to check that it is a batch mean; "
                          "pass check_loss=False to silence", stacklevel=3)
            return
        mean = float(per.mean())
        tol = 1e-4 * max(abs(L), abs(mean), 1e-6) if self.dtype != torch.float64 else 1e-9 * max(abs(L), 1e-12)
        if abs(L - mean) <= tol:
            return
        if abs(L - self.batch_size * mean) <= tol * self.batch_size:
            raise LossError("loss_fn looks sum-reduced (it equals B × the mean of per-sample losses); "
                            "hessexplore needs the batch mean L = (1/B) Σ_b ℓ_b. Use reduction='mean'.")
        raise LossError(f"loss_fn is not the mean of per-sample losses (batch loss {L:.6g}, mean of "
                        f"per-sample losses {mean:.6g}); class weights or batch-coupled terms break the "
                        "per-sample definition. Pass check_loss=False if this is intended.")

    def _check_finite(self) -> None:
        _check_finite_params(self.model)

    # -- names ---------------------------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        """Addressable activation nodes, topological order (a module name addresses its output too)."""
        return self._graph().names

    @property
    def groups(self) -> list[str]:
        """Parameter groups: qualified names of modules that own parameters."""
        return list(self.param_groups.names)

    def node(self, name: str) -> Node:
        """The :class:`~hessexplore.graph.Node` addressed by ``name``."""
        return self._graph().resolve(name)

    def _graph(self) -> ModelGraph:
        if self.graph is None:
            raise HessExploreError("this session was created with trace=False: activation space is unavailable")
        return self.graph

    def _atoms(self, name: str, space: str) -> list[str]:
        """The atoms (node names or parameter names) of a node/group."""
        if space == "activation":
            return [self._graph().resolve(name).name]
        if space == "parameter":
            return self.param_groups.resolve(name)
        raise HessExploreError(f"space must be 'activation' or 'parameter', got {space!r}")

    def dim(self, name: str, space: str = "activation") -> int:
        """d_v: per-sample size of a node, or number of parameters of a group."""
        if space == "activation":
            return self._graph().resolve(name).numel
        return sum(self.param_groups.params[p].numel() for p in self._atoms(name, space))

    # -- operators ------------------------------------------------------------------------------
    def _fingerprint(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    def operator(self, atoms: Sequence[str], space: str, mode: str = "forward-over-reverse") -> CurvatureOperator:
        """A :class:`CurvatureOperator` over the given atoms (cached while the weights are unchanged).

        ``mode="double-backward"`` records the forward and first backward once
        (fast repeated products, holds the graph); the default is stateless.
        """
        atoms = list(dict.fromkeys(atoms))
        key = (space, tuple(atoms), mode, self._fingerprint())
        op = self._ops.get(key)
        if op is None:
            if space == "activation":
                problem = ActivationProblem(self._graph(), self.loss_fn, self.targets, atoms,
                                            self.dtype, self.device)
            else:
                problem = ParameterProblem(self.param_groups.params, self._parameter_forward(), self.loss_fn,
                                           self.targets, atoms)
            if self.graph is not None:
                problem.locate = self.graph.locate
            op = CurvatureOperator(problem, mode)
            if len(self._ops) >= 8:   # recorded operators hold a graph each
                self._ops.clear()
            self._ops[key] = op
        return op

    def _parameter_forward(self) -> Callable[[dict], torch.Tensor]:
        """z(θ): the model output with some parameters replaced, never writing into the user's modules.

        Through the captured graph when there is one, else through a private
        structural twin of the model (re-parametrised under a lock).
        """
        if self.graph is not None:
            fwd = self.graph.perturbed_forward([])
            return lambda params: fwd(params=params)
        if self._twin_forward is None:
            twin, lock = structural_twin(self.model), threading.RLock()
            inputs, kwargs, sel = self.inputs, self.input_kwargs, self.output_selector

            def forward(params: dict) -> torch.Tensor:
                with lock:
                    return select_output(functional_call(twin, params, inputs, kwargs), sel)
            self._twin_forward = forward
        return self._twin_forward

    def _watch(self, it: Iterator, what: str) -> Iterator:
        """Pass ``it`` through, refusing to mix weights: raise if the parameters change in between."""
        fp0 = self._fingerprint()
        try:
            for item in it:
                self._same_weights(fp0, what)
                yield item
        except (RuntimeError, NotImplementedError) as exc:   # autograd's own check of the saved weights
            self._same_weights(fp0, what, exc)
            raise

    def _same_weights(self, fp0: tuple, what: str, cause: BaseException | None = None) -> None:
        if self._fingerprint() != fp0:
            raise ModelStateError(
                f"the model's weights changed while the {what} was being computed (training in another thread "
                "or cell?), so its numbers would mix old and new weights. Run it again while the weights stay "
                "fixed, or analyse a copy: Session(copy.deepcopy(model), ...)") from cause

    def _chunk(self, space: str, d_w: int) -> int:
        item = torch.empty((), dtype=self.dtype).element_size()
        act = self.graph.activation_numel() if self.graph is not None else 0
        per_sample = max(act, 1)
        per_col = item * (6 * self.batch_size * per_sample + 2 * sum(p.numel() for p in self.model.parameters()))
        budget = self.memory_budget
        if budget is None:
            if self.device.type == "cuda":
                budget = torch.cuda.mem_get_info(self.device)[0] // 4
            else:
                budget = 1 << 30
        return int(max(1, min(d_w, budget // max(per_col, 1))))

    def _check_exact(self, name: str, space: str, other: str) -> int:
        d = self.dim(name, space)
        if d > self.max_exact_dim:
            raise BlockTooLargeError(
                f"the exact block needs {d:,} Hessian-vector products (one per column of {name!r}, "
                f"{space} space), over the limit max_exact_dim={self.max_exact_dim:,}. Use "
                f"s.estimate({other!r}, {name!r}, space={space!r}) for streaming estimates with error bars, "
                "or raise the limit with Session(..., max_exact_dim=...).")
        return d

    def _sweep_many(self, ws: Sequence[str], outs: Sequence[str], space: str, should_stop=None, progress=None
                    ) -> dict[str, dict[tuple[str, str], torch.Tensor]]:
        """Exact blocks {part: {(o, w): H_{o,w} (d_o, d_w)}} for every o in ``outs``, w in ``ws``.

        One column sweep over the atoms of all ``ws`` together (vmapped in
        memory-budgeted chunks): each column t = e_j gives H_{a,·} e_j for
        every atom a at once.
        """
        self._check_finite()
        w_atoms = {w: self._atoms(w, space) for w in ws}
        out_atoms = {o: self._atoms(o, space) for o in outs}
        W = list(dict.fromkeys(a for atoms in w_atoms.values() for a in atoms))
        all_atoms = list(dict.fromkeys([a for atoms in out_atoms.values() for a in atoms] + W))
        op = self.operator(all_atoms, space)
        offsets, at = {}, 0
        for a in W:
            offsets[a] = (at, at + op.problem.dims[a])
            at += op.problem.dims[a]
        fp0 = self._fingerprint()
        try:
            cols = op.dense_columns(W, all_atoms, self._chunk(space, at), should_stop=should_stop,
                                    progress=progress)
        except (RuntimeError, NotImplementedError) as exc:
            self._same_weights(fp0, "exact block", exc)
            raise
        self._same_weights(fp0, "exact block")
        out: dict[str, dict[tuple[str, str], torch.Tensor]] = {}
        for part, per_atom in cols.items():
            rows = {o: torch.cat([per_atom[a] for a in atoms], dim=0) for o, atoms in out_atoms.items()}
            out[part] = {(o, w): torch.cat([rows[o][:, slice(*offsets[a])] for a in w_atoms[w]], dim=1)
                         for o in outs for w in ws}
        return out

    def _sweep(self, w: str, outs: Sequence[str], space: str, should_stop=None, progress=None
               ) -> dict[str, dict[str, torch.Tensor]]:
        """Exact columns of group w: {part: {out: H_{out,w} (d_out, d_w)}} for every out group."""
        got = self._sweep_many([w], outs, space, should_stop, progress)
        return {part: {o: blocks[(o, w)] for o in outs} for part, blocks in got.items()}

    # -- exact ---------------------------------------------------------------------------------
    def block(self, v: str, w: str, space: str = "activation", *,
              should_stop: Callable[[], bool] | None = None,
              progress: Callable[[int, int], None] | None = None) -> Block:
        """The exact block H_{v,w} (d_v, d_w) with its GN and tensor parts.

        Activation space: H_{v,w} = ∂²L/∂δ_v∂δ_w at δ = 0 with δ shared by all
        samples (= the batch average of per-sample Hessians in f_v, f_w).
        Parameter space: ∂²L/∂θ_v∂θ_w over the parameters under each module.
        Costs min(d_v, d_w) Hessian-vector products: the smaller group is
        swept, so ``block(w, v)`` is bitwise ``block(v, w).transpose()``.
        """
        self._atoms(v, space), self._atoms(w, space)  # validate names first
        dv, dw = self.dim(v, space), self.dim(w, space)
        sweep_w = dw < dv or (dw == dv and self._order(w, space) >= self._order(v, space))
        if v == w or self._same(v, w, space):
            self._check_exact(w, space, v)
            cols = self._sweep(w, [w], space, should_stop, progress)
            full, gn = cols["full"][w], cols["gn"][w]
            return Block(v, w, space, (full + full.T) / 2, (gn + gn.T) / 2)
        if sweep_w:
            self._check_exact(w, space, v)
            cols = self._sweep(w, [v], space, should_stop, progress)
            return Block(v, w, space, cols["full"][v], cols["gn"][v])
        self._check_exact(v, space, w)
        cols = self._sweep(v, [w], space, should_stop, progress)
        return Block(w, v, space, cols["full"][w], cols["gn"][w]).transpose()

    def _same(self, v: str, w: str, space: str) -> bool:
        return self._atoms(v, space) == self._atoms(w, space)

    def _order(self, name: str, space: str) -> int:
        if space == "activation":
            return self._graph().names.index(self._graph().resolve(name).name)
        return list(self.param_groups.params).index(self._atoms(name, space)[0])

    def coupling(self, v: str, w: str, space: str = "activation") -> float:
        """C(v, w) = ‖H_vw‖_F / sqrt(‖H_vv‖_F ‖H_ww‖_F), exact (NaN if the denominator < 1e-12)."""
        if self._same(v, w, space):   # C(v, v) = ‖H_vv‖ / ‖H_vv‖
            return float(self.coupling_map([v], space=space).C[0, 0])
        return float(self.coupling_map([v, w], space=space).C[0, 1])

    def coupling_map(self, nodes: Sequence[str] | None = None, space: str = "activation", **kw) -> CouplingMap:
        """Exact norms of every block among ``nodes`` (default: all nodes, or all groups).

        One column sweep per node gives H_{u,w} for every u at once, so the
        map costs Σ_w d_w Hessian-vector products.  See :class:`CouplingMap`.
        """
        last = None
        for last in self.iter_coupling_map(nodes, space=space, **kw):
            pass
        return last

    def iter_coupling_map(self, nodes: Sequence[str] | None = None, space: str = "activation", *,
                          should_stop: Callable[[], bool] | None = None,
                          stable_rank: bool = True) -> Iterator[CouplingMap]:
        """Yield the coupling map as it fills (``filled`` marks what is computed).

        Consecutive nodes whose columns fit one memory-budgeted chunk are swept
        together (one batched product for all their columns); a map is yielded
        after each such sweep.  ``stable_rank=False`` skips the SVD of every
        block (``D`` is then NaN), for callers that only need norms.
        """
        if nodes is None:
            nodes = self.nodes if space == "activation" else self.groups
        names = list(dict.fromkeys(nodes))
        for n in names:
            self._atoms(n, space)
        for n in names:
            self._check_exact(n, space, n)
        k = len(names)
        z = lambda: torch.zeros(k, k, dtype=torch.float64)  # noqa: E731
        R, G, T, D = z(), z(), z(), z()
        filled = torch.zeros(k, k, dtype=torch.bool)
        dist = self._graph().distances(names) if space == "activation" else \
            (torch.arange(k)[None] - torch.arange(k)[:, None]).abs()
        dims = [self.dim(n, space) for n in names]
        # sweep the smaller side of each pair (ties: the later one), as block() does
        owner = [[j if (dims[j] < dims[i] or (dims[j] == dims[i] and j >= i)) else i for j in range(k)]
                 for i in range(k)]
        # pack consecutive nodes into one sweep while their columns fit one memory-budgeted chunk
        max_cols = self._chunk(space, 1 << 62)
        packs: list[list[int]] = []
        cols_in_pack = 0
        for j in range(k):
            if packs and cols_in_pack + dims[j] <= max_cols:
                packs[-1].append(j)
                cols_in_pack += dims[j]
            else:
                packs.append([j])
                cols_in_pack = dims[j]
        for pack in packs:
            cols = self._sweep_many([names[j] for j in pack], names, space, should_stop)
            for j in pack:
                w = names[j]
                for i, v in enumerate(names):
                    if owner[i][j] != j:
                        continue
                    full, gn = cols["full"][(v, w)], cols["gn"][(v, w)]
                    if i == j:
                        full, gn = (full + full.T) / 2, (gn + gn.T) / 2
                    vals = (metrics.frobenius(full), metrics.frobenius(gn), metrics.frobenius(full - gn),
                            metrics.stable_rank(full) if stable_rank else float("nan"))
                    for M, val in zip((R, G, T, D), vals):
                        M[i, j] = M[j, i] = val
                    filled[i, j] = filled[j, i] = True
            yield CouplingMap(names, space, R.clone(), G.clone(), T.clone(), D.clone(), dist, filled.clone())

    def phi(self, groups: Sequence[str] | None = None) -> float:
        """Exact Φ = 1 − Σ_v ‖H_{θv,θv}‖_F² / ‖H‖_F² over disjoint parameter groups (default: s.groups).

        ‖H‖_F² = Σ_v ‖H_vv‖_F² + 2 Σ_{v<w} ‖H_vw‖_F², the Hessian restricted to
        the parameters of the groups.  0 for one group.
        """
        groups = list(groups) if groups is not None else self.groups
        self.param_groups.check_disjoint(groups)
        cmap = self.coupling_map(groups, space="parameter", stable_rank=False)
        R2 = cmap.R ** 2
        iu = torch.triu_indices(len(groups), len(groups), 1)
        return metrics.phi_from_norms(R2.diagonal().tolist(), R2[iu[0], iu[1]].tolist())

    # -- streaming --------------------------------------------------------------------------
    def estimate(self, v: str, w: str, space: str = "activation", probes: int = 200, seed: int = 0, *,
                 rel_ci: float | None = None, batch_size: int = 8, krylov: bool = True,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[EstimateSnapshot]:
        """Stream estimates of R, C, D, GN-Gap, the part norms, ‖H‖₂ (and trace if v = w).

        Yields an :class:`~hessexplore.estimators.EstimateSnapshot` after every
        ``batch_size`` probes; see :func:`~hessexplore.estimators.stream_block`.
        Costs O(P) per probe whatever the block size.
        """
        if probes < 1:
            raise HessExploreError("probes must be at least 1")
        v_atoms, w_atoms = self._atoms(v, space), self._atoms(w, space)
        self._check_finite()
        op = self.operator(list(dict.fromkeys(v_atoms + w_atoms)), space, mode="double-backward")
        return self._watch(stream_block(op, v_atoms, w_atoms, v=v, w=w, space=space, probes=probes,
                                        batch_size=batch_size, seed=seed, rel_ci=rel_ci, krylov=krylov,
                                        should_stop=should_stop), "estimate")

    # -- layer-wise spectra (SCIENCE.md §5) ----------------------------------------------------
    def spectrum(self, group: str, part: str = "full", method: str = "auto", **kw) -> "Spectrum":
        """Spectrum of the local Hessian of a parameter group (its diagonal block: the rest frozen).

        ``part``: "full" (the Hessian), "gn" (its Gauss–Newton part) or "tensor" (H − GN).
        ``method``: "auto" (exact dense eigh up to ``dense_max`` = 3000 parameters, else Lanczos
        extremes + SLQ density), "exact", "lanczos", "slq" or "lanczos+slq"; the result's ``method``
        and ``note`` say what ran.  Returns a :class:`~hessexplore.spectra.Spectrum` with
        ``.eigenvalues`` (exact), ``.top``/``.bottom`` with error bars (Lanczos), ``.grid``/``.density``
        with resolution ``.sigma``, and ``.stats`` (every SCIENCE.md §5 statistic, tolerance ``tol``).
        Keywords as :meth:`iter_spectrum`; SLQ probes all run in one batch here unless
        ``probe_batch`` is given.
        """
        kw.setdefault("probe_batch", None)
        last = None
        for last in self.iter_spectrum(group, part, method, **kw):
            pass
        return last

    def iter_spectrum(self, group: str, part: str = "full", method: str = "auto", *,
                      should_stop: Callable[[], bool] | None = None, **kw) -> Iterator["Spectrum"]:
        """Yield refining :class:`~hessexplore.spectra.Spectrum` snapshots (last one ``done``).

        Exact: one result.  Lanczos: a snapshot per step with the current top/bottom-k and their
        residual bounds.  SLQ: a snapshot per batch of ``probe_batch`` (default 4) probes.
        ``should_stop()`` is polled before every batched product; True raises
        :class:`~hessexplore.errors.JobCancelled`.  Keywords (see
        :func:`hessexplore.spectra.iter_spectrum`): ``dense_max`` (3000), ``k`` (5), ``tol`` (1e-6),
        ``max_iter``, ``check_every``, ``num_probes`` (16), ``num_iter`` (64), ``probe_batch``,
        ``sigma``, ``grid_size``, ``seed`` (0), ``eps``, ``slq_reorth`` (True).  Products use the
        recorded double-backward operator of the group; the dense matrix (exact) is built in
        memory-budgeted chunks.
        """
        from . import spectra as _spectra

        atoms = self._atoms(group, "parameter")
        if part not in _spectra.PARTS:
            raise HessExploreError(f"part must be one of {_spectra.PARTS}, got {part!r}")
        if method not in _spectra.METHODS:
            raise HessExploreError(f"method must be one of {_spectra.METHODS}, got {method!r}")
        self._check_finite()
        n = self.dim(group, "parameter")
        op = self.operator(atoms, "parameter", mode="double-backward")
        want_full, want_gn = part in ("full", "tensor"), part in ("gn", "tensor")

        def matvec(V: torch.Tensor) -> torch.Tensor:
            return op.products(atoms, V, atoms, full=want_full, gn=want_gn).rows(part, atoms)

        kw.setdefault("chunk", self._chunk("parameter", n))
        return self._watch(_spectra.iter_spectrum(matvec, n, method=method, group=group, part=part,
                                                  max_exact=self.max_exact_dim, dtype=self.dtype,
                                                  device=self.device, should_stop=should_stop, **kw), "spectrum")

    def __repr__(self) -> str:
        n = len(self.graph.names) if self.graph is not None else "?"
        return (f"Session({type(self.model).__name__}, batch={self.batch_size}, nodes={n}, "
                f"groups={len(self.groups)}, device={self.device}, dtype={self.dtype})")
