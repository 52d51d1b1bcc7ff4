"""Second derivatives everywhere: the backend settings and op substitutes curvature needs.

Some of PyTorch's fastest kernels have no forward-mode or double-backward
formula: the fused scaled-dot-product-attention kernels (flash / memory
efficient), the ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``
"fast path", oneDNN (mkldnn) RNN layers on CPU, and ``hardsigmoid``'s backward.
They compute the same function as a plain composition of differentiable ops,
so curvature is computed

* under :func:`curvature_mode`: the math SDPA backend, the MHA fast path off and
  oneDNN off, restored on exit (also on error and cancel); and
* on captured graphs whose ops without a second-derivative formula are replaced
  by an exact substitute (:func:`substitute_ops`) — the user's own modules and
  forward are never changed.

When an op still has no formula, :func:`explain_autodiff_error` turns torch's
message into one that names the op, the module and the way out.
"""
from __future__ import annotations

import re
import threading
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

__all__ = ["curvature_mode", "substitute_ops", "explain_autodiff_error", "AUTODIFF_ERRORS"]

#: one computation at a time in this process: torch's forward-mode AD levels (torch.func.jvp) are
#: process-wide, so transforms running in two threads at once corrupt each other
_lock = threading.RLock()
_depth = 0
_saved: list = []


class curvature_mode:  # noqa: N801  (used like a function: ``with curvature_mode(): ...``)
    """Run second-order autodiff with kernels that have second derivatives, then restore.

    Inside: ``sdpa_kernel(SDPBackend.MATH)``, ``torch.backends.mha`` fast path
    off, and oneDNN off unless ``onednn`` (its RNN layers have no forward-mode
    derivative, but its convolutions are about twice as fast on CPU and have
    every derivative: models without RNN layers keep it, see
    :func:`needs_no_onednn`).  Holds a process-wide re-entrant lock, so
    hessexplore's products from several threads (an explorer's worker and the
    notebook) take turns: torch.func's forward-mode levels are not thread-safe.
    The outermost ``curvature_mode`` chooses the settings and restores them when
    it exits (also on error).  A plain class, not a generator: products enter it
    thousands of times, and only the flags that differ are set and restored.
    """

    __slots__ = ("onednn",)

    def __init__(self, onednn: bool = False):
        self.onednn = onednn

    def __enter__(self) -> None:
        global _depth
        _lock.acquire()
        try:
            if _depth == 0:
                _saved.append(_set_kernels(self.onednn))
            _depth += 1
        except BaseException:
            _lock.release()
            raise

    def __exit__(self, *exc) -> None:
        global _depth
        try:
            _depth -= 1
            if _depth == 0:
                for setter, old in reversed(_saved.pop()):
                    setter(old)
        finally:
            _lock.release()


_SDPA_FLAGS: list | None = None


def _sdpa_flags() -> list | None:
    """[(getter, setter, is_math)] for torch's SDPA backend switches, looked up once; None when this torch
    lays them out differently (then :func:`_set_kernels` enters the public ``sdpa_kernel``)."""
    global _SDPA_FLAGS
    if _SDPA_FLAGS is None:
        import torch.nn.attention as att
        names = getattr(att, "_backend_names", None)
        if not isinstance(names, dict) or not all(hasattr(torch._C, f"_get_{n}_sdp_enabled") and
                                                  hasattr(torch._C, f"_set_sdp_use_{n}") for n in names):
            _SDPA_FLAGS = []
        else:
            _SDPA_FLAGS = [(getattr(torch._C, f"_get_{n}_sdp_enabled"), getattr(torch._C, f"_set_sdp_use_{n}"),
                            n == "math") for n in names]
    return _SDPA_FLAGS or None


def _switch(undo: list, getter, setter, want: bool) -> None:
    """setter(want) now, (setter, old) onto ``undo`` — only when the flag differs."""
    old = bool(getter())
    if old != want:
        setter(want)
        undo.append((setter, old))


def _set_kernels(onednn: bool) -> list:
    """Only the math SDPA backend on, the MHA fast path off, oneDNN off unless ``onednn``; returns the
    [(setter, old value)] that restore what was changed (what ``sdpa_kernel(MATH)`` and the backend
    flag contexts do, without their per-call bookkeeping)."""
    undo: list = []
    flags = _sdpa_flags()
    if flags is None:
        import torch.nn.attention as att
        ctx = att.sdpa_kernel(att.SDPBackend.MATH)
        ctx.__enter__()
        undo.append((lambda _old: ctx.__exit__(None, None, None), None))
    else:
        for getter, setter, is_math in flags:
            _switch(undo, getter, setter, is_math)
    mkldnn = torch._C._get_mkldnn_enabled()      # (mkldnn.flags() would warn about TF32)
    _switch(undo, torch._C._get_mkldnn_enabled, torch._C._set_mkldnn_enabled, bool(mkldnn and onednn))
    _switch(undo, torch.backends.mha.get_fastpath_enabled, torch.backends.mha.set_fastpath_enabled, False)
    return undo


def needs_no_onednn(model: nn.Module) -> bool:
    """True when ``model`` holds RNN layers (LSTM, GRU, RNN), whose oneDNN kernels lack forward-mode AD."""
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


def is_onednn_error(exc: BaseException) -> bool:
    """True when torch says a oneDNN (mkldnn) kernel has no derivative of the kind asked for."""
    return "mkldnn" in str(exc).lower()


# ---------------------------------------------------------------------------- substitutes
def _hardsigmoid(x, inplace: bool = False):
    """hardsigmoid(x) = min(max(x + 3, 0), 6) / 6, composed of ops with second derivatives."""
    return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


def _hardsigmoid_aten(x):
    return _hardsigmoid(x)


#: graph targets → exact substitutes (the same function; derivatives differ only on the kinks' null set)
FUNCTION_SUBSTITUTES: dict[object, Callable] = {
    F.hardsigmoid: _hardsigmoid,
    torch.ops.aten.hardsigmoid.default: _hardsigmoid_aten,
    torch.ops.aten.hardsigmoid_.default: _hardsigmoid_aten,
}
MODULE_SUBSTITUTES: dict[type, Callable] = {nn.Hardsigmoid: _hardsigmoid}


def substitute_ops(gm: fx.GraphModule) -> list[str]:
    """Replace ops without second-derivative formulas in ``gm`` (in place) by exact substitutes.

    Handles ``call_function`` targets (functional and ATen forms) and
    ``call_module`` calls of such modules.  Returns the names of the replaced
    nodes.  ``gm`` must be hessexplore's own copy of the graph.
    """
    done = []
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target in FUNCTION_SUBSTITUTES:
            n.target = FUNCTION_SUBSTITUTES[n.target]
            n.kwargs = {}
            n.args = n.args[:1]
            done.append(n.name)
        elif n.op == "call_module":
            sub = MODULE_SUBSTITUTES.get(type(gm.get_submodule(n.target)))
            if sub is not None:
                n.op, n.target, n.kwargs = "call_function", sub, {}
                n.args = n.args[:1]
                done.append(n.name)
    if done:
        gm.graph.lint()
        gm.recompile()
    return done


# ------------------------------------------------------------------------------- errors
#: fragments of torch's messages when an op lacks a forward-AD / double-backward / vmap rule
AUTODIFF_ERRORS = ("derivative for", "not implemented", "forward AD", "does not support it",
                   "Batching rule", "functorch transforms", "setup_context", "vmap", "once_differentiable",
                   "differentiate twice")
_OP_RE = re.compile(r"(?:aten::|aten\.)([A-Za-z0-9_]+)")


def is_autodiff_error(exc: BaseException) -> bool:
    """True when ``exc`` says an op has no forward-mode / second derivative / vmap rule."""
    if not isinstance(exc, (RuntimeError, NotImplementedError)):
        return False
    msg = str(exc)
    return any(f in msg for f in AUTODIFF_ERRORS)


def failing_op(exc: BaseException) -> str | None:
    """The ATen op named in torch's autodiff error, e.g. ``'hardsigmoid_backward'``."""
    m = _OP_RE.search(str(exc))
    return m.group(1) if m else None


def explain_autodiff_error(exc: BaseException, where: Callable[[str], list[str]] | None = None,
                           tried: str = "") -> str:
    """A readable message for an op without second-derivative support.

    ``where(op)`` lists the modules that call the op (from the captured graph).
    """
    op = failing_op(exc) or "an operation"
    base = op[:-len("_backward")] if op.endswith("_backward") else op
    mods = where(base) if where is not None else []
    loc = f" in module {', '.join(repr(m) for m in mods[:3])}" if mods else ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"PyTorch has no second derivative for '{base}'{loc} ({first[:160]}){tried}. "
            f"Replace it with an equivalent composition of differentiable ops in your model (e.g. a clamp or "
            f"a plain formula), pass leaf_modules=[...] naming a module that computes it another way, or "
            "restrict the analysis to nodes/groups before it.")
