"""Measured memory: the peak bytes a computation allocates, for calibrating chunk sizes.

A formula for the memory of one Hessian-vector product has to guess what autograd keeps
and frees; it was 8× too pessimistic on ResNet-18 and too optimistic on a ViT.  Instead
hessexplore measures a product with two and with four directions and extrapolates
linearly (:func:`linear_cost`), which is exact for batched products (each direction adds
the same tensors) and for looped ones (each adds only its output row).

On CUDA the device's own counters are used (``torch.cuda.max_memory_allocated``).  On
the CPU, :class:`PeakMemory` counts every tensor storage created while it is active in
this thread, as a ``TorchDispatchMode`` (backward ops included), and subtracts it when
the storage is freed: allocator-independent, so the same product measures the same on
every machine.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["PeakMemory", "peak_bytes", "linear_cost"]


class PeakMemory(TorchDispatchMode):
    """Count the bytes of storages allocated inside (this thread): ``live`` now, ``peak`` the maximum.

    Storages that already existed when it was entered are not counted; a storage created
    inside and still alive at exit stays in ``live``.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _freed(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.is_meta:
                continue
            st = t.untyped_storage()
            key = st._cdata
            if key in self._sizes:
                continue
            n = st.nbytes()
            self._sizes[key] = n
            self.live += n
            if self.live > self.peak:
                self.peak = self.live
            weakref.finalize(st, self._freed, key)
        return out


@contextlib.contextmanager
def _cuda_peak(device: torch.device) -> Iterator[list[int]]:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    box = [0]
    try:
        yield box
    finally:
        torch.cuda.synchronize(device)
        box[0] = max(0, torch.cuda.max_memory_allocated(device) - base)


def peak_bytes(fn: Callable[[], object], device: torch.device) -> tuple[int, object]:
    """(peak bytes allocated while ``fn()`` ran, above what was allocated before; fn's result)."""
    if device.type == "cuda":
        with _cuda_peak(device) as box:
            out = fn()
        return box[0], out
    with PeakMemory() as pm:
        out = fn()
    return pm.peak, out


def linear_cost(run: Callable[[int], object], device: torch.device, ks: tuple[int, int] = (2, 4)
                ) -> tuple[int, int]:
    """(fixed, per_item) bytes with peak(k) ≈ fixed + k·per_item, from runs with k = ks[0] and ks[1] items.

    ``run(k)`` does the work for k items (directions) and returns its result, which is
    dropped before the next run.  (hessexplore measures with 2 and 4 directions: one
    direction always runs as a plain backward, never batched.)
    """
    a, b = ks
    pa, out = peak_bytes(lambda: run(a), device)
    del out
    pb, out = peak_bytes(lambda: run(b), device)
    del out
    per = max(-(-(pb - pa) // (b - a)), 1)
    return max(pa - a * per, 0), per
