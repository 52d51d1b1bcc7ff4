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
import itertools
import math
import threading
import warnings
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

from . import checks, metrics
from .errors import BlockTooLargeError, HessExploreError, LossError, ModelStateError
from .estimators import EstimateSnapshot, stream_block
from .batches import Batches, is_one_batch, polling
from .capture import capture as _capture
from .capture import select_output, structural_twin
from . import compat
from .compat import curvature_mode
from .errors import TracingError
from .graph import ModelGraph, Node, ParameterGroups
from .operators import ActivationProblem, CurvatureOperator, ParameterProblem, Tuning, faster_sweep
from .results import Block, CouplingMap

if TYPE_CHECKING:  # spectra and maps are imported lazily by the methods that need them
    from .linop import BlockOperator
    from .maps import PhiResult
    from .spectra import Spectrum, TraceResult

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


def _columns_swept(chunks: list | None) -> int:
    """Columns covered by a sweep's consecutive chunks (start, k, rows), 0 for none."""
    return chunks[-1][0] + chunks[-1][1] if chunks else 0


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
    memory_budget : bytes one batched product may allocate (default 1 GiB on CPU, ¼ of free GPU memory);
        products are sized from a measured product (see :meth:`CurvatureOperator.memory_cost`), so
        their peak allocation stays within it (the recorded graph and the results kept are not counted).
    check_loss : verify that loss_fn is a per-sample mean (needs loss_fn to accept single samples).
    shard : under torch.distributed, rank r of W keeps the batches i with i % W == r of ``batch`` (for
        data every rank iterates whole); by default each rank passes its own shard (a DistributedSampler).

    ``batch`` may also be a data set: any re-iterable of batches (a DataLoader without shuffling, a
    list).  Then L is the mean over all N samples and every product the sample-weighted sum over the
    batches (see :mod:`hessexplore.batches`); under an initialised torch.distributed process group the
    products are all-reduced, so every rank holds the result on the union of the shards.
    """

    #: cap in bytes on an exact result (full + GN parts); None: half the memory available on the device
    max_exact_bytes: int | None = None

    def __init__(self, model: nn.Module, loss_fn: Callable, batch, dtype: torch.dtype | None = None, *,
                 output=None, capture: str = "auto", leaf_modules: Sequence[str] = (), trace: bool = True,
                 max_exact_dim: int = 8192, memory_budget: int | None = None, check_loss: bool = True,
                 shard: bool = False):
        if not isinstance(model, nn.Module):
            raise HessExploreError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not is_one_batch(batch) and (isinstance(batch, (str, bytes, dict, torch.Tensor))
                                        or not isinstance(batch, Iterable)):
            raise HessExploreError("batch must be a pair (x, y): inputs and targets for loss_fn(model(x), y), "
                                   "or an iterable of such batches (a DataLoader, a list)")
        _check_modes(model)
        checks.check_model_device(model)
        _check_finite_params(model)
        checks.check_buffers(model)
        checks.check_batchnorm_stats(model)
        dtype = checks.as_dtype(dtype)
        p0 = next(model.parameters(), None)
        if p0 is None:
            raise HessExploreError("the model has no parameters; there is no curvature to analyse")
        if dtype is None:
            checks.as_dtype(p0.dtype)    # a half-precision model: refused, with the dtype to pass
        self.device = p0.device
        if dtype is not None and dtype != p0.dtype:
            model = copy.deepcopy(model).to(dtype)
        self.dtype = dtype or p0.dtype
        self.model = model
        self.loss_fn = loss_fn
        self.output_selector = output
        # HF: a key/value cache is no part of the curvature
        defaults = {"use_cache": False} if _takes(model, "use_cache") else {}
        self.data = Batches(batch, self.device, self.dtype, defaults=defaults, shard=shard)
        first_batch = self.data.first
        self.inputs, self.input_kwargs, self.targets = first_batch.args, first_batch.kwargs, first_batch.targets
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
        checks.check_batch_size(self.batch_size)
        self.max_exact_dim = int(max_exact_dim)
        self.memory_budget = memory_budget
        self._check_output_and_loss(check_loss)
        self.graph = ModelGraph(_capture(model, self.inputs, self.input_kwargs, output=output, backend=capture,
                                         leaf_modules=leaf_modules), model) if trace else None
        if self.graph is not None:
            self.data.flatten = self.graph.capture.flatten
        self.num_samples = self.data.total         # N: samples over the whole data set (and all ranks)
        self.param_groups = ParameterGroups(model)
        self._twin_forward = None
        self._ops: dict = {}
        self._tunings: dict = {}      # (space, atoms, mode) -> Tuning: measurements outlive the operators

    # -- validation --------------------------------------------------------------------------
    def _check_output_and_loss(self, check_loss: bool) -> None:
        first = next(t for t in list(self.inputs) + list(self.input_kwargs.values()) if torch.is_tensor(t))

        def selected(out):
            try:
                return select_output(out, self.output_selector)
            except TracingError as exc:
                raise HessExploreError(f"{exc}. For a model returning a tuple, dict or ModelOutput, pass "
                                       "Session(..., output=...) naming the tensor the loss is applied to "
                                       "(e.g. output='logits'); by default its first tensor is used") from exc

        try:   # runs the forward twice: a random or buffer-mutating forward is refused (buffers restored)
            with curvature_mode():
                z = checks.check_forward(self.model,
                                         lambda: selected(self.model(*self.inputs, **self.input_kwargs)))
        except HessExploreError:
            raise
        except Exception as exc:  # noqa: BLE001 - the batch does not fit the model: say so, one line
            raise checks.input_width_error(self.model, first, exc) from exc
        if z.dim() == 0 or z.shape[0] != self.batch_size:
            raise HessExploreError(f"the model output has shape {tuple(z.shape)}; its first dimension must be "
                                   f"the batch ({self.batch_size})")
        checks.check_target_shape(self.loss_fn, z, self.targets)
        red = getattr(self.loss_fn, "reduction", "mean")
        if isinstance(self.loss_fn, nn.KLDivLoss) and red == checks.KLDIV_BATCHMEAN:
            red = "mean"     # batchmean = (1/B) Σ_b Σ_k: the per-sample mean of the summed KL terms
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
        checks.check_loss_depends_on_output(self.loss_fn, z, self.targets)
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
        """Refuse NaN/Inf parameters or buffers; skipped while no parameter or buffer changed since the last
        check that passed (version counters and storage pointers are compared, not values)."""
        state = self._fingerprint() + tuple((b.data_ptr(), b._version) for b in self.model.buffers())
        if state == getattr(self, "_finite_state", None):
            return
        _check_finite_params(self.model)
        checks.check_buffers(self.model)
        self._finite_state = state

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
            problem.data = self.data
            problem.onednn = not compat.needs_no_onednn(self.model)
            tuning = self._tunings.setdefault((space, tuple(atoms), mode), Tuning())
            op = CurvatureOperator(problem, mode, tuning=tuning)
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
            return lambda params, batch=None: fwd(params=params, inputs=None if batch is None else batch.flat)
        if self._twin_forward is None:
            twin, lock = structural_twin(self.model), threading.RLock()
            inputs, kwargs, sel = self.inputs, self.input_kwargs, self.output_selector

            def forward(params: dict, batch=None) -> torch.Tensor:
                a, k = (inputs, kwargs) if batch is None else (batch.args, batch.kwargs)
                with lock:
                    return select_output(functional_call(twin, params, a, k), sel)
            self._twin_forward = forward
        return self._twin_forward

    @staticmethod
    def _polled(it: Iterator, should_stop: Callable[[], bool] | None) -> Iterator:
        """``it`` with ``should_stop`` polled between data-set batches inside each step."""
        while True:
            with polling(should_stop):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    def _watch(self, it: Iterator, what: str, should_stop: Callable[[], bool] | None = None) -> Iterator:
        """Pass ``it`` through, refusing to mix weights: raise if the parameters change in between.

        ``should_stop`` is also polled between the batches of a data set inside each step.
        """
        fp0 = self._fingerprint()
        try:
            for item in self._polled(it, should_stop):
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

    def block_operator(self, v: str, w: str | None = None, space: str = "activation",
                       part: str = "full") -> "BlockOperator":
        """The block H_{v,w} (``part`` "full" | "gn" | "tensor") as an open linear operator.

        A :class:`~hessexplore.linop.BlockOperator` of shape (d_v, d_w): ``A @ x`` for x
        (d_w,) or (d_w, k), ``A.T`` (= H_{w,v}), ``A.to_scipy()`` (a SciPy LinearOperator).
        ``w=None`` gives the diagonal block H_{v,v}.  Products are batched backwards
        through the recorded forward and first backward; nothing dense is formed.
        """
        from .linop import BlockOperator
        w = v if w is None else w
        v_atoms, w_atoms = self._atoms(v, space), self._atoms(w, space)
        self._check_finite()
        op = self.operator(list(dict.fromkeys(v_atoms + w_atoms)), space, mode="double-backward")
        return BlockOperator(op, v_atoms, w_atoms, v=v, w=w, space=space, part=part)

    def _budget(self) -> int:
        """Bytes one batched product may allocate: ``memory_budget``, else 1 GiB on CPU, ¼ of free GPU memory."""
        if self.memory_budget is not None:
            return int(self.memory_budget)
        if self.device.type == "cuda":
            return torch.cuda.mem_get_info(self.device)[0] // 4
        return 1 << 30

    def _chunk(self, op: CurvatureOperator, w_atoms: Sequence[str], out_atoms: Sequence[str], d_w: int,
               full: bool = True, gn: bool = True) -> int:
        """Directions per batched product so that its peak allocation stays within the budget.

        Measured on the operator's own products (see
        :meth:`CurvatureOperator.directions_within`), not from a formula; at least 1 and
        at most d_w.  Only when a generous bound (6 activations of the whole batch and 2
        parameter copies per direction, several times what autograd holds) puts all d_w
        directions under an eighth of the budget is nothing measured.
        """
        if self._fits_unmeasured(d_w):
            return d_w
        return op.directions_within(self._budget(), w_atoms, out_atoms, d_w, full, gn)

    def _fits_unmeasured(self, d_w: int) -> bool:
        """True when a generous bound per direction (see :meth:`_chunk`) puts d_w directions under an
        eighth of the memory budget: then nothing needs measuring."""
        item = torch.empty((), dtype=self.dtype).element_size()
        act = self.graph.activation_numel() if self.graph is not None else 0
        bound = item * (6 * self.batch_size * max(act, 1) + 2 * sum(p.numel() for p in self.model.parameters()))
        return d_w * bound <= self._budget() // 8

    #: an exact sweep of at least this many columns, which the recorded operator's measured time per column
    #: puts over this many seconds, first times the stateless forward-over-reverse operator on one chunk
    #: (see :meth:`_sweep_operator`; the measurement costs some 40–80 columns' worth)
    SWEEP_MEASURE_COLUMNS = 1024
    SWEEP_MEASURE_SECONDS = 10.0

    def _sweep_columns(self, rec: CurvatureOperator, w_atoms: list[str], out_atoms: list[str], d_w: int, space: str,
                       parts: Sequence[str], should_stop, first: int | None, start: int = 0,
                       stop: int | None = None) -> Iterator:
        """The column chunks of an exact sweep (see :meth:`CurvatureOperator.iter_dense_columns`), columns
        ``start`` … ``stop`` − 1 (default: to d_w).

        With ``first`` (a first result soon), the first ``first`` columns come from the recorded
        operator before the chunk and the operator for the rest are chosen (:meth:`_chunk`,
        :meth:`_sweep_operator`, which measure): as one product when nothing needs measuring, else
        as one plain backward each (the memory of a gradient), yielded as one chunk.  The first
        partial result never waits for a measurement."""
        end = d_w if stop is None else min(int(stop), d_w)
        if first and start < end:
            head = min(max(1, int(first)), end)
            if start < head:
                size = head if self._fits_unmeasured(d_w) else 1
                chunks = list(rec.iter_dense_columns(w_atoms, out_atoms, size, parts, should_stop, start=start,
                                                     stop=head))
                yield start, head - start, {p: {a: torch.cat([c[2][p][a] for c in chunks]) for a in out_atoms}
                                            for p in parts}
                start = head
        if start < end:
            op, chunk = self._sweep_operator(rec, w_atoms, out_atoms, d_w, space)
            yield from op.iter_dense_columns(w_atoms, out_atoms, chunk, parts, should_stop,
                                             first=2 * start if first else None, start=start, stop=end)

    def _sweep_operator(self, rec: CurvatureOperator, w_atoms: Sequence[str], out_atoms: Sequence[str], d_w: int,
                        space: str) -> tuple[CurvatureOperator, int]:
        """(operator, chunk) for an exact sweep of the d_w columns of ``w_atoms`` with rows of ``out_atoms``.

        The recorded double-backward operator ``rec`` with its memory-budgeted chunk, unless the
        sweep is long enough (:attr:`SWEEP_MEASURE_COLUMNS`, :attr:`SWEEP_MEASURE_SECONDS` by
        ``rec``'s measured time per column) to be worth timing the stateless forward-over-reverse operator on one chunk and it
        is faster (:func:`~hessexplore.operators.faster_sweep`).  The choice is kept in the
        session's measurements for these atoms, so every later sweep of them runs the same way.
        """
        chunk = self._chunk(rec, w_atoms, out_atoms, d_w)
        key = (tuple(w_atoms), self._budget())
        choice = rec.tuning.sweeps.get(key)
        if choice is None:
            batched, timings = rec.way(w_atoms, out_atoms)
            t = timings.get("batched" if batched else "loop")
            choice = ("double-backward", chunk)
            if d_w >= self.SWEEP_MEASURE_COLUMNS and d_w * (t or 0.0) >= self.SWEEP_MEASURE_SECONDS:
                choice = faster_sweep(rec, self.operator(list(rec.problem.dims), space), w_atoms, out_atoms, chunk,
                                      self._budget())
            rec.tuning.sweeps[key] = choice
        mode, k = choice
        if mode == "double-backward":
            return rec, chunk
        return self.operator(list(rec.problem.dims), space, mode=mode), k

    def _check_exact(self, name: str, space: str, other: str, outs: Sequence[str] | None = None,
                     columns: int | None = None) -> int:
        """Refuse an exact sweep of ``name``'s columns (``columns`` of them if given) with rows for
        every atom of ``outs`` (default ``other`` and ``name``) before anything is allocated: over
        ``max_exact_dim`` products, or an output (full + GN) over the memory budget."""
        d = self.dim(name, space)
        if d > self.max_exact_dim:
            raise BlockTooLargeError(
                f"the exact block needs {d:,} Hessian-vector products (one per column of {name!r}, "
                f"{space} space), over the limit max_exact_dim={self.max_exact_dim:,}. Use "
                f"s.estimate({other!r}, {name!r}, space={space!r}) for streaming estimates with error bars, "
                "or raise the limit with Session(..., max_exact_dim=...).")
        atoms = list(dict.fromkeys(a for o in list(outs or [other]) + [name] for a in self._atoms(o, space)))
        rows = sum(self._graph().resolve(a).numel if space == "activation" else self.param_groups.params[a].numel()
                   for a in atoms)
        checks.check_exact_memory(
            columns or d, rows, self.dtype, self.device, self.max_exact_bytes,
            f"the exact {space}-space result for the columns of {name!r}",
            f"Use s.estimate({other!r}, {name!r}, space={space!r}) (O(P) memory per probe), map fewer or smaller "
            "nodes, or raise the cap with s.max_exact_bytes = <bytes>.")
        return d

    def _sweep_many(self, ws: Sequence[str], outs: Sequence[str], space: str, should_stop=None, progress=None
                    ) -> dict[str, dict[tuple[str, str], torch.Tensor]]:
        """Exact blocks {part: {(o, w): H_{o,w} (d_o, d_w)}} for every o in ``outs``, w in ``ws``.

        One column sweep over the atoms of all ``ws`` together (vmapped in
        memory-budgeted chunks): each column t = e_j gives H_{a,·} e_j for
        every atom a at once.
        """
        blocks = None
        for event in self._iter_sweep_many(ws, outs, space, should_stop, progress):
            if event[0] == "done":
                blocks = event[1]
        return blocks

    def _iter_sweep_many(self, ws: Sequence[str], outs: Sequence[str], space: str, should_stop=None,
                         progress=None, first: int | None = None, partial: bool = False,
                         head: list | None = None, stop: int | None = None):
        """The sweep of :meth:`_sweep_many` as a stream of events.

        With ``partial``, after every chunk: ("partial", columns done, columns total,
        {part: {(o, w): Σ of squared entries of H_{o,w} over the columns swept so far}}).
        Last: ("done", blocks) as :meth:`_sweep_many` returns them.  ``first``: the first
        chunk's size (chunks then double up to the memory budget).  ``head``: a list of the
        chunks of this sweep's first columns already computed (by a sweep with the same
        ``outs`` whose first node is ``ws[0]``): they are used, not recomputed, and every chunk
        computed here is appended to it.  ``stop``: sweep only the columns before it (no "done").
        """
        self._check_finite()
        w_atoms = {w: self._atoms(w, space) for w in ws}
        out_atoms = {o: self._atoms(o, space) for o in outs}
        W = list(dict.fromkeys(a for atoms in w_atoms.values() for a in atoms))
        all_atoms = list(dict.fromkeys([a for atoms in out_atoms.values() for a in atoms] + W))
        rec = self.operator(all_atoms, space, mode="double-backward")
        offsets, at = {}, 0
        for a in W:
            offsets[a] = (at, at + rec.problem.dims[a])
            at += rec.problem.dims[a]
        parts = ("full", "gn")
        acc: dict[str, dict[str, list[torch.Tensor]]] = {p: {a: [] for a in all_atoms} for p in parts}
        sq = {p: {(o, w): 0.0 for o in outs for w in ws} for p in ("full", "gn", "tensor")}
        fp0 = self._fingerprint()
        try:
            done = _columns_swept(head)
            fresh = self._polled(self._sweep_columns(rec, W, all_atoms, at, space, parts, should_stop, first,
                                                     start=done, stop=stop), should_stop)
            for start, k, got in itertools.chain(list(head or ()), fresh):
                if head is not None and start >= done:
                    head.append((start, k, got))
                for part in parts:
                    for a in all_atoms:
                        acc[part][a].append(got[part][a])
                if progress is not None:
                    progress(start + k, at)
                if partial:
                    rows = {p: {o: torch.cat([got[p][a] for a in atoms], dim=-1) for o, atoms in out_atoms.items()}
                            for p in parts}
                    for o in outs:
                        rows_t = rows["full"][o] - rows["gn"][o]
                        for w in ws:
                            for a in w_atoms[w]:
                                lo, hi = max(offsets[a][0], start), min(offsets[a][1], start + k)
                                if lo >= hi:
                                    continue
                                sl = slice(lo - start, hi - start)
                                for p, r in (("full", rows["full"][o]), ("gn", rows["gn"][o]), ("tensor", rows_t)):
                                    sq[p][(o, w)] += float(r[sl].pow(2).sum())
                    yield ("partial", start + k, at, sq)
        except (RuntimeError, NotImplementedError) as exc:
            self._same_weights(fp0, "exact block", exc)
            raise
        self._same_weights(fp0, "exact block")
        if stop is not None and stop < at:
            return
        cols = {p: {a: torch.cat(chunks, dim=0).T for a, chunks in d.items()} for p, d in acc.items()}
        out: dict[str, dict[tuple[str, str], torch.Tensor]] = {}
        for part, per_atom in cols.items():
            rows = {o: torch.cat([per_atom[a] for a in atoms], dim=0) for o, atoms in out_atoms.items()}
            out[part] = {(o, w): torch.cat([rows[o][:, slice(*offsets[a])] for a in w_atoms[w]], dim=1)
                         for o in outs for w in ws}
        yield ("done", out)

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
        """C(v, w) = ‖H_vw‖_F / sqrt(‖H_vv‖_F ‖H_ww‖_F), exact (NaN if ‖H_vv‖ or ‖H_ww‖ is relatively zero)."""
        if self._same(v, w, space):   # C(v, v) = ‖H_vv‖ / ‖H_vv‖
            return float(self.coupling_map([v], space=space, method="exact").C[0, 0])
        return float(self.coupling_map([v, w], space=space, method="exact").C[0, 1])

    def coupling_map(self, nodes: Sequence[str] | None = None, space: str = "activation",
                     method: str = "auto", **kw) -> CouplingMap:
        """Norms of every block among ``nodes`` (default: all nodes, or all groups), exact or estimated.

        ``method="exact"``: one column sweep per node gives H_{u,w} for every u at
        once, Σ_w d_w Hessian-vector products.  ``"estimate"``: shared Hutchinson
        probes (:mod:`hessexplore.maps`), k probe streams of ``probes`` (64) each, with
        standard errors in ``.stderr``.  ``"auto"`` (default) is exact while every
        node has ≤ max_exact_dim columns and all together ≤ 4·max_exact_dim, else an
        estimate.  The result's ``method``, ``probes`` and ``note`` say what ran.
        See :class:`CouplingMap` and :meth:`iter_coupling_map` for keywords.
        """
        last = None
        for last in self.iter_coupling_map(nodes, space=space, method=method, **kw):
            pass
        return last

    def _map_names(self, nodes, space: str) -> list[str]:
        nodes = checks.nonempty_names(nodes, "nodes")
        if nodes is None:
            nodes = self.nodes if space == "activation" else self.groups
        names = list(dict.fromkeys(nodes))
        for n in names:
            self._atoms(n, space)
        return names

    def _map_method(self, names: Sequence[str], space: str, method: str) -> str:
        from .maps import choose_method
        return choose_method(method, [self.dim(n, space) for n in names], self.max_exact_dim)

    def _map_distance(self, names: Sequence[str], space: str) -> torch.Tensor:
        k = len(names)
        return self._graph().distances(list(names)) if space == "activation" else \
            (torch.arange(k)[None] - torch.arange(k)[:, None]).abs()

    def iter_coupling_map(self, nodes: Sequence[str] | None = None, space: str = "activation", *,
                          method: str = "auto", should_stop: Callable[[], bool] | None = None,
                          stable_rank: bool = True, probes: int = 64, seed: int = 0,
                          batch_size: int = 8, first_chunk: int | None = 32) -> Iterator[CouplingMap]:
        """Yield the coupling map as it fills (exact) or refines (estimate).

        Exact: consecutive nodes whose columns fit one memory-budgeted chunk are swept
        together (one batched product for all their columns); a map is yielded after
        each such sweep, ``filled`` marks what is computed; ``stable_rank=False`` skips
        the SVD of every block (``D`` is then NaN).  Within a sweep a map is also yielded
        after every batched product (the first of ``first_chunk`` columns, then doubling up
        to the memory budget): its ``partial`` norms over the columns swept so far are
        lower bounds of the unfilled entries, ``columns_done``/``columns_total`` the
        progress; ``should_stop`` is polled before every product.  Estimate: a full map with standard
        errors after a first round of 2 probes per node (a first map after 2k plain products),
        then after every round of ``batch_size`` probes per node, up to ``probes``
        (reproducible from ``seed``).  ``method`` as in :meth:`coupling_map`.
        """
        names = self._map_names(nodes, space)
        method = self._map_method(names, space, method)
        if method == "estimate":
            yield from self._iter_estimated_map(names, space, probes=probes, seed=seed, batch_size=batch_size,
                                                should_stop=should_stop)
            return
        for n in names:
            if self.dim(n, space) > self.max_exact_dim:
                raise BlockTooLargeError(
                    f"the exact map needs {self.dim(n, space):,} Hessian-vector products for {n!r} ({space} "
                    f"space), over the limit max_exact_dim={self.max_exact_dim:,}. Use "
                    "s.coupling_map(..., method='estimate') (or method='auto') for estimates with error bars, "
                    "or raise the limit with Session(..., max_exact_dim=...).")
            self._check_exact(n, space, n, names)
        k = len(names)
        z = lambda: torch.zeros(k, k, dtype=torch.float64)  # noqa: E731
        R, G, T, D = z(), z(), z(), z()
        filled = torch.zeros(k, k, dtype=torch.bool)
        dist = self._map_distance(names, space)
        tol = metrics.rel_tol(self.dtype)
        dims = [self.dim(n, space) for n in names]
        # sweep the smaller side of each pair (ties: the later one), as block() does
        owner = [[j if (dims[j] < dims[i] or (dims[j] == dims[i] and j >= i)) else i for j in range(k)]
                 for i in range(k)]
        total = sum(dims)
        partial = {key: z() for key in ("R", "norm_gn", "norm_tensor")}

        def snapshot(done_cols: int) -> CouplingMap:
            return CouplingMap(names, space, R.clone(), G.clone(), T.clone(), D.clone(), dist, filled.clone(),
                               tol=tol, note="exact", columns_done=done_cols, columns_total=total,
                               partial={key: M.clone() for key, M in partial.items()})

        def take_partial(pack: list[int], sq) -> None:
            for j in pack:
                for i, v in enumerate(names):
                    if owner[i][j] == j:
                        for key, p in (("R", "full"), ("norm_gn", "gn"), ("norm_tensor", "tensor")):
                            partial[key][i, j] = partial[key][j, i] = math.sqrt(sq[p][(v, names[j])])

        # a first partial result before anything is measured: the first columns of the first node, one
        # plain backward each (the packing below measures the memory of a batched product)
        head: list = []
        if first_chunk and not self._fits_unmeasured(total) and len(names) > 1:
            for event in self._iter_sweep_many(names[:1], names, space, should_stop, first=first_chunk,
                                               partial=True, head=head, stop=first_chunk):
                if event[0] == "partial":
                    take_partial([0], event[3])
                    yield snapshot(event[1])
        # pack consecutive nodes into one sweep while their columns fit one memory-budgeted chunk
        head_end = _columns_swept(head)
        every = list(dict.fromkeys(a for n in names for a in self._atoms(n, space)))
        max_cols = total if k == 1 else self._chunk(self.operator(every, space, mode="double-backward"),
                                                    self._atoms(names[0], space), every, total)
        packs: list[list[int]] = []
        cols_in_pack = 0
        for j in range(k):
            if packs and cols_in_pack + dims[j] <= max_cols:
                packs[-1].append(j)
                cols_in_pack += dims[j]
            else:
                packs.append([j])
                cols_in_pack = dims[j]
        for pack in packs:       # every sweep's output is checked before the first one starts
            self._check_exact(names[pack[0]], space, names[pack[0]], names, sum(dims[j] for j in pack))
        swept = 0
        for pack in packs:
            cols = None
            for event in self._iter_sweep_many([names[j] for j in pack], names, space, should_stop,
                                               first=first_chunk, partial=True, head=head if swept == 0 else None):
                if event[0] == "done":
                    cols = event[1]
                    continue
                _, done_cols, pack_cols, sq = event
                take_partial(pack, sq)
                if done_cols < pack_cols and (swept or done_cols > head_end):
                    yield snapshot(swept + done_cols)   # within the pack: norms over the columns swept so far
            swept += sum(dims[j] for j in pack)
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
                    for key, val in zip(("R", "norm_gn", "norm_tensor"), vals):
                        partial[key][i, j] = partial[key][j, i] = val
                    filled[i, j] = filled[j, i] = True
            yield snapshot(swept)

    def _iter_estimated_map(self, names: list[str], space: str, **kw) -> Iterator[CouplingMap]:
        from .maps import iter_estimated_map
        self._check_finite()
        groups = [self._atoms(n, space) for n in names]
        op = self.operator([a for g in groups for a in g], space, mode="double-backward")
        yield from iter_estimated_map(op, names, groups, space=space, distance=self._map_distance(names, space),
                                      tol=metrics.rel_tol(self.dtype), **kw)

    def phi(self, groups: Sequence[str] | None = None, method: str = "auto", *, probes: int = 64, seed: int = 0,
            batch_size: int = 8, should_stop: Callable[[], bool] | None = None,
            progress: Callable[[int, int], None] | None = None) -> "PhiResult":
        """Φ = 1 − Σ_v ‖H_{θv,θv}‖_F² / ‖H‖_F² over disjoint parameter groups (default: s.groups).

        ‖H‖_F² = Σ_v ‖H_vv‖_F² + 2 Σ_{v<w} ‖H_vw‖_F², the Hessian restricted to the
        parameters of the groups; 0 for one group.  ``method`` "exact" (Σ_v d_v
        products), "estimate" (k probe streams of ``probes`` Rademacher vectors, full
        products only) or "auto" (as :meth:`coupling_map`).  Returns a
        :class:`~hessexplore.maps.PhiResult`: a float with ``.stderr``, ``.method``, ``.probes``.
        ``progress(done, total)``: after every round of an estimate (probes per group), after every
        sweep of the exact map (pairs).
        """
        from .maps import PhiResult, iter_estimate, phi_from_samples
        groups = checks.nonempty_names(groups, "groups") or self.groups
        self.param_groups.check_disjoint(groups)
        if len(groups) == 1:
            return PhiResult(0.0, "exact")
        method = self._map_method(groups, "parameter", method)
        if method == "estimate":
            self._check_finite()
            atoms = [self._atoms(g, "parameter") for g in groups]
            op = self.operator([a for g in atoms for a in g], "parameter", mode="double-backward")
            S, m = None, 0
            for S, m in iter_estimate(op, atoms, probes=probes, batch_size=batch_size, seed=seed, gn=False,
                                      should_stop=should_stop):
                if progress is not None:
                    progress(m, probes)
            return phi_from_samples(S, m)
        cmap = None
        for cmap in self.iter_coupling_map(groups, space="parameter", method="exact", stable_rank=False,
                                           should_stop=should_stop):
            if progress is not None:
                iu = torch.triu_indices(len(groups), len(groups), 0)
                progress(int(cmap.filled[iu[0], iu[1]].sum()), len(iu[0]))
        R2 = cmap.R ** 2
        iu = torch.triu_indices(len(groups), len(groups), 1)
        return PhiResult(metrics.phi_from_norms(R2.diagonal().tolist(), R2[iu[0], iu[1]].tolist()), "exact")

    # -- streaming --------------------------------------------------------------------------
    def estimate(self, v: str, w: str, space: str = "activation", probes: int = 200, seed: int = 0, *,
                 rel_ci: float | None = None, batch_size: int = 8, krylov: bool = True,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[EstimateSnapshot]:
        """Stream estimates of R, C, D, GN-Gap, the part norms, ‖H‖₂ (and trace if v = w).

        Yields an :class:`~hessexplore.estimators.EstimateSnapshot` after every
        ``batch_size`` probes; see :func:`~hessexplore.estimators.stream_block`.
        Costs O(P) per probe whatever the block size.
        """
        probes = checks.positive_int(probes, "probes", hint="the number of random probes, e.g. probes=200")
        batch_size = checks.positive_int(batch_size, "batch_size", hint="probes per batched product, e.g. 8")
        seed, rel_ci = checks.as_seed(seed), checks.rel_ci(rel_ci)
        v_atoms, w_atoms = self._atoms(v, space), self._atoms(w, space)
        self._check_finite()
        op = self.operator(list(dict.fromkeys(v_atoms + w_atoms)), space, mode="double-backward")
        return self._watch(stream_block(op, v_atoms, w_atoms, v=v, w=w, space=space, probes=probes,
                                        batch_size=batch_size, seed=seed, rel_ci=rel_ci, krylov=krylov,
                                        should_stop=should_stop), "estimate", should_stop)

    # -- layer-wise spectra (SCIENCE.md §5) ----------------------------------------------------
    def spectrum(self, group: str, part: str = "full", method: str = "auto", **kw) -> "Spectrum":
        """Spectrum of the local Hessian of a parameter group (its diagonal block: the rest frozen).

        ``group``: a module's qualified name (all parameters under it), a parameter's name, or
        ``"*"`` — every parameter of the model, i.e. the whole Hessian (as PyHessian and
        curvlinops define it).  λ_max alone: ``method="lanczos", k=1, which="top"`` stops once
        the top Ritz value meets ``tol`` (``criterion="gap"``: by its r²/gap error estimate rather
        than the residual bound, a few products fewer).

        ``part``: "full" (the Hessian), "gn" (its Gauss–Newton part) or "tensor" (H − GN).
        ``method``: "auto" (exact dense eigh up to ``dense_max`` = 3000 parameters, else Lanczos
        extremes + SLQ density), "exact", "lanczos", "slq" or "lanczos+slq"; the result's ``method``
        and ``note`` say what ran.  Returns a :class:`~hessexplore.spectra.Spectrum` with
        ``.eigenvalues`` (exact), ``.top``/``.bottom`` with error bars (Lanczos), ``.grid``/``.density``
        with resolution ``.sigma``, and ``.stats`` (every SCIENCE.md §5 statistic, tolerance ``tol``).
        Keywords as :meth:`iter_spectrum`; SLQ probes all run in one batch here unless
        ``probe_batch`` is given.  Eigenvectors: ``vectors=True`` adds ``.eigenvectors`` (n, n) to
        exact spectra; Lanczos results carry ``.top_vectors`` / ``.bottom_vectors`` (n, k).
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
        ``which`` ("both"), ``criterion`` ("residual"), ``max_iter``, ``check_every``, ``num_probes``
        (16), ``num_iter`` (64), ``probe_batch``, ``sigma``, ``grid_size``, ``seed`` (0), ``eps``, ``slq_reorth`` (True).  Products use the
        recorded double-backward operator of the group; the dense matrix (exact) is built in
        memory-budgeted chunks.
        """
        from . import spectra as _spectra

        if method not in _spectra.METHODS:
            raise HessExploreError(f"method must be one of {_spectra.METHODS}, got {method!r}")
        matvec, n = self._group_matvec(group, part)
        if kw.get("chunk") is None and method in ("exact", "auto") and n <= self.max_exact_dim:
            kw["chunk"] = self._group_chunk(group, part, n)
        return self._watch(_spectra.iter_spectrum(matvec, n, method=method, group=group, part=part,
                                                  max_exact=self.max_exact_dim, dtype=self.dtype,
                                                  device=self.device, should_stop=should_stop, **kw), "spectrum",
                           should_stop)

    def _group_matvec(self, group: str, part: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
        """(V (m, n) -> rows of V·A, n) for A the local Hessian of ``group`` (or its GN / tensor part).

        Products run on the group's recorded double-backward operator and ask it only for what
        ``part`` needs (full: no GN rows; gn: no full rows)."""
        op, atoms, want_full, want_gn = self._group_operator(group, part)

        def matvec(V: torch.Tensor) -> torch.Tensor:
            return op.products(atoms, V, atoms, full=want_full, gn=want_gn).rows(part, atoms)
        return matvec, self.dim(group, "parameter")

    def _group_operator(self, group: str, part: str) -> tuple[CurvatureOperator, list[str], bool, bool]:
        """(recorded operator, atoms, full rows needed, GN rows needed) for ``part`` of ``group``'s block."""
        from .spectra import PARTS
        atoms = self._atoms(group, "parameter")
        if part not in PARTS:
            raise HessExploreError(f"part must be one of {PARTS}, got {part!r}")
        self._check_finite()
        op = self.operator(atoms, "parameter", mode="double-backward")
        return op, atoms, part in ("full", "tensor"), part in ("gn", "tensor")

    def _group_chunk(self, group: str, part: str, most: int) -> int:
        """Directions per product on ``group``'s operator within the memory budget (see :meth:`_chunk`)."""
        op, atoms, want_full, want_gn = self._group_operator(group, part)
        return self._chunk(op, atoms, atoms, most, want_full, want_gn)

    def trace(self, group: str = "*", probes: int = 64, part: str = "full", **kw) -> "TraceResult":
        """Hutchinson estimate of the trace of the local Hessian of ``group`` (default ``"*"``: every
        parameter of the model, i.e. tr H), with its standard error.

        ``part``: "full" (tr H; the operator is asked for no GN rows), "gn" (tr H^GN) or "tensor".  ``probes``
        Rademacher vectors from ``seed`` (0); keywords as :meth:`iter_trace`.  Returns a
        :class:`~hessexplore.spectra.TraceResult`: ``.value``, ``.stderr``, ``.samples``.  For the
        exact trace of a small group use ``s.spectrum(group, method="exact").trace``.
        """
        last = None
        for last in self.iter_trace(group, probes, part, **kw):
            pass
        return last

    def iter_trace(self, group: str = "*", probes: int = 64, part: str = "full", *, seed: int = 0,
                   batch_size: int | None = None, should_stop: Callable[[], bool] | None = None
                   ) -> Iterator["TraceResult"]:
        """Yield the running Hutchinson trace estimate after every ``batch_size`` probes.

        ``batch_size`` directions go into each batched product (default: a first estimate from 2
        probes, before anything is measured, then as many as the memory budget allows by the
        operator's measured cost, and as run in about a second; the operator runs a batch as one
        batched backward or a loop, whichever it measured faster).  The estimate does not depend
        on the batches.  ``should_stop()`` is polled before every product; True
        raises :class:`~hessexplore.errors.JobCancelled`.
        """
        from .spectra import iter_trace
        matvec, n = self._group_matvec(group, part)
        probes = checks.positive_int(probes, "probes", hint="Hutchinson probes, e.g. probes=64")
        first = None
        if batch_size is None:       # measured after a first estimate from 2 plain products, unless not needed
            first = None if self._fits_unmeasured(probes) else 2
            batch_size = lambda: self._group_chunk(group, part, probes)   # noqa: E731
        return self._watch(iter_trace(matvec, n, probes=probes, batch_size=batch_size, seed=seed, group=group,
                                      part=part, dtype=self.dtype, device=self.device, should_stop=should_stop,
                                      first=first), "trace", should_stop)

    def __repr__(self) -> str:
        n = len(self.graph.names) if self.graph is not None else "?"
        return (f"Session({type(self.model).__name__}, batch={self.batch_size}, nodes={n}, "
                f"groups={len(self.groups)}, device={self.device}, dtype={self.dtype})")
