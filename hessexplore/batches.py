"""A session's data: one batch, or a data set re-iterated batch by batch for every product.

The loss of a data set of N samples in batches b of n_b samples is the mean
over all samples, L = (1/N) Σ_n ℓ_n = Σ_b (n_b/N) L_b with L_b the batch mean
the loss function computes.  Every curvature product is linear in L, so it is
the sample-weighted sum of per-batch products, H t = Σ_b (n_b/N) H_b t (GN parts
alike); uneven last batches are weighted right.

Under an initialised ``torch.distributed`` process group with more than one
rank, each rank iterates its own shard (e.g. through a ``DistributedSampler``),
N is the all-reduced sample count and products are all-reduced (summed) after
the local sum, so every rank holds the result on the union of the shards.

A data set is iterated again for every product, so it must give the same
batches in the same order every time: a shuffling ``DataLoader`` is refused up
front, and each pass compares its first batch with the first pass's.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch

from .errors import HessExploreError


@dataclass
class Batch:
    """One batch: model inputs (positional ``args``, keyword ``kwargs``), targets, its sample count and weight."""

    args: tuple
    kwargs: dict
    targets: Any
    n: int
    weight: float = 1.0            # n_b / N
    flat: list | None = field(default=None, repr=False)   # inputs in the captured graph's order


def is_one_batch(data) -> bool:
    """True for ``(x, y)`` (x a tensor, tuple or dict; y a tensor or None), False for an iterable of batches."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    x, y = data
    if torch.is_tensor(y) or y is None:
        return True
    return not (isinstance(y, (tuple, list)) and len(y) == 2 and isinstance(x, (tuple, list)) and len(x) == 2
                and torch.is_tensor(y[1]))


def _move(t, device, dtype):
    if torch.is_tensor(t):
        t = t.detach().to(device)
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t
    if isinstance(t, (tuple, list)):
        return type(t)(_move(a, device, dtype) for a in t)
    if isinstance(t, dict):
        return {k: _move(v, device, dtype) for k, v in t.items()}
    return t


def split_inputs(x, device, dtype) -> tuple[tuple, dict]:
    """x (a tensor, a tuple of positional inputs, or a dict of keyword inputs) → (args, kwargs) on device."""
    if isinstance(x, dict):
        return (), _move(x, device, dtype)
    if isinstance(x, (tuple, list)):
        return tuple(_move(x, device, dtype)), {}
    return (_move(x, device, dtype),), {}


def batch_size_of(args: tuple, kwargs: dict) -> int:
    first = next((t for t in list(args) + list(kwargs.values()) if torch.is_tensor(t) and t.dim() > 0), None)
    if first is None:
        raise HessExploreError("the model inputs must include a tensor with the batch as first dimension "
                               "(x a tensor, a tuple of positional inputs, or a dict of keyword inputs)")
    return int(first.shape[0])


def _fingerprint(b: Batch) -> tuple:
    def fp(t):
        if torch.is_tensor(t):
            d = torch.nan_to_num(t.detach().double(), nan=0.5, posinf=1e300, neginf=-1e300)
            return (tuple(t.shape), float(d.sum()), float(d.abs().sum()), int(torch.isnan(t).sum())
                    if t.is_floating_point() else 0)
        return repr(t)[:50]
    return tuple(fp(t) for t in list(b.args) + list(b.kwargs.values()) + [b.targets])


def _refuse_shuffling(data) -> None:
    sampler = getattr(data, "sampler", None)
    if isinstance(sampler, torch.utils.data.RandomSampler):
        raise HessExploreError(
            "the data loader shuffles (RandomSampler): hessexplore iterates the data set again for every "
            "product, so every pass must give the same batches. Build it with shuffle=False (and no random "
            "augmentation) for the analysis")
    dsampler = getattr(data, "sampler", None)
    if type(dsampler).__name__ == "DistributedSampler" and getattr(dsampler, "shuffle", False):
        raise HessExploreError("the DistributedSampler shuffles: pass DistributedSampler(..., shuffle=False) "
                               "so every pass gives the same batches")


class Batches:
    """The session's data as a re-iterable sequence of :class:`Batch` (see module docstring).

    ``first`` is the first batch (the one the model is captured and checked on);
    ``n`` the number of samples on this rank, ``total`` over all ranks; ``single``
    says whether the data is one batch (then nothing is re-iterated).
    """

    def __init__(self, data, device, dtype, distributed: bool | None = None, defaults: dict | None = None,
                 shard: bool = False):
        self.device, self.dtype = device, dtype
        self.defaults = dict(defaults or {})       # keyword inputs every batch gets unless it sets them
        self.flatten: Callable | None = None       # (args, kwargs) -> the captured graph's inputs
        #: called as on_batch(done, total) after each batch of a data-set product (progress in batches)
        self.on_batch: Callable[[int, int], None] | None = None
        self.single = is_one_batch(data)
        self._data = data
        if not self.single:
            if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
                raise HessExploreError("data must be a batch (x, y) or an iterable of batches (a DataLoader, a "
                                       f"list of (x, y)), got {type(data).__name__}")
            _refuse_shuffling(data)
        self.distributed = _distributed() if distributed is None else bool(distributed)
        # shard=True: rank r of W keeps the batches i with i % W == r (for data every rank iterates whole)
        self.shard = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
            if shard and self.distributed and not self.single else None
        self._fp = None
        counts = [b.n for b in self._raw()]
        if not counts:
            raise HessExploreError("the data set is empty: it gave no batch")
        self.num_batches = len(counts)
        self.n = sum(counts)
        self.total = self.n
        if self.distributed:
            t = torch.tensor([float(self.n)], dtype=torch.float64, device=_reduce_device(device))
            torch.distributed.all_reduce(t)
            self.total = int(t.item())
        self.first = next(iter(self))

    def _raw(self) -> Iterator[Batch]:
        source = [self._data] if self.single else self._data
        if self.shard is not None:
            rank, world = self.shard
            source = (item for i, item in enumerate(source) if i % world == rank)
        for i, item in enumerate(source):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise HessExploreError(f"batch {i} of the data set is a {type(item).__name__}, not a pair (x, y)")
            x, y = item
            args, kwargs = split_inputs(x, self.device, self.dtype)
            kwargs = {**kwargs, **{k: v for k, v in self.defaults.items() if k not in kwargs}}
            b = Batch(args, kwargs, _move(y, self.device, self.dtype), batch_size_of(args, kwargs))
            if i == 0:
                fp = _fingerprint(b)
                if self._fp is None:
                    self._fp = fp
                elif fp != self._fp:
                    raise HessExploreError(
                        "the data set gave a different first batch on this pass (shuffling or random "
                        "augmentation?): every product iterates it again, so it must be deterministic. Use "
                        "shuffle=False and no random transforms for the analysis")
            yield b

    def __iter__(self) -> Iterator[Batch]:
        """The batches with their weights n_b / N (N over all ranks when distributed)."""
        total = getattr(self, "total", None)
        for b in self._raw():
            if total:
                b.weight = b.n / total
            if self.flatten is not None:
                b.flat = self.flatten(b.args, b.kwargs)
            yield b

    def reduce(self, tensors: list[torch.Tensor]) -> None:
        """Sum ``tensors`` over the ranks, in place (a no-op unless distributed)."""
        if self.distributed:
            for t in tensors:
                torch.distributed.all_reduce(t)


def _distributed() -> bool:
    d = torch.distributed
    return d.is_available() and d.is_initialized() and d.get_world_size() > 1


def _reduce_device(device) -> torch.device:
    d = torch.distributed
    if d.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if device is None else device


_polling = threading.local()


@contextlib.contextmanager
def polling(should_stop: Callable[[], bool] | None):
    """Within: :func:`for_each` polls ``should_stop`` between batches (this thread only)."""
    prev = getattr(_polling, "fn", None)
    _polling.fn = should_stop or prev
    try:
        yield
    finally:
        _polling.fn = prev


def for_each(batches: "Batches | None", compute: Callable[[Batch], list[torch.Tensor]],
             should_stop: Callable[[], bool] | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
    """Σ_b w_b compute(b) over the data (all-reduced when distributed); one batch: compute(first)."""
    from .errors import JobCancelled
    should_stop = should_stop or getattr(_polling, "fn", None)
    acc = None
    for i, b in enumerate(batches):
        if should_stop is not None and i and should_stop():
            raise JobCancelled()
        got = [g * b.weight for g in compute(b)]
        acc = got if acc is None else [a + g for a, g in zip(acc, got)]
        for report in (progress, batches.on_batch):
            if report is not None:
                report(i + 1, batches.num_batches)
    batches.reduce(acc)
    return acc
