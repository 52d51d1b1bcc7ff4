"""Dense float64 oracles for Hessian blocks, independent of hessexplore's code paths.

Nothing here imports hessexplore, uses its fx graph rewriting, or uses
``torch.func`` (``torch.func.hessian`` is wrong through LayerNorm parameters on
torch 2.13, SCIENCE.md §6).  Everything is plain autograd on a private float64
copy of the model:

* **Activation space** – a zero perturbation δ (per-sample shape, broadcast over
  the batch) is added to a node's value:
  - the input ``"x"``: added to the input tensor;
  - a module (any qualified name, containers included): a ``register_forward_hook``
    on the *original* (untraced) model returning ``output + δ``;
  - an fx-only value (``add``, ``cat``, ``matmul``, ``softmax``, …): a
    ``torch.fx.Interpreter`` subclass whose ``run_node`` adds δ to that node's
    result (the graph itself is never rewritten).
  Every hook/interpreter site counts how often it fired; each must fire exactly
  once per forward, so a mis-addressed site fails loudly instead of giving 0.
* **Parameter space** – parameters are written as plain tensors into a copy of
  the model (their ``nn.Parameter`` entries deleted), so the loss is an ordinary
  function of one flat θ.
* **Full Hessian** – (1) ``torch.autograd.functional.hessian`` of L(flat u);
  (2) a per-row double-backward loop (``autograd.grad(create_graph=True)`` then one
  ``grad`` per unit vector); (3) central finite differences of the gradient.
* **Gauss–Newton** – dense output Jacobian ``torch.autograd.functional.jacobian``
  of z(u) (B, K, D) and the dense Hessian of the loss in the outputs
  ``torch.autograd.functional.hessian(loss(·, y))`` (B·K × B·K); GN = Jᵀ H_z J.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.autograd.functional import hessian as ag_hessian
from torch.autograd.functional import jacobian as ag_jacobian

DT = torch.float64


# ----------------------------------------------------------------------------- comparisons
def fro(A: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(A.to(DT).reshape(-1)))


def rel_err(A: torch.Tensor, B: torch.Tensor, tiny: float = 1e-300) -> float:
    """‖A − B‖_F / max(‖B‖_F, tiny)."""
    assert A.shape == B.shape, f"shape mismatch {tuple(A.shape)} vs {tuple(B.shape)}"
    return fro(A - B) / max(fro(B), tiny)


def assert_rel(A: torch.Tensor, B: torch.Tensor, rtol: float = 1e-8, scale: float = 0.0,
               floor: float = 1e-12, what: str = "") -> None:
    """‖A − B‖_F ≤ rtol·‖B‖_F + floor·scale.

    ``scale`` is the size of the quantities B was computed from (e.g. ‖H‖ + ‖H^GN‖
    for a tensor part H − H^GN): a part that is exactly 0 in exact arithmetic is
    only 0 to float64 round-off of those, never to 1e-8 of itself.
    """
    assert A.shape == B.shape, f"{what}: shape {tuple(A.shape)} vs oracle {tuple(B.shape)}"
    assert bool(torch.isfinite(A).all()), f"{what}: non-finite entries"
    err = fro(A - B)
    bound = rtol * fro(B) + floor * scale
    assert err <= bound, (f"{what}: ‖A−B‖={err:.3e} > {bound:.3e} (‖B‖={fro(B):.3e}, "
                          f"rel={err / max(fro(B), 1e-300):.3e})")


def assert_scalar(a: float, b: float, rtol: float = 1e-8, atol: float = 0.0, what: str = "") -> None:
    if math.isnan(b):
        assert math.isnan(a), f"{what}: got {a}, oracle NaN"
        return
    assert abs(a - b) <= rtol * abs(b) + atol, f"{what}: got {a!r}, oracle {b!r} (diff {abs(a - b):.3e})"


# ------------------------------------------------------------------------ dense derivatives
def hessian_autograd(f: Callable[[torch.Tensor], torch.Tensor], u0: torch.Tensor) -> torch.Tensor:
    """Oracle #1: torch.autograd.functional.hessian (plain double backward)."""
    return ag_hessian(f, u0.detach().clone())


def hessian_rows_loop(f: Callable[[torch.Tensor], torch.Tensor], u0: torch.Tensor,
                      rows: Sequence[int] | None = None) -> torch.Tensor:
    """Oracle #2: H[rows, :] by one double-backward per unit vector."""
    u = u0.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(u), u, create_graph=True)
    rows = range(u.numel()) if rows is None else rows
    out = []
    for j in rows:
        if g.requires_grad:
            (r,) = torch.autograd.grad(g[j], u, retain_graph=True, allow_unused=True)
        else:
            r = None
        out.append(torch.zeros_like(u) if r is None else r)
    return torch.stack(out).detach()


def gradient(f: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    u = u.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(u), u, allow_unused=True)
    return torch.zeros_like(u) if g is None else g.detach()


def hessian_fd_columns(f: Callable[[torch.Tensor], torch.Tensor], u0: torch.Tensor,
                       cols: Sequence[int], h: float = 1e-5) -> torch.Tensor:
    """Oracle #3: H[:, cols] by central differences of the (first-order autograd) gradient."""
    out = []
    for j in cols:
        e = torch.zeros_like(u0)
        e[j] = h
        out.append((gradient(f, u0 + e) - gradient(f, u0 - e)) / (2 * h))
    return torch.stack(out, dim=1)


def output_hessian(loss_fn: Callable, z0: torch.Tensor, y) -> torch.Tensor:
    """∂²L/∂z² of the actual (mean) loss, dense: (B·K, B·K) with z flattened row-major."""
    z0 = z0.detach()
    Hz = ag_hessian(lambda z: loss_fn(z.view_as(z0), y), z0.reshape(-1).clone())
    return Hz


def gauss_newton(z_of_u: Callable[[torch.Tensor], torch.Tensor], loss_fn: Callable, y,
                 u0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(GN, J, H_z): GN = Σ_b J_bᵀ (∂²L/∂z_b²) J_b computed as the dense J_flatᵀ H_z J_flat.

    J is (B, K, D) (z flattened per sample), H_z is (B·K, B·K); its cross-sample
    blocks are 0 for a per-sample-mean loss (asserted by the tests), so the dense
    product equals the per-sample sum.
    """
    u0 = u0.detach().clone()
    z0 = z_of_u(u0).detach()
    B = z0.shape[0]
    J = ag_jacobian(lambda u: z_of_u(u).reshape(B, -1), u0)           # (B, K, D)
    Hz = output_hessian(loss_fn, z0, y)                               # (BK, BK)
    Jf = J.reshape(-1, u0.numel())
    return Jf.T @ Hz @ Jf, J, Hz


def gauss_newton_per_sample(J: torch.Tensor, Hz: torch.Tensor) -> torch.Tensor:
    """Σ_b J_bᵀ H_z[b,b] J_b with the sample-diagonal blocks only (second, explicit summation)."""
    B, K, D = J.shape
    H4 = Hz.view(B, K, B, K)
    return sum(J[b].T @ H4[b, :, b, :] @ J[b] for b in range(B))


# ----------------------------------------------------------------------------- model copies
def _double(t):
    if torch.is_tensor(t):
        return t.detach().to(DT) if t.is_floating_point() else t.detach()
    return t


def float64_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(DT).eval()


# ------------------------------------------------------------------------ activation oracle
class _DeltaInterpreter(fx.Interpreter):
    """Runs a symbolically traced module, adding δ to the named fx nodes' results."""

    def __init__(self, gm: fx.GraphModule, deltas: dict, fired: dict):
        super().__init__(gm)
        self.deltas = deltas
        self.fired = fired

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        if n.name in self.deltas:
            self.fired[n.name] += 1
            result = result + self.deltas[n.name]
        return result


class ActivationOracle:
    """L(δ_1, …, δ_k) and z(δ_1, …, δ_k) for the model with δ_i added at site i.

    A site is ``"x"`` (the input), a module qualified name (forward hook on the
    untraced model; a container's hook perturbs the container's output), or an
    fx node name of ``torch.fx.symbolic_trace(model)`` (interpreter).  When any
    site is an fx node the forward runs through the interpreter; module sites
    must then be leaf modules (their hooks must fire exactly once, asserted).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y, loss_fn: Callable):
        self.model = float64_copy(model)
        self.x = _double(x)
        self.y = _double(y)
        self.loss_fn = loss_fn
        self.modules = dict(self.model.named_modules())
        self._gm = None
        self._shapes: dict[str, tuple[int, ...]] = {}

    @property
    def gm(self) -> fx.GraphModule:
        if self._gm is None:
            self._gm = fx.symbolic_trace(self.model)
        return self._gm

    def kind(self, site: str) -> str:
        if site == "x":
            return "input"
        if site in self.modules and site != "":
            return "module"
        if site in {n.name for n in self.gm.graph.nodes}:
            return "fx"
        raise KeyError(f"oracle does not know site {site!r}")

    def shape(self, site: str) -> tuple[int, ...]:
        """Per-sample shape of the value at ``site`` (batch dimension removed), measured by running."""
        if site not in self._shapes:
            got = {}
            kind = self.kind(site)
            with torch.no_grad():
                if kind == "input":
                    got["s"] = tuple(self.x.shape[1:])
                elif kind == "module":
                    def record(m, i, o):  # must return None (a returned value replaces the output)
                        got["s"] = tuple(o.shape[1:])
                    h = self.modules[site].register_forward_hook(record)
                    try:
                        self.model(self.x)
                    finally:
                        h.remove()
                else:
                    class Probe(fx.Interpreter):
                        def run_node(s, n):
                            r = super().run_node(n)
                            if n.name == site:
                                got["s"] = tuple(r.shape[1:])
                            return r
                    Probe(self.gm).run(self.x)
            assert "s" in got, f"site {site!r} never ran"
            self._shapes[site] = got["s"]
        return self._shapes[site]

    def dim(self, site: str) -> int:
        return math.prod(self.shape(site))

    def z_fn(self, sites: Sequence[str]) -> Callable[[torch.Tensor], torch.Tensor]:
        """z(u): model output with u = concat(flat δ_site) split and added at the sites."""
        sites = list(sites)
        assert len(set(sites)) == len(sites)
        shapes = [self.shape(s) for s in sites]
        dims = [math.prod(s) for s in shapes]
        kinds = [self.kind(s) for s in sites]
        use_fx = "fx" in kinds

        def z_of(u: torch.Tensor) -> torch.Tensor:
            deltas = {s: d.view(sh) for s, d, sh in zip(sites, torch.split(u, dims), shapes)}
            fired = {s: 0 for s in sites}
            handles = []

            def hook_for(s):
                def hook(m, inp, out):
                    fired[s] += 1
                    return out + deltas[s]
                return hook

            x = self.x
            for s, k in zip(sites, kinds):
                if k == "input":
                    x = x + deltas[s]
                    fired[s] += 1
                elif k == "module":
                    handles.append(self.modules[s].register_forward_hook(hook_for(s)))
            try:
                if use_fx:
                    fx_deltas = {s: deltas[s] for s, k in zip(sites, kinds) if k == "fx"}
                    z = _DeltaInterpreter(self.gm, fx_deltas, fired).run(x)
                else:
                    z = self.model(x)
            finally:
                for h in handles:
                    h.remove()
            bad = {s: c for s, c in fired.items() if c != 1}
            assert not bad, f"perturbation sites fired {bad} times (want exactly once each)"
            return z

        return z_of

    def loss_fn_of(self, sites: Sequence[str]) -> Callable[[torch.Tensor], torch.Tensor]:
        z_of = self.z_fn(sites)
        return lambda u: self.loss_fn(z_of(u), self.y)

    def zeros(self, sites: Sequence[str]) -> torch.Tensor:
        return torch.zeros(sum(self.dim(s) for s in sites), dtype=DT)

    def index(self, sites: Sequence[str], site: str) -> slice:
        start = 0
        for s in sites:
            if s == site:
                return slice(start, start + self.dim(s))
            start += self.dim(s)
        raise KeyError(site)

    # -- blocks ---------------------------------------------------------------------------
    def joint(self, sites: Sequence[str], method: str = "autograd") -> dict[str, torch.Tensor]:
        """Dense Hessian (and GN) over all sites at once: {"full", "gn", "J", "Hz"}."""
        sites = list(dict.fromkeys(sites))
        L = self.loss_fn_of(sites)
        u0 = self.zeros(sites)
        if method == "autograd":
            H = hessian_autograd(L, u0)
        elif method == "loop":
            H = hessian_rows_loop(L, u0)
        else:
            raise ValueError(method)
        GN, J, Hz = gauss_newton(self.z_fn(sites), self.loss_fn, self.y, u0)
        return {"sites": sites, "full": H, "gn": GN, "J": J, "Hz": Hz}

    def block(self, v: str, w: str) -> dict[str, torch.Tensor]:
        """{"full", "gn", "tensor"} of H_{v,w} (oracle #1 + dense GN) and "loop" (oracle #2)."""
        sites = list(dict.fromkeys([v, w]))
        j = self.joint(sites)
        iv, iw = self.index(sites, v), self.index(sites, w)
        L = self.loss_fn_of(sites)
        loop = hessian_rows_loop(L, self.zeros(sites), rows=range(iv.start, iv.stop))[:, iw]
        full, gn = j["full"][iv, iw], j["gn"][iv, iw]
        return {"full": full, "gn": gn, "tensor": full - gn, "loop": loop}

    def block_fd(self, v: str, w: str, h: float = 1e-5) -> torch.Tensor:
        sites = list(dict.fromkeys([v, w]))
        iv, iw = self.index(sites, v), self.index(sites, w)
        L = self.loss_fn_of(sites)
        return hessian_fd_columns(L, self.zeros(sites), range(iw.start, iw.stop), h)[iv]

    def block_per_sample(self, v: str, w: str) -> torch.Tensor:
        """(1/B) Σ_b ∂²ℓ_b/∂f_v[b]∂f_w[b]: each sample run alone, ℓ_b = loss_fn on that sample."""
        sites = list(dict.fromkeys([v, w]))
        iv, iw = self.index(sites, v), self.index(sites, w)
        B = self.x.shape[0]
        total = 0
        for b in range(B):
            sub = ActivationOracle.__new__(ActivationOracle)
            sub.__dict__.update(self.__dict__)
            sub.x, sub.y = self.x[b:b + 1], self.y[b:b + 1]
            total = total + hessian_autograd(sub.loss_fn_of(sites), self.zeros(sites))[iv, iw]
        return total / B


# ------------------------------------------------------------------------- parameter oracle
class ParameterOracle:
    """The loss as a function of one flat θ over all parameters, written into a de-parametrised copy."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y, loss_fn: Callable):
        self.model = float64_copy(model)
        self.x = _double(x)
        self.y = _double(y)
        self.loss_fn = loss_fn
        named = list(self.model.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.theta0 = torch.cat([p.detach().reshape(-1) for _, p in named])
        self.offsets = {}
        o = 0
        for n, k in zip(self.names, self.sizes):
            self.offsets[n] = (o, o + k)
            o += k
        # de-parametrise: parameters become plain attributes we overwrite on every call
        self._slots = []
        for n in self.names:
            mod_name, _, attr = n.rpartition(".")
            mod = self.model.get_submodule(mod_name) if mod_name else self.model
            del mod._parameters[attr]
            self._slots.append((mod, attr))
        self._cache: dict[str, torch.Tensor] = {}

    def group(self, g: str) -> list[str]:
        """Parameter names of group ``g``: ``"*"``, a parameter name, or a module prefix."""
        if g == "*":
            return list(self.names)
        if g in self.names:
            return [g]
        found = [n for n in self.names if n.startswith(g + ".")]
        assert found, f"oracle: no parameters under {g!r}"
        return found

    def indices(self, g: str) -> torch.Tensor:
        return torch.cat([torch.arange(*self.offsets[n]) for n in self.group(g)])

    def z_of(self, theta: torch.Tensor) -> torch.Tensor:
        for (mod, attr), t, shape in zip(self._slots, torch.split(theta, self.sizes), self.shapes):
            setattr(mod, attr, t.view(shape))
        return self.model(self.x)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.z_of(theta), self.y)

    @property
    def full(self) -> torch.Tensor:
        if "full" not in self._cache:
            self._cache["full"] = hessian_autograd(self.loss, self.theta0)
        return self._cache["full"]

    @property
    def full_loop(self) -> torch.Tensor:
        if "loop" not in self._cache:
            self._cache["loop"] = hessian_rows_loop(self.loss, self.theta0)
        return self._cache["loop"]

    @property
    def gn(self) -> torch.Tensor:
        if "gn" not in self._cache:
            GN, J, Hz = gauss_newton(self.z_of, self.loss_fn, self.y, self.theta0)
            self._cache.update(gn=GN, J=J, Hz=Hz)
        return self._cache["gn"]

    def block(self, v: str, w: str) -> dict[str, torch.Tensor]:
        iv, iw = self.indices(v), self.indices(w)
        full = self.full[iv][:, iw]
        gn = self.gn[iv][:, iw]
        return {"full": full, "gn": gn, "tensor": full - gn, "loop": self.full_loop[iv][:, iw]}

    def block_fd(self, v: str, w: str, h: float = 1e-5) -> torch.Tensor:
        iv, iw = self.indices(v), self.indices(w)
        return hessian_fd_columns(self.loss, self.theta0, iw.tolist(), h)[iv]


# --------------------------------------------------------------------------- metric oracles
def stable_rank(H: torch.Tensor) -> float:
    s = torch.linalg.svdvals(H.to(DT))
    top = float(s.max()) if s.numel() else 0.0
    return float((s ** 2).sum()) / top ** 2 if top > 0 else float("nan")


def coupling(H_vw: torch.Tensor, H_vv: torch.Tensor, H_ww: torch.Tensor) -> float:
    den = math.sqrt(fro(H_vv) * fro(H_ww))
    return fro(H_vw) / den if den >= 1e-12 else float("nan")


def gn_gap(full: torch.Tensor, gn: torch.Tensor) -> float:
    return fro(full - gn) / (fro(gn) + 1e-12)


def phi(H: torch.Tensor, index_groups: Sequence[torch.Tensor]) -> float:
    """Φ = 1 − Σ_g ‖H_gg‖_F² / ‖H_S‖_F², H_S = H restricted to the union of the groups."""
    idx = torch.cat(list(index_groups))
    HS = H[idx][:, idx]
    diag = sum(fro(H[g][:, g]) ** 2 for g in index_groups)
    return 1.0 - diag / fro(HS) ** 2
