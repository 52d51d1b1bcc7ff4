"""Float64 oracles for models of any shape of input and output (HF transformers included).

Independent of hessexplore's capture and operators: plain autograd on a private
float64 deep copy of the model, under PyTorch's own math-SDPA / no-fast-path /
no-oneDNN settings (the fused kernels have no second derivatives).

* Activation space: ``register_forward_hook`` on the copy adds δ (per-sample shape,
  broadcast over the batch) to the **first tensor** of a module call's output
  (``name@k``: its k-th call); an input name adds δ to that input.  Each site
  must fire exactly once.
* Parameter space: the copy's parameters are deleted and written back as plain
  tensors from one flat θ, every owner of a tied tensor included.
* Hessians: the per-row double-backward loop of ``oracles.hessian_rows_loop``;
  GN: ``oracles.gauss_newton`` (dense Jacobian and loss Hessian in the outputs).
"""
from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.utils._pytree as pytree
from torch import nn

import oracles as O

DT = torch.float64


@contextlib.contextmanager
def math_kernels():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    fast = torch.backends.mha.get_fastpath_enabled()
    mk = torch._C._get_mkldnn_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    torch._C._set_mkldnn_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        torch._C._set_mkldnn_enabled(mk)


class ExplicitHardsigmoid(nn.Module):
    """hardsigmoid written out (its ATen backward has no derivative): relu6(x + 3) / 6."""

    def forward(self, x):
        return torch.minimum(torch.relu(x + 3), torch.full_like(x, 6.0)) / 6


def _f64(t):
    if torch.is_tensor(t) and t.is_floating_point():
        return t.detach().to(DT)
    return t


def _first_tensor_replaced(out, fn):
    if torch.is_tensor(out):
        return fn(out)
    leaves, spec = pytree.tree_flatten(out)
    i = next(i for i, t in enumerate(leaves) if torch.is_tensor(t))
    leaves[i] = fn(leaves[i])
    return pytree.tree_unflatten(leaves, spec)


class ZooOracle:
    def __init__(self, case):
        self.model = copy.deepcopy(case.model).to(DT).eval()
        for name, m in list(self.model.named_modules()):
            for cname, child in list(m.named_children()):
                if isinstance(child, nn.Hardsigmoid):
                    setattr(m, cname, ExplicitHardsigmoid())
        self.x = pytree.tree_map(_f64, case.x)
        self.y = _f64(case.y)
        self.loss_fn = case.loss_fn
        self.output = case.output
        self.modules = dict(self.model.named_modules())
        self._shapes: dict[str, tuple] = {}

    # -- running -------------------------------------------------------------------------
    def _call(self, x=None):
        x = self.x if x is None else x
        kw = dict(x) if isinstance(x, dict) else {}
        if "use_cache" in getattr(self.model.forward, "__code__", type("c", (), {"co_varnames": ()})).co_varnames:
            kw.setdefault("use_cache", False)
        with math_kernels():
            out = self.model(**kw) if isinstance(x, dict) else self.model(x)
        if self.output is None:
            return out if torch.is_tensor(out) else next(t for t in pytree.tree_leaves(out) if torch.is_tensor(t))
        return out[self.output]

    def _sites(self, sites, deltas):
        """Install hooks adding deltas; returns (x, handles, fired)."""
        fired = {s: 0 for s in sites}
        handles = []
        x = self.x
        counts: dict[str, int] = {}
        for s in sites:
            base, _, k = s.partition("@")
            k = int(k) if k else 0
            if base in self.modules and base != "":
                def hook(m, inp, out, s=s, base=base, k=k):
                    c = counts.get(s, 0)
                    counts[s] = c + 1
                    if c != k:
                        return None
                    fired[s] += 1
                    return _first_tensor_replaced(out, lambda t: t + deltas[s])
                handles.append(self.modules[base].register_forward_hook(hook))
            else:   # an input
                fired[s] += 1
                if isinstance(x, dict):
                    x = {**x, s: x[s] + deltas[s]}
                else:
                    x = x + deltas[s]
        return x, handles, fired

    def shape(self, site):
        if site not in self._shapes:
            got = {}
            x, handles, _ = self._sites([site], {site: 0})
            base, _, k = site.partition("@")
            if base in self.modules and base != "":
                for h in handles:
                    h.remove()
                counts = {"n": 0}

                def rec(m, i, o):
                    if counts["n"] == (int(k) if k else 0):
                        t = o if torch.is_tensor(o) else next(t for t in pytree.tree_leaves(o) if torch.is_tensor(t))
                        got["s"] = tuple(t.shape[1:])
                    counts["n"] += 1
                h = self.modules[base].register_forward_hook(rec)
                try:
                    with torch.no_grad():
                        self._call()
                finally:
                    h.remove()
            else:
                t = self.x[site] if isinstance(self.x, dict) else self.x
                got["s"] = tuple(t.shape[1:])
            self._shapes[site] = got["s"]
        return self._shapes[site]

    def z_fn(self, sites):
        shapes = [self.shape(s) for s in sites]
        dims = [math.prod(s) for s in shapes]

        def z_of(u):
            deltas = {s: d.view(sh) for s, d, sh in zip(sites, torch.split(u, dims), shapes)}
            x, handles, fired = self._sites(sites, deltas)
            try:
                z = self._call(x)
            finally:
                for h in handles:
                    h.remove()
            assert all(c == 1 for c in fired.values()), f"oracle sites fired {fired}"
            return z
        return z_of, dims

    def block(self, v, w):
        sites = list(dict.fromkeys([v, w]))
        z_of, dims = self.z_fn(sites)
        u0 = torch.zeros(sum(dims), dtype=DT)
        loss = lambda u: self.loss_fn(z_of(u), self.y)  # noqa: E731
        offs = dict(zip(sites, [sum(dims[:i]) for i in range(len(sites))]))
        iv = slice(offs[v], offs[v] + dims[sites.index(v)])
        iw = slice(offs[w], offs[w] + dims[sites.index(w)])
        with math_kernels():
            H = O.hessian_rows_loop(loss, u0)
            GN, _, _ = O.gauss_newton(z_of, self.loss_fn, self.y, u0)
        return {"full": H[iv, iw], "gn": GN[iv, iw]}


class ZooParameterOracle:
    def __init__(self, case):
        self.case = case
        self.base = ZooOracle(case)
        m = self.base.model
        canon = dict(m.named_parameters())
        by_id = {id(p): n for n, p in canon.items()}
        self.slots = []
        for name, p in m.named_parameters(remove_duplicate=False):
            mod_name, _, attr = name.rpartition(".")
            self.slots.append((m.get_submodule(mod_name) if mod_name else m, attr, by_id[id(p)]))
        self.names = list(canon)
        self.shapes = {n: p.shape for n, p in canon.items()}
        self.theta0 = {n: p.detach().clone() for n, p in canon.items()}
        for mod, attr, _ in self.slots:
            mod._parameters.pop(attr, None)

    def group(self, g, groups):
        return groups.resolve(g)

    def block(self, v_params, w_params):
        names = list(dict.fromkeys(v_params + w_params))
        sizes = [self.theta0[n].numel() for n in names]
        u0 = torch.cat([self.theta0[n].reshape(-1) for n in names])

        def z_of(u):
            vals = dict(self.theta0)
            for n, t in zip(names, torch.split(u, sizes)):
                vals[n] = t.view(self.shapes[n])
            for mod, attr, c in self.slots:
                setattr(mod, attr, vals[c])
            return self.base._call()

        loss = lambda u: self.case.loss_fn(z_of(u), self.base.y)  # noqa: E731
        idx = {n: torch.arange(sum(sizes[:i]), sum(sizes[:i + 1])) for i, n in enumerate(names)}
        iv = torch.cat([idx[n] for n in v_params])
        iw = torch.cat([idx[n] for n in w_params])
        with math_kernels():
            H = O.hessian_rows_loop(loss, u0, rows=iv.tolist())
            GN, _, _ = O.gauss_newton(z_of, self.case.loss_fn, self.base.y, u0)
        return {"full": H[:, iw], "gn": GN[iv][:, iw]}
