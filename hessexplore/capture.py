"""Capture a model as a graph hessexplore owns: torch.fx where it works, torch.export otherwise.

A :class:`Capture` is one forward pass of the model as an ``fx.GraphModule``
that returns the model output ``z`` (one tensor), with, for every value:

* its module scope (qualified names of the module calls it happens in, outermost
  first; a second call of a module is ``name@1``) and the module calls whose
  **output** it is (for a module returning a tuple or a ``ModelOutput``: its first
  tensor);
* its per-sample shape: the shape without the batch dimension, for floating tensors
  that carry the batch in exactly one dimension (``batch_dim``).

Backends (``capture="auto"`` tries them in this order):

* ``"fx"`` — ``torch.fx`` symbolic tracing of a *structural twin* of the model (new
  module objects sharing the user's parameter and buffer tensors), module-level
  nodes.  Fails on data-dependent control flow, ``*args`` forwards, most HF
  transformers.
* ``"export"`` — ``torch.export.export(strict=False)`` with a dynamic batch
  dimension, functionalised (``run_decompositions({})``: no in-place ops, no
  decomposition).  ATen-level nodes named through ``nn_module_stack``;
  parameters and buffers are graph inputs, so the graph is a pure function.

The user's model is never modified: fx runs on the twin, export's graph takes
the parameters as arguments.  Ops without second derivatives are replaced by
exact substitutes (:mod:`hessexplore.compat`).
"""
from __future__ import annotations

import copy
import inspect
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn
from torch.func import functional_call

from .compat import curvature_mode, substitute_ops
from .errors import TracingError

BACKENDS = ("auto", "fx", "export")


# ------------------------------------------------------------------------------ helpers
def structural_twin(model: nn.Module) -> nn.Module:
    """New module objects with the same structure, sharing every parameter and buffer tensor.

    hessexplore swaps tensors into the twin (``functional_call``), never into the
    user's modules.
    """
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return copy.deepcopy(model, memo)


def canonical_parameters(model: nn.Module) -> tuple[dict[str, nn.Parameter], dict[str, str]]:
    """(canonical name → parameter, every name → canonical name).

    A tensor registered under several names (tied weights) belongs to its first
    owner in ``named_parameters()`` order.
    """
    canon = dict(model.named_parameters())
    by_id = {id(p): n for n, p in canon.items()}
    alias = {n: by_id[id(p)] for n, p in model.named_parameters(remove_duplicate=False)}
    return canon, alias


def select_output(out: Any, output: Any, where: str = "the model"):
    """The tensor the loss is applied to: ``output`` = None (first tensor), a key, an index or a callable."""
    if callable(output) and not isinstance(output, (str, int)):
        got = output(out)
    elif output is None:
        got = first_tensor(out)
        if got is None:
            raise TracingError(f"{where} returned {type(out).__name__} with no tensor in it; return the outputs z "
                               "the loss is applied to")
        return got
    else:
        try:
            got = out[output]
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            keys = list(out.keys()) if hasattr(out, "keys") else f"{len(out)} items" if hasattr(out, "__len__") \
                else type(out).__name__
            raise TracingError(f"output={output!r} does not select anything from what {where} returns "
                               f"({type(out).__name__}: {keys}); pass a key, an index or a callable") from exc
    if not torch.is_tensor(got):
        raise TracingError(f"output={output!r} selects a {type(got).__name__} from {where}, not a tensor")
    return got


def first_tensor(out: Any) -> torch.Tensor | None:
    """The first tensor of a module's output (the tensor itself, or the first leaf of a tuple/ModelOutput)."""
    if torch.is_tensor(out):
        return out
    for t in pytree.tree_leaves(out):
        if torch.is_tensor(t):
            return t
    return None


def forward_kwargs(model: nn.Module, args: tuple, kwargs: dict) -> dict:
    """``kwargs`` in the order of ``model.forward``'s signature (export flattens them in that order)."""
    try:
        names = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return dict(kwargs)
    ordered = {k: kwargs[k] for k in names if k in kwargs}
    ordered.update({k: v for k, v in kwargs.items() if k not in ordered})
    return ordered


@dataclass
class NodeInfo:
    """Per-value facts a backend reports (names are the graph's own node names)."""

    fx_name: str
    op: str
    kind: str                       # "module" | "function" | "method" | "input"
    shape: tuple[int, ...] | None   # per-sample shape
    batch_dim: int
    scope: tuple[str, ...]
    outputs_of: tuple[str, ...]     # module calls whose output this is, innermost first
    inputs: tuple[str, ...]
    params: int
    dtype: torch.dtype | None = None   # floating dtype of the value


@dataclass
class Capture:
    """A captured forward (see module docstring).  ``call`` runs a (possibly perturbed) copy of it."""

    backend: str
    gm: fx.GraphModule
    nodes: list[NodeInfo]
    output: str                                   # fx name of z
    flat_inputs: list                             # user inputs in placeholder order
    runner: Callable = field(repr=False)          # (gm, params override, flat inputs, deltas) -> z
    called_modules: set[str] = field(default_factory=set)
    substituted: list[str] = field(default_factory=list)
    fallback_reason: str | None = None
    flatten: Callable | None = field(default=None, repr=False)   # (args, kwargs) -> inputs in placeholder order

    def perturbed(self, targets: Sequence[str]) -> fx.GraphModule:
        """A copy of the graph with one extra trailing placeholder δ_i per target, added to its value.

        δ_i has the target's per-sample shape and is broadcast over the batch
        (unsqueezed at the batch dimension); every later use reads the perturbed
        value, so perturbing v also moves everything downstream of v.
        """
        info = {n.fx_name: n for n in self.nodes}
        old = self.gm.graph
        new = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        nodes = list(old.nodes)
        for n in nodes:
            if n.op == "placeholder":
                env[n] = new.placeholder(n.target)   # no defaults: every input is passed positionally
                env[n].meta = dict(n.meta)
        deltas = {t: new.placeholder(f"hx_delta_{i}") for i, t in enumerate(targets)}

        def add(node: fx.Node, name: str) -> fx.Node:
            d = deltas[name]
            bd = info[name].batch_dim
            if bd != 0:
                d = new.call_method("unsqueeze", (d, bd))
            return new.call_function(torch.add, (node, d))

        for n in nodes:
            if n.op == "placeholder":
                if n.name in deltas:
                    env[n] = add(env[n], n.name)
                continue
            copied = new.node_copy(n, lambda a: env[a])
            if n.name in deltas:
                copied = add(copied, n.name)
            env[n] = copied
        return fx.GraphModule(self.gm, new)

    def call(self, gm: fx.GraphModule, params: dict | None, deltas: Sequence[torch.Tensor] = (),
             inputs: list | None = None) -> torch.Tensor:
        """z of ``gm`` with the parameters in ``params`` (canonical names) replaced and ``deltas`` added."""
        return self.runner(gm, params or {}, self.flat_inputs if inputs is None else inputs, list(deltas))


# ----------------------------------------------------------------------------------- fx
class _NamingTracer(fx.Tracer):
    """An fx tracer that records which node each module call returns, and where tracing failed.

    torch.nn modules with children (TransformerEncoder, MultiheadAttention, ...)
    are traced into, so their internals stay addressable.
    """

    def __init__(self, leaf_modules: Iterable[str] = ()):
        super().__init__()
        self.leaf_names = set(leaf_modules)
        self.outputs: dict[fx.Node, list[str]] = {}   # node -> module calls (innermost first)
        self.calls: dict[str, int] = {}
        self.stack: list[str] = []
        self.failed_in: list[str] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_names:
            return True
        return super().is_leaf_module(m, qualname) and not any(True for _ in m.children())

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        count = self.calls.get(path, 0)
        self.calls[path] = count + 1
        name = path if count == 0 else f"{path}@{count}"
        self.stack.append(name)
        try:
            result = super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:      # innermost module where tracing broke
                self.failed_in = list(self.stack)
            raise
        finally:
            self.stack.pop()
        first = result if isinstance(result, fx.Proxy) else None
        if first is None and isinstance(result, (tuple, list)) and result and isinstance(result[0], fx.Proxy):
            first = result[0]
        if first is not None:
            self.outputs.setdefault(first.node, []).append(name)
        return result


def describe_fx_failure(exc: Exception, stack: Sequence[str], model: nn.Module) -> str:
    where = stack[-1] if stack else None
    if where:
        mod = model.get_submodule(where.split("@")[0])
        loc = f"inside module {where!r} ({type(mod).__name__})"
        fix = (f"Treat it as one opaque node with Session(..., leaf_modules=[{where.split('@')[0]!r}]) "
               "(its internals are then not addressable, parameter space still works)")
    else:
        loc = f"in {type(model).__name__}.forward"
        fix = "Move the offending code into a submodule and pass it in leaf_modules=[...]"
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"torch.fx could not trace the model {loc}: {reason}. "
            "Python control flow that depends on tensor values (if/for on a tensor, .item(), "
            f"len() of a tensor) cannot be traced. {fix}, or pass trace=False for "
            "parameter-space analysis only.")


def _op_label(n: fx.Node, gm: fx.GraphModule) -> tuple[str, str]:
    if n.op == "placeholder":
        return "input", "input"
    if n.op == "call_module":
        return type(gm.get_submodule(n.target)).__name__, "module"
    if n.op == "call_method":
        return str(n.target), "method"
    target = n.target
    if isinstance(target, torch._ops.OpOverload):
        return target._opname, "function"
    return getattr(target, "__name__", str(target)), "function"


def _select_graph_output(graph: fx.Graph, output: Any) -> fx.Node:
    out = next(n for n in graph.nodes if n.op == "output")
    arg = out.args[0]
    if isinstance(arg, fx.Node) and output is None:
        return arg
    if output is None:
        leaves = [a for a in pytree.tree_leaves(arg) if isinstance(a, fx.Node)]
        if not leaves:
            raise TracingError("the model returns no tensor; return the outputs z the loss is applied to")
        node = leaves[0]
    elif isinstance(output, (str, int)):
        try:
            node = arg[output]
        except (KeyError, IndexError, TypeError) as exc:
            raise TracingError(f"output={output!r} does not select a value from the traced output") from exc
    else:
        raise TracingError("a callable output= needs the export capture; pass capture='export'")
    if not isinstance(node, fx.Node):
        raise TracingError(f"output={output!r} selects a constant, not a tensor")
    out.args = (node,)
    return node


@dataclass(frozen=True)
class _Meta:
    shape: tuple
    dtype: torch.dtype


def _shape_prop(gm: fx.GraphModule, args) -> dict[str, _Meta | None]:
    """Shape and dtype of every node's value on ``args`` (an interpreter run; prints nothing on failure)."""
    metas: dict[str, _Meta | None] = {}

    class Shapes(fx.Interpreter):
        def run_node(self, n):
            r = super().run_node(n)
            metas[n.name] = _Meta(tuple(r.shape), r.dtype) if torch.is_tensor(r) else None
            return r

    with torch.no_grad(), curvature_mode():
        Shapes(gm).run(*args)
    return metas


def _flat_user_inputs(gm: fx.GraphModule, model: nn.Module, args: tuple, kwargs: dict) -> list:
    """The forward's arguments (defaults filled in) in placeholder order: fx makes one per parameter."""
    sig = inspect.signature(model.forward)
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    values = list(bound.arguments.values())
    n = sum(1 for p in gm.graph.nodes if p.op == "placeholder")
    if n != len(values):
        raise TracingError(f"cannot bind the forward's {len(values)} arguments to the traced graph's {n} inputs")
    return values


def capture_fx(model: nn.Module, args: tuple, kwargs: dict, output: Any, leaf_modules: Iterable[str] = ()
               ) -> Capture:
    """torch.fx capture of ``model`` (hessexplore's structural twin; raises :class:`TracingError`)."""
    twin = model
    tracer = _NamingTracer(leaf_modules)
    try:
        sig = inspect.signature(model.forward)
        bound = sig.bind(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise TracingError(f"the inputs do not match {type(model).__name__}.forward: {exc}") from exc
    concrete = {k: p.default for k, p in sig.parameters.items()
                if k not in bound.arguments and p.default is not inspect.Parameter.empty}
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()):
        raise TracingError("torch.fx cannot trace a forward(*args, **kwargs)")
    try:
        graph = tracer.trace(twin, concrete_args=concrete or None)
    except Exception as exc:  # noqa: BLE001 - rethrown with a readable message
        raise TracingError(describe_fx_failure(exc, tracer.failed_in or [], model)) from exc
    z_node = _select_graph_output(graph, output)
    gm = fx.GraphModule(tracer.root, graph)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    # concrete_args leave placeholders with defaults; keep them (bound positionally by name)
    flat = _flat_user_inputs(gm, model, args, kwargs)
    substituted = substitute_ops(gm)
    B = _batch_size(flat)
    try:
        full = _shape_prop(gm, flat)
    except Exception as exc:  # noqa: BLE001
        raise TracingError(f"the traced model failed to run on the example batch: {exc}") from exc
    try:
        one = _shape_prop(gm, [a[:1] if torch.is_tensor(a) and a.dim() and a.shape[0] == B else a for a in flat])
    except Exception:  # noqa: BLE001 - a hard-coded batch size; fall back to the first dim
        one = None
    _names_to_first_items(gm, tracer.outputs, full)
    param_counts = {name: sum(p.numel() for p in m.parameters(recurse=False)) for name, m in model.named_modules()}
    infos: list[NodeInfo] = []
    for n in gm.graph.nodes:
        if n.op in ("output", "get_attr"):
            continue
        op, kind = _op_label(n, gm)
        owners = tracer.outputs.get(n, [])
        meta = full.get(n.name)
        shape = None
        if meta is not None and hasattr(meta, "shape") and meta.dtype.is_floating_point:
            s = tuple(meta.shape)
            if len(s) >= 1 and s[0] == B:
                m1 = one.get(n.name) if one is not None else None
                if one is None or (m1 is not None and hasattr(m1, "shape") and tuple(m1.shape) == (1,) + s[1:]):
                    shape = s[1:]
        stack = n.meta.get("nn_module_stack") or {}
        own = owners[0] if n.op == "call_module" and owners else (str(n.target) if n.op == "call_module" else None)
        scope = tuple(k for k in stack.keys() if k != own)
        inputs = tuple(a.name for a in n.all_input_nodes if a.op != "get_attr")
        params = param_counts.get(str(n.target), 0) if n.op == "call_module" else 0
        dt = meta.dtype if meta is not None and hasattr(meta, "dtype") else None
        infos.append(NodeInfo(n.name, op, kind, shape, 0, scope, tuple(owners), inputs, params, dt))
    called = {k.split("@")[0] for n in gm.graph.nodes for k in (n.meta.get("nn_module_stack") or {})}
    called |= {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    lock = threading.RLock()

    def run(g: fx.GraphModule, params: dict, inputs: list, deltas: list) -> torch.Tensor:
        if not params:
            return g(*inputs, *deltas)
        with lock:   # functional_call swaps tensors into the twin's modules: one thread at a time
            return functional_call(g, params, tuple(inputs) + tuple(deltas), strict=False)

    return Capture("fx", gm, infos, z_node.name, flat, run, called, substituted,
                   flatten=lambda a, k: _flat_user_inputs(gm, model, a, k))


def _names_to_first_items(gm: fx.GraphModule, outputs: dict[fx.Node, list[str]], meta: dict) -> None:
    """A module call returning a tuple (nn.LSTM, nn.MultiheadAttention as a leaf) names its first item.

    fx records one tuple-valued node for such a call; the name moves to the
    ``getitem(node, 0)`` that reads its first element (recursively), if the
    model reads it.
    """
    import operator
    for node in list(outputs):
        cur = node
        while meta.get(cur.name) is None or not hasattr(meta.get(cur.name), "shape"):
            nxt = next((u for u in cur.users if u.op == "call_function" and u.target is operator.getitem
                        and len(u.args) > 1 and u.args[1] == 0), None)
            if nxt is None:
                break
            cur = nxt
        if cur is not node:
            outputs[cur] = outputs.pop(node) + outputs.get(cur, [])


def _batch_size(flat: Sequence) -> int:
    for a in flat:
        if torch.is_tensor(a) and a.dim() > 0:
            return int(a.shape[0])
    raise TracingError("the model inputs contain no tensor with a batch dimension")


# ------------------------------------------------------------------------------- export
def _record_module_outputs(model: nn.Module, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """Eager run with forward hooks: module call name (``name`` / ``name@k``) → its first output tensor."""
    got: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []

    def hook_for(name: str):
        def hook(m, inp, out):
            k = counts.get(name, 0)
            counts[name] = k + 1
            t = first_tensor(out)
            if t is not None:
                got[name if k == 0 else f"{name}@{k}"] = t.detach()
        return hook

    for name, m in model.named_modules():
        if name:
            handles.append(m.register_forward_hook(hook_for(name)))
    try:
        with torch.no_grad(), curvature_mode():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return got


def _scope_names(n: fx.Node) -> list[str]:
    """Module call names of a node's nn_module_stack, outermost first, root excluded."""
    out = []
    for key, val in (n.meta.get("nn_module_stack") or {}).items():
        name = val[0] if isinstance(val, tuple) else str(val)
        if not name:
            continue
        at = key.rsplit("@", 1)[1] if "@" in key and key.rsplit("@", 1)[1].isdigit() else None
        out.append(f"{name}@{at}" if at else name)
    return out


def capture_export(model: nn.Module, args: tuple, kwargs: dict, output: Any) -> Capture:
    """torch.export capture (non-strict, dynamic batch), functionalised; raises :class:`TracingError`."""
    from torch.export import Dim

    kwargs = forward_kwargs(model, args, kwargs)
    flat_args, _ = pytree.tree_flatten((args, kwargs))
    B = _batch_size(flat_args)

    def dyn(a):
        return {0: Dim.AUTO} if torch.is_tensor(a) and a.dim() > 0 and a.shape[0] == B else None

    dynamic = (tuple(pytree.tree_map(dyn, a) if not torch.is_tensor(a) else dyn(a) for a in args),
               {k: (pytree.tree_map(dyn, v) if not torch.is_tensor(v) else dyn(v)) for k, v in kwargs.items()})
    errors = []
    ep = None
    with curvature_mode():
        for dynamic_shapes in (dynamic, None):
            try:
                ep = torch.export.export(model, tuple(args), kwargs, strict=False, dynamic_shapes=(
                    None if dynamic_shapes is None else _as_signature(model, dynamic_shapes)))
                break
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        if ep is None:
            first = str(errors[-1]).strip().splitlines()[0] if str(errors[-1]).strip() else type(errors[-1]).__name__
            raise TracingError(f"torch.export could not capture the model either: {first[:300]}")
        if not _outplace_inplace_ops(ep):
            try:   # the general (slow: a second trace) way to remove mutations
                ep = ep.run_decompositions({})
            except Exception as exc:  # noqa: BLE001
                raise TracingError(f"torch.export captured the model but could not functionalise it: {exc}") \
                    from exc
        with torch.no_grad():
            eager_out = model(*args, **kwargs)
    gm = ep.graph_module
    sig = ep.graph_signature
    canon, alias = canonical_parameters(model)
    buffers = dict(model.named_buffers(remove_duplicate=False))
    constants = ep.constants
    kinds = []        # per placeholder: (kind, key)
    user_flat_index = 0
    for spec in sig.input_specs:
        k = spec.kind.name
        if k == "PARAMETER":
            kinds.append(("param", alias.get(spec.target, spec.target)))
        elif k == "BUFFER":
            kinds.append(("buffer", spec.target))
        elif k in ("CONSTANT_TENSOR", "CUSTOM_OBJ"):
            kinds.append(("const", spec.target))
        elif k == "USER_INPUT":
            kinds.append(("user", user_flat_index))
            user_flat_index += 1
        else:
            kinds.append(("other", spec.target))
    # --- the model output z: select it among the user outputs, make it the graph's only output
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    user_outs = [a for a, spec in zip(out_node.args[0], sig.output_specs) if spec.kind.name == "USER_OUTPUT"]
    z = select_output(eager_out, output)
    eager_leaves = pytree.tree_leaves(eager_out)
    idx = next((i for i, t in enumerate(eager_leaves) if t is z), None)
    if idx is None or idx >= len(user_outs) or not isinstance(user_outs[idx], fx.Node):
        raise TracingError("could not find the selected output in the exported graph; pass output= naming it")
    z_node = user_outs[idx]
    out_node.args = (z_node,)
    gm.graph.eliminate_dead_code()
    substituted = substitute_ops(gm)
    gm.recompile()
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    user_nodes = [p for p, (k, _) in zip(placeholders, kinds) if k == "user"]
    if len(user_nodes) != len(flat_args):
        raise TracingError("the exported graph's inputs do not match the flattened model inputs")
    # --- per-sample shapes from the symbolic batch dimension
    batch_sym = None
    for p, a in zip(user_nodes, flat_args):
        v = p.meta.get("val")
        if torch.is_tensor(a) and a.dim() and a.shape[0] == B and v is not None and isinstance(v.shape[0], torch.SymInt):
            batch_sym = v.shape[0].node.expr
            break

    def per_sample(n: fx.Node) -> tuple[tuple[int, ...] | None, int]:
        v = n.meta.get("val")
        if not torch.is_tensor(v) or not v.dtype.is_floating_point or v.dim() == 0:
            return None, 0
        if batch_sym is not None:
            dims = [i for i, s in enumerate(v.shape) if isinstance(s, torch.SymInt) and s.node.expr == batch_sym]
            if len(dims) != 1:
                return None, 0
            if any(isinstance(s, torch.SymInt) for i, s in enumerate(v.shape) if i != dims[0]):
                return None, 0
            bd = dims[0]
            return tuple(int(s) for i, s in enumerate(v.shape) if i != bd), bd
        if int(v.shape[0]) == B:
            return tuple(int(s) for s in v.shape[1:]), 0
        return None, 0

    # --- which nodes to show: tensors on the data path (from a user input) that reach z
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    order_by_name = {n.name: i for n, i in order.items()}
    from_input: set[fx.Node] = set(user_nodes)
    for n in gm.graph.nodes:
        if n.op == "call_function" and any(a in from_input for a in n.all_input_nodes):
            from_input.add(n)
    reaches: set[fx.Node] = {z_node}
    for n in reversed(list(gm.graph.nodes)):
        if n in reaches:
            reaches.update(n.all_input_nodes)
    shown = [n for n in gm.graph.nodes if n in from_input and n in reaches and torch.is_tensor(n.meta.get("val"))]
    shown_set = set(shown)

    def shown_inputs(n: fx.Node) -> tuple[str, ...]:
        out, todo, seen = [], list(n.all_input_nodes), set()
        while todo:
            a = todo.pop(0)
            if a in seen:
                continue
            seen.add(a)
            if a in shown_set:
                out.append(a.name)
            elif a.op != "placeholder" or a in user_nodes:
                todo.extend(a.all_input_nodes)
        return tuple(sorted(out, key=lambda s: order_by_name[s]))

    # --- module outputs: per module call, the node(s) of its scope used outside it; match the eager output
    recorded = _record_module_outputs(model, args, kwargs)
    in_scope: dict[str, list[fx.Node]] = {}
    scopes: dict[fx.Node, list[str]] = {}
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        names = _scope_names(n)
        scopes[n] = names
        for s in names:
            in_scope.setdefault(s, []).append(n)
    outputs_of: dict[fx.Node, list[str]] = {}
    values: dict[str, torch.Tensor] | None = None
    for mod, members in in_scope.items():
        member_set = set(members)
        esc = [m for m in members if m in shown_set and
               any(u not in member_set for u in m.users)]
        ref = recorded.get(mod)
        if ref is not None:
            same = [m for m in esc if _shape_matches(m, ref, B)]
            if len(same) > 1:
                if values is None:
                    values = _node_values(gm, placeholders, kinds, canon, buffers, constants, flat_args)
                exact = [m for m in same if m.name in values and values[m.name].shape == ref.shape
                         and torch.allclose(values[m.name].to(ref.dtype), ref, rtol=1e-5, atol=1e-6)]
                same = exact or same
            esc = same or esc
        if not esc:
            continue
        node = max(esc, key=lambda m: order[m])
        outputs_of.setdefault(node, []).append(mod)
    depth = {mod: mod.count(".") for mod in in_scope}
    for node in outputs_of:   # innermost module first
        outputs_of[node].sort(key=lambda m: (-depth[m], m))
    containers = {mod for mod, members in in_scope.items() if sum(1 for m in members if m in shown_set) > 1}
    infos: list[NodeInfo] = []
    for n in shown:
        shape, bd = per_sample(n)
        owners = outputs_of.get(n, [])
        if n.op == "placeholder":
            op, kind = "input", "input"
        elif owners:
            mod_type = type(model.get_submodule(owners[0].split("@")[0])).__name__
            op, kind = mod_type, "module"
        else:
            op, kind = _op_label(n, gm)
        scope = tuple(s for s in scopes.get(n, []) if s in containers)
        params = 0
        if owners and owners[0] not in containers:
            params = sum(p.numel() for p in model.get_submodule(owners[0].split("@")[0]).parameters(recurse=False))
        val = n.meta.get("val")
        infos.append(NodeInfo(n.name, op, kind, shape, bd, scope, tuple(owners), shown_inputs(n), params,
                              val.dtype if torch.is_tensor(val) else None))
    called = {s.split("@")[0] for s in in_scope}

    def run(g: fx.GraphModule, params: dict, inputs: list, deltas: list) -> torch.Tensor:
        live = _live_args(kinds, params, canon, buffers, constants, inputs)
        return g(*live, *deltas)

    def flatten(a: tuple, k: dict) -> list:
        return pytree.tree_flatten((tuple(a), forward_kwargs(model, a, k)))[0]

    return Capture("export", gm, infos, z_node.name, list(flat_args), run, called, substituted, flatten=flatten)


_VIEW_OPS = {"view", "_unsafe_view", "reshape", "transpose", "t", "permute", "expand", "select", "slice",
             "narrow", "squeeze", "unsqueeze", "unflatten", "flatten", "as_strided", "diagonal", "unbind",
             "split", "split_with_sizes", "chunk", "view_as", "alias", "detach", "unfold", "movedim",
             "swapaxes", "getitem", "contiguous", "numpy_T", "mT", "expand_as", "real", "imag"}


def _outplace_inplace_ops(ep) -> bool:
    """Rewrite ``aten.op_(x, …)`` as ``aten.op(x, …)`` in ``ep``'s graph, in place; False if that is unsafe.

    torch.export's training IR keeps the model's in-place ops (``out += identity``,
    ``ReLU(inplace=True)``); hessexplore adds δ's to values, so mutations must go.
    Every later use of the mutated tensor reads the new value instead.  Unsafe
    (→ the caller falls back to ``run_decompositions``): buffer mutations, an
    in-place op on a view or on an input, or one without an out-of-place twin.
    """
    if any(spec.kind.name != "USER_OUTPUT" for spec in ep.graph_signature.output_specs):
        return False
    gm = ep.graph_module
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    todo = []
    for n in gm.graph.nodes:
        if n.op != "call_function" or not isinstance(n.target, torch._ops.OpOverload):
            continue
        schema = n.target._schema
        mutates = any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
        if not mutates:
            continue
        name = n.target._opname
        if not name.endswith("_") or name.startswith("_") or not n.args or not isinstance(n.args[0], fx.Node):
            return False
        base = n.args[0]
        base_op = base.target._opname if isinstance(base.target, torch._ops.OpOverload) else \
            getattr(base.target, "__name__", "")
        if base.op == "placeholder" or base_op in _VIEW_OPS or any(
                u is not n and (u.target._opname if isinstance(u.target, torch._ops.OpOverload) else
                                getattr(u.target, "__name__", "")) in _VIEW_OPS and order[u] < order[n]
                for u in base.users):
            return False   # aliasing: a view of it (or it, a view) would see the mutation
        packet = getattr(torch.ops.aten, name[:-1], None)
        overload = getattr(packet, n.target._overloadname, None) if packet is not None else None
        if overload is None:
            return False
        todo.append((n, base, overload))
    for n, base, overload in todo:
        n.target = overload
        for u in list(base.users):
            if u is not n and order[u] > order[n]:
                u.replace_input_with(base, n)
    if todo:
        gm.graph.lint()
        gm.recompile()
    return True


def _as_signature(model: nn.Module, dynamic: tuple) -> dict:
    """dynamic_shapes keyed by forward's parameter names (positional args bound in order)."""
    args_dyn, kw_dyn = dynamic
    names = [k for k, p in inspect.signature(model.forward).parameters.items()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    out = dict(zip(names, args_dyn))
    out.update(kw_dyn)
    return out


def _shape_matches(n: fx.Node, ref: torch.Tensor, B: int) -> bool:
    v = n.meta.get("val")
    if not torch.is_tensor(v) or v.dim() != ref.dim():
        return False
    return all(isinstance(a, torch.SymInt) or int(a) == b for a, b in zip(v.shape, ref.shape))


def _live_args(kinds, params: dict, canon: dict, buffers: dict, constants: dict, inputs: list) -> list:
    out = []
    for kind, key in kinds:
        if kind == "param":
            t = params.get(key)
            out.append(t if t is not None else canon[key])
        elif kind == "buffer":
            out.append(buffers[key])
        elif kind == "const":
            out.append(constants[key])
        elif kind == "user":
            out.append(inputs[key])
        else:
            out.append(None)
    return out


def _node_values(gm, placeholders, kinds, canon, buffers, constants, flat_args) -> dict[str, torch.Tensor]:
    vals: dict[str, torch.Tensor] = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            r = super().run_node(n)
            if torch.is_tensor(r):
                vals[n.name] = r.detach()
            return r

    with torch.no_grad(), curvature_mode():
        Rec(gm).run(*_live_args(kinds, {}, canon, buffers, constants, flat_args))
    return vals


# ------------------------------------------------------------------------------ entry
def capture(model: nn.Module, args: tuple, kwargs: dict, *, output: Any = None, backend: str = "auto",
            leaf_modules: Iterable[str] = ()) -> Capture:
    """Capture ``model(*args, **kwargs)`` with the chosen backend (see module docstring).

    ``auto``: fx first; if fx cannot trace the model, or hides torch.nn
    containers, or cannot bind its inputs, torch.export.  When both fail the
    error names the construct fx stopped at and the ways out.
    """
    if backend not in BACKENDS:
        raise TracingError(f"capture must be one of {BACKENDS}, got {backend!r}")
    leaf_modules = list(leaf_modules)
    try:
        model = structural_twin(model)   # hooks, export's re-parametrisation and fx all touch the twin only
    except Exception as exc:  # noqa: BLE001 - a module that cannot be deep-copied
        raise TracingError(f"could not make a private copy of the model's modules to trace ({exc}); "
                           "make its modules deep-copyable, or pass trace=False for parameter space only") from exc
    fx_error = None
    if backend in ("auto", "fx"):
        try:
            return capture_fx(model, args, kwargs, output, leaf_modules)
        except TracingError as exc:
            if backend == "fx":
                raise
            fx_error = exc
    if leaf_modules and backend == "auto":
        raise fx_error
    try:
        cap = capture_export(model, args, kwargs, output)
    except TracingError as exc:
        if fx_error is None:
            raise
        raise TracingError(f"{fx_error} ({exc})") from exc
    cap.fallback_reason = str(fx_error) if fx_error is not None else None
    return cap
