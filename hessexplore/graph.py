"""Model → DAG: trace a PyTorch model with torch.fx and name its intermediate values.

A **node** is an intermediate value of the forward pass with a leading batch
dimension: an fx node whose output is a floating tensor of shape (B, *s).
Its per-sample shape is ``s`` and its dimension ``d = prod(s)`` (conv maps are
flattened C·H·W, row-major).  A module's qualified name (``"blocks.0"``)
addresses the output of that module's forward call, also for containers and
for modules whose forward is functional code; fx node names (``"add_1"``)
address everything else.

This layer knows nothing about curvature: it only traces, names, measures
shapes, and builds the *perturbed forward*
``f(x, δ_1, …, δ_k) = model(x)`` with ``δ_i`` (per-sample shape, shared by
all samples) added to the output of node ``i``.
"""
from __future__ import annotations

import copy
import math
import operator
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import TracingError, unknown_name


@dataclass(frozen=True)
class Node:
    """One traced value.  ``shape`` is per sample (batch dimension removed)."""

    name: str                      # primary name (innermost module or fx name)
    fx_name: str                   # torch.fx node name
    op: str                        # "Linear", "relu", "add", "input", ...
    kind: str                      # "module" | "function" | "method" | "input"
    shape: tuple[int, ...] | None  # per-sample shape, None if not a batched float tensor
    scope: tuple[str, ...]         # enclosing container modules, outermost first
    aliases: tuple[str, ...]       # container modules whose forward output is this node
    inputs: tuple[str, ...]        # fx names of the nodes this one reads
    params: int                    # parameters owned directly by the module called here

    @property
    def addressable(self) -> bool:
        return self.shape is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape) if self.shape is not None else 0


class _NamingTracer(fx.Tracer):
    """An fx tracer that records which node each module call returns, and where tracing failed."""

    def __init__(self, leaf_modules: Iterable[str] = ()):
        super().__init__()
        self.leaf_names = set(leaf_modules)
        self.outputs: dict[fx.Node, list[str]] = {}   # node -> module names (innermost first)
        self.calls: dict[str, int] = {}
        self.stack: list[str] = []
        self.failed_in: list[str] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaf_names or super().is_leaf_module(m, qualname)

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
        if isinstance(result, fx.Proxy):
            self.outputs.setdefault(result.node, []).append(name)
        return result


def _describe_trace_failure(exc: Exception, stack: Sequence[str], model: nn.Module) -> str:
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
    name = getattr(target, "__name__", str(target))
    return name, "function"


class ModelGraph:
    """The traced DAG of a model on an example batch.

    ``nodes`` are in topological order; ``addressable`` ones (batched floating
    tensors) can be perturbed.  ``resolve(name)`` accepts a primary name, a
    container alias or an fx node name.
    """

    def __init__(self, model: nn.Module, example_args: tuple, leaf_modules: Iterable[str] = ()):
        tracer = _NamingTracer(leaf_modules)
        try:
            graph = tracer.trace(model)
        except Exception as exc:  # noqa: BLE001 - rethrown with a readable message
            raise TracingError(_describe_trace_failure(exc, tracer.failed_in or [], model)) from exc
        self.module = fx.GraphModule(tracer.root, graph)
        self.model = model
        self.batch_size = int(example_args[0].shape[0])
        self._shapes = self._per_sample_shapes(example_args)
        self._build_nodes(tracer.outputs)

    # -- construction -------------------------------------------------------------------------
    def _propagate(self, args) -> dict[str, object]:
        gm = fx.GraphModule(self.module, copy.deepcopy(self.module.graph))
        with torch.no_grad():
            ShapeProp(gm).propagate(*args)
        return {n.name: n.meta.get("tensor_meta") for n in gm.graph.nodes}

    def _per_sample_shapes(self, args) -> dict[str, tuple[int, ...] | None]:
        """Per-sample shape of each node whose output is (B, *s) for batch B and (1, *s) for batch 1."""
        try:
            full = self._propagate(args)
        except Exception as exc:  # noqa: BLE001
            raise TracingError(f"the traced model failed to run on the example batch: {exc}") from exc
        try:
            one = self._propagate(tuple(a[:1] if torch.is_tensor(a) else a for a in args))
        except Exception:  # noqa: BLE001 - a hard-coded batch size; fall back to the first dim
            one = None
        shapes: dict[str, tuple[int, ...] | None] = {}
        B = self.batch_size
        for name, meta in full.items():
            shape = None
            if meta is not None and hasattr(meta, "shape") and meta.dtype.is_floating_point:
                s = tuple(meta.shape)
                if len(s) >= 1 and s[0] == B:
                    m1 = one.get(name) if one is not None else None
                    if one is None or (m1 is not None and hasattr(m1, "shape") and tuple(m1.shape) == (1,) + s[1:]):
                        shape = s[1:]
            shapes[name] = shape
        return shapes

    def _build_nodes(self, module_outputs: dict[fx.Node, list[str]]) -> None:
        gm = self.module
        param_counts = {name: sum(p.numel() for p in m.parameters(recurse=False))
                        for name, m in self.model.named_modules()}
        self.nodes: list[Node] = []
        self._by_fx: dict[str, Node] = {}
        self._lookup: dict[str, Node] = {}
        for n in gm.graph.nodes:
            if n.op in ("output", "get_attr"):
                continue
            op, kind = _op_label(n, gm)
            owners = module_outputs.get(n, [])
            if n.op == "call_module":
                primary = owners[0] if owners else str(n.target)
                aliases = tuple(o for o in owners[1:])
                params = param_counts.get(str(n.target), 0)
            else:
                primary = n.name if not owners else owners[0]
                aliases = tuple(owners[1:])
                params = 0
            stack = n.meta.get("nn_module_stack") or {}
            own = str(n.target) if n.op == "call_module" else None
            scope = tuple(k for k in stack.keys() if k != own)
            inputs = tuple(a.name for a in n.all_input_nodes if a.op != "get_attr")
            node = Node(primary, n.name, op, kind, self._shapes.get(n.name), scope, aliases, inputs, params)
            self.nodes.append(node)
            self._by_fx[n.name] = node
        for node in self.nodes:  # fx names first, module names win on clashes
            self._lookup.setdefault(node.fx_name, node)
        for node in self.nodes:
            for key in (node.name,) + node.aliases:
                self._lookup[key] = node
        outs = [n for n in gm.graph.nodes if n.op == "output"]
        out_arg = outs[0].args[0] if outs else None
        if not isinstance(out_arg, fx.Node):
            raise TracingError("the model must return a single tensor (the outputs z the loss is applied to); "
                               "wrap it so forward returns one tensor, e.g. the logits")
        self.output = self._by_fx[out_arg.name]
        if self.output.shape is None:
            raise TracingError("the model output must be a floating tensor with the batch as first dimension, "
                               f"got node {self.output.name!r}")

    # -- queries ----------------------------------------------------------------------------------
    @property
    def addressable(self) -> list[Node]:
        return [n for n in self.nodes if n.addressable]

    @property
    def names(self) -> list[str]:
        """Primary names of the addressable nodes, topological order."""
        return [n.name for n in self.addressable]

    def resolve(self, name: str) -> Node:
        """The node addressed by ``name`` (primary name, container alias or fx name)."""
        node = self._lookup.get(name) if isinstance(name, str) else None
        if node is None:
            known = self.names + [a for n in self.addressable for a in n.aliases]
            raise unknown_name("node", name, known,
                               hint="A module's qualified name addresses its forward output; "
                                    "see Session.nodes.")
        if not node.addressable:
            raise unknown_name("node", name, self.names,
                               hint=f"{name!r} exists but is not a batched floating tensor, so it cannot be perturbed.")
        return node

    def distances(self, names: Sequence[str]) -> torch.Tensor:
        """Hop distances between the given nodes in the DAG contracted to them.

        Two chosen nodes are adjacent when a directed path joins them that
        passes through no other chosen node; the distance is the undirected
        shortest path in that contracted graph (a chain gives index
        differences).  Unreachable pairs get -1.  Returns (n, n) int64.
        """
        chosen = [self.resolve(n).fx_name for n in names]
        index = {f: i for i, f in enumerate(chosen)}
        succ: dict[str, list[str]] = {n.fx_name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                if i in succ:
                    succ[i].append(n.fx_name)
        adj: list[set[int]] = [set() for _ in chosen]
        for i, start in enumerate(chosen):
            seen, todo = set(), deque(succ[start])
            while todo:
                cur = todo.popleft()
                if cur in seen:
                    continue
                seen.add(cur)
                if cur in index and cur != start:
                    j = index[cur]
                    adj[i].add(j)
                    adj[j].add(i)
                    continue
                todo.extend(succ[cur])
        n = len(chosen)
        dist = torch.full((n, n), -1, dtype=torch.int64)
        for i in range(n):
            dist[i, i] = 0
            todo = deque([i])
            while todo:
                a = todo.popleft()
                for b in adj[a]:
                    if dist[i, b] < 0:
                        dist[i, b] = dist[i, a] + 1
                        todo.append(b)
        return dist

    def perturbed_forward(self, names: Sequence[str]) -> fx.GraphModule:
        """A GraphModule ``f(*inputs, δ_1, …, δ_k)`` equal to the model with δ_i added to node i.

        δ_i has node i's per-sample shape and is broadcast over the batch, so
        every sample sees the same perturbation (SCIENCE.md §1).  All uses of
        node i read the perturbed value, so perturbing v also moves every
        node downstream of it.
        """
        targets = [self.resolve(n).fx_name for n in names]
        if len(set(targets)) != len(targets):
            raise ValueError("perturbed_forward needs distinct nodes")
        old = self.module.graph
        new = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        old_nodes = list(old.nodes)
        for n in old_nodes:
            if n.op == "placeholder":
                env[n] = new.node_copy(n, lambda a: env[a])
        deltas = {t: new.placeholder(f"hx_delta_{i}") for i, t in enumerate(targets)}
        for n in old_nodes:
            if n.op == "placeholder":
                if n.name in deltas:
                    env[n] = new.call_function(operator.add, (env[n], deltas[n.name]))
                continue
            copied = new.node_copy(n, lambda a: env[a])
            if n.name in deltas:
                copied = new.call_function(operator.add, (copied, deltas[n.name]))
            env[n] = copied
        return fx.GraphModule(self.module, new)

    def activation_numel(self) -> int:
        """Σ over all batched tensor nodes of their per-sample size (a memory proxy for one column)."""
        return sum(n.numel for n in self.nodes)

    # -- export ---------------------------------------------------------------------------------
    def module_tree(self) -> list[dict]:
        """Container modules appearing in node scopes, with type, parent, parameter count and children."""
        names: dict[str, None] = {}
        for n in self.nodes:
            for s in n.scope + n.aliases:
                names.setdefault(s.split("@")[0], None)
        out = []
        for name in names:
            try:
                mod = self.model.get_submodule(name)
            except AttributeError:
                continue
            parent = name
            while "." in parent:        # nearest enclosing container that is drawn
                parent = parent.rsplit(".", 1)[0]
                if parent in names:
                    break
            else:
                parent = None
            children = [f"{name}.{c}" if name else c for c, _ in mod.named_children()]
            out.append({"name": name, "type": type(mod).__name__, "parent": parent,
                        "params": sum(p.numel() for p in mod.parameters()), "children": children})
        return out

    def to_json(self) -> dict:
        """The graph as plain JSON (see docs/widget-protocol.md): nodes, edges, modules."""
        by_fx = self._by_fx
        nodes = [{
            "id": n.name, "label": n.name, "op": n.op, "kind": n.kind,
            "shape": list(n.shape) if n.shape is not None else None, "numel": n.numel,
            "scope": list(n.scope), "aliases": list(n.aliases), "addressable": n.addressable,
            "params": n.params,
        } for n in self.nodes]
        edges = [[by_fx[i].name, n.name] for n in self.nodes for i in n.inputs if i in by_fx]
        return {"nodes": nodes, "edges": edges, "modules": self.module_tree(),
                "batch_size": self.batch_size}


@dataclass
class ParameterGroups:
    """Parameter groups of a model: a module name → the parameters under it.

    ``names`` lists modules that own parameters directly (what the graph
    shows); any module qualified name (all parameters under it), a single
    parameter's qualified name, or ``"*"`` (every parameter) is accepted by
    :meth:`resolve`.
    """

    model: nn.Module
    names: list[str] = field(init=False)

    def __post_init__(self):
        self.params = dict(self.model.named_parameters())
        self.names = [name for name, m in self.model.named_modules()
                      if any(True for _ in m.parameters(recurse=False))]

    def resolve(self, name: str) -> list[str]:
        """Parameter names (model.named_parameters order) in group ``name``."""
        if name == "*":
            return list(self.params)
        if name in self.params:
            return [name]
        modules = dict(self.model.named_modules())
        if isinstance(name, str) and name in modules and name != "":
            prefix = name + "."
            found = [p for p in self.params if p.startswith(prefix)]
            if found:
                return found
            raise unknown_name("parameter group", name, self.names,
                               hint=f"module {name!r} has no parameters.")
        raise unknown_name("parameter group", name, self.names,
                           hint="Use a module's qualified name (all parameters under it), a parameter's "
                                "name, or '*' for all parameters; see Session.groups.")

    def dim(self, name: str) -> int:
        return sum(self.params[p].numel() for p in self.resolve(name))
