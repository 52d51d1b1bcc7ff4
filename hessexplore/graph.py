"""Model → DAG: the captured forward as named nodes with per-sample shapes.

A **node** is an intermediate value of the forward pass that carries the batch:
a floating tensor with the batch in one dimension (the first, except inside
e.g. ``nn.MultiheadAttention`` without ``batch_first``).  Its per-sample shape
is the shape without that dimension, its dimension ``d = prod(shape)`` (conv
maps are flattened C·H·W, row-major).  A module's qualified name
(``"blocks.0"``, ``"encoder.layers.1.self_attn"``, ``"h.0.attn"``) addresses
the output of that module's forward call — for a module returning a tuple or a
``ModelOutput``, its first tensor; a second call of the same module is
``name@1``.  Graph node names (``"add_1"``) address everything else.

How the model is captured (torch.fx or torch.export) is :mod:`hessexplore.capture`'s
business; this layer knows nothing about curvature: it names, measures and
builds the *perturbed forward* ``f(δ_1, …, δ_k) = model(x)`` with ``δ_i``
(per-sample shape, shared by all samples) added to node ``i``.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .capture import Capture, canonical_parameters
from .errors import HessExploreError, unknown_name


@dataclass(frozen=True)
class Node:
    """One captured value.  ``shape`` is per sample (batch dimension removed)."""

    name: str                      # primary name (innermost module call or graph node name)
    fx_name: str                   # graph node name
    op: str                        # "Linear", "relu", "add", "input", ...
    kind: str                      # "module" | "function" | "method" | "input"
    shape: tuple[int, ...] | None  # per-sample shape, None if not a batched float tensor
    scope: tuple[str, ...]         # enclosing container module calls, outermost first
    aliases: tuple[str, ...]       # container modules whose forward output is this node
    inputs: tuple[str, ...]        # graph names of the nodes this one reads
    params: int                    # parameters owned directly by the module called here
    batch_dim: int = 0             # where the batch sits in the full tensor

    @property
    def addressable(self) -> bool:
        return self.shape is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape) if self.shape is not None else 0


class PerturbedForward:
    """``f(values, δ_1, …, δ_k)``: the model output z with δ_i added at node i (see :meth:`ModelGraph.perturbed_forward`).

    ``values`` optionally replaces parameters (canonical names → tensors); the
    user's model is never touched.
    """

    def __init__(self, capture: Capture, fx_names: Sequence[str]):
        self.capture = capture
        self.gm = capture.perturbed(list(fx_names))

    def __call__(self, *deltas: torch.Tensor, params: dict | None = None, inputs: list | None = None
                 ) -> torch.Tensor:
        return self.capture.call(self.gm, params, deltas, inputs)


class ModelGraph:
    """The captured DAG of a model on an example batch.

    ``nodes`` are in topological order; ``addressable`` ones (batched floating
    tensors) can be perturbed.  ``resolve(name)`` accepts a primary name, a
    container alias or a graph node name.  ``backend`` says how it was
    captured ("fx" or "export").
    """

    def __init__(self, capture: Capture, model: nn.Module):
        self.capture = capture
        self.model = model
        self.backend = capture.backend
        self.batch_size = _batch_of(capture.flat_inputs)
        self._build_nodes()

    def _build_nodes(self) -> None:
        self.nodes: list[Node] = []
        self._by_fx: dict[str, Node] = {}
        self._lookup: dict[str, Node] = {}
        for info in self.capture.nodes:
            owners = list(info.outputs_of)
            primary = owners[0] if owners else info.fx_name
            node = Node(primary, info.fx_name, info.op, info.kind, info.shape, info.scope, tuple(owners[1:]),
                        info.inputs, info.params, info.batch_dim)
            self.nodes.append(node)
            self._by_fx[info.fx_name] = node
        for node in self.nodes:  # graph names first, module names win on clashes
            self._lookup.setdefault(node.fx_name, node)
        for node in self.nodes:
            for key in (node.name,) + node.aliases:
                self._lookup[key] = node
        self.output = self._by_fx.get(self.capture.output)
        if self.output is None or self.output.shape is None:
            raise HessExploreError("the model output must be a floating tensor with the batch as its first "
                                   f"dimension, got node {self.capture.output!r}")

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

    def perturbed_forward(self, names: Sequence[str]) -> PerturbedForward:
        """``f(δ_1, …, δ_k, params=None)`` equal to the model output with δ_i added to node i.

        δ_i has node i's per-sample shape and is broadcast over the batch, so
        every sample sees the same perturbation (SCIENCE.md §1).  All uses of
        node i read the perturbed value, so perturbing v also moves every
        node downstream of it.
        """
        targets = [self.resolve(n).fx_name for n in names]
        if len(set(targets)) != len(targets):
            raise ValueError("perturbed_forward needs distinct nodes")
        return PerturbedForward(self.capture, targets)

    def locate(self, op: str) -> list[str]:
        """Where an op runs: the names of the nodes (module calls) whose op label is ``op``, any case."""
        key = op.lower().replace("_", "")
        return [n.name for n in self.nodes if n.op.lower().replace("_", "") == key]

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

    Every parameter *tensor* has one canonical name, its first owner in
    ``named_parameters()`` order (a tied ``lm_head.weight`` is
    ``transformer.wte.weight``).  ``names``, the default groups, are disjoint and
    cover every parameter: the outermost modules (other than the model itself)
    that own a parameter directly, each with all parameters under it, plus the
    model's own direct parameters by name.  :meth:`resolve` accepts any module's
    qualified name (all parameters under it; a module whose only parameter is
    tied resolves to that tensor's canonical name), a parameter's name (any
    owner's), or ``"*"`` (every parameter).
    """

    model: nn.Module
    names: list[str] = field(init=False)

    def __post_init__(self):
        self.params, self.alias = canonical_parameters(self.model)
        self._modules = dict(self.model.named_modules())
        names: list[str] = []
        covered: set[str] = set()
        for name, m in self._modules.items():
            if name == "":
                names.extend(p for p in self.params if "." not in p)   # the model's own parameters
                covered.update(p for p in self.params if "." not in p)
                continue
            own = [self.alias[f"{name}.{p}"] for p, _ in m.named_parameters(recurse=False, remove_duplicate=False)]
            if not own or any(name.startswith(g + ".") for g in names):
                continue
            members = self.resolve(name)
            if not set(members) - covered:      # only tied tensors another group owns already
                continue
            names.append(name)
            covered.update(members)
        self.names = names

    def resolve(self, name: str) -> list[str]:
        """Canonical parameter names (model.named_parameters order) in group ``name``."""
        if name == "*":
            return list(self.params)
        if isinstance(name, str) and name in self.alias:
            return [self.alias[name]]
        if isinstance(name, str) and name in self._modules and name != "":
            under = {self.alias[f"{name}.{p}"] for p, _ in
                     self._modules[name].named_parameters(remove_duplicate=False)}
            found = [p for p in self.params if p in under]
            if found:
                return found
            raise unknown_name("parameter group", name, self.names,
                               hint=f"module {name!r} has no parameters.")
        raise unknown_name("parameter group", name, self.names,
                           hint="Use a module's qualified name (all parameters under it), a parameter's "
                                "name, or '*' for all parameters; see Session.groups.")

    def check_disjoint(self, groups: Sequence[str]) -> None:
        """Raise a clear error when two of ``groups`` share a parameter tensor."""
        seen: dict[str, str] = {}
        for g in groups:
            for p in self.resolve(g):
                if p in seen:
                    raise HessExploreError(
                        f"parameter groups {seen[p]!r} and {g!r} overlap: they share parameter {p!r}; pass disjoint "
                        "groups, e.g. the defaults in Session.groups")
                seen[p] = g

    def dim(self, name: str) -> int:
        return sum(self.params[p].numel() for p in self.resolve(name))


def _batch_of(flat: Sequence[Any]) -> int:
    for a in flat:
        if torch.is_tensor(a) and a.dim() > 0:
            return int(a.shape[0])
    raise HessExploreError("the model inputs contain no tensor with a batch dimension")
