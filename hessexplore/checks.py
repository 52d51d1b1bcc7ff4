"""Input checks shared by the session, the tracker and the command line.

Each check turns a bad input that would otherwise give a raw torch error, a frozen kernel or a
silently wrong number into one :class:`~hessexplore.errors.HessExploreError` saying what is wrong
and what to do.  The session calls them at its boundaries (construction, ``estimate``,
``coupling_map``, ``phi``, exact blocks); they never change the user's model: where a check has
to run the model (determinism, buffer mutation) it restores every buffer it may have touched.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Callable

import torch
from torch import nn

from .errors import (ArgumentError, InputError, LossError, MemoryBudgetError, ModelStateError)

__all__ = ["as_dtype", "positive_int", "as_seed", "rel_ci", "nonempty_names", "available_memory",
           "exact_result_bytes", "check_exact_memory", "check_model_device", "check_buffers",
           "check_batchnorm_stats", "check_batch_size", "check_forward", "check_target_shape",
           "check_loss_depends_on_output", "input_width_error", "KLDIV_BATCHMEAN"]

#: the exact-result budget as a share of the memory available when no explicit cap is set
MEMORY_SHARE = 0.5


# --------------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------------

_DTYPES = {"float64": torch.float64, "double": torch.float64, "float32": torch.float32, "float": torch.float32}


def as_dtype(dtype) -> torch.dtype | None:
    """``None`` or a floating torch.dtype; also the names "float64"/"float32" (and torch.float64 as text).

    Half precision is refused: second derivatives in float16/bfloat16 lose all their digits.
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key in _DTYPES:
            return _DTYPES[key]
        raise ArgumentError(f"dtype {dtype!r} is not a dtype hessexplore computes in: use torch.float64 "
                            "(exact, recommended) or torch.float32, or None for the model's own")
    if not isinstance(dtype, torch.dtype):
        raise ArgumentError(f"dtype must be a torch.dtype such as torch.float64 (or None), got "
                            f"{type(dtype).__name__} {dtype!r}")
    if dtype in (torch.float16, torch.bfloat16):
        raise ArgumentError(f"dtype {dtype} is too coarse for Hessians (about 3 significant digits, and "
                            "second derivatives overflow): pass dtype=torch.float32 or torch.float64; the "
                            "session works on a converted copy and leaves your model as it is")
    if not dtype.is_floating_point or dtype.is_complex:
        raise ArgumentError(f"dtype must be a real floating dtype (torch.float64 or torch.float32), got {dtype}")
    return dtype


def positive_int(value, name: str, *, minimum: int = 1, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an int ≥ ``minimum`` (≤ ``maximum``); integral floats such as 10.0 are accepted.

    Refuses bools, strings ("10"), non-integral or non-finite numbers with a message naming ``name``.
    """
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, numbers.Real) and not isinstance(value, bool):
        ok = math.isfinite(float(value)) and float(value).is_integer()
    if not ok:
        raise ArgumentError(f"{name} must be a whole number, got {type(value).__name__} {value!r}"
                            + (f"; {hint}" if hint else ""))
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        rng = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum:,}"
        raise ArgumentError(f"{name} must be {rng}, got {v}" + (f"; {hint}" if hint else ""))
    return v


def as_seed(seed) -> int:
    """A reproducible seed: an int in [0, 2⁶³) (torch.Generator.manual_seed's range)."""
    if seed is None or isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ArgumentError(f"seed must be a whole number in [0, 2**63) that makes the probes reproducible, "
                            f"got {type(seed).__name__} {seed!r}; e.g. seed=0")
    seed = int(seed)
    if not 0 <= seed < 2 ** 63:
        raise ArgumentError(f"seed must be in [0, 2**63), got {seed}; e.g. seed=0 (or seed % 2**63)")
    return seed


def rel_ci(value) -> float | None:
    """None, or a relative confidence-interval width in (0, 1)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < 1:
        raise ArgumentError(f"rel_ci must be a relative confidence-interval width in (0, 1), e.g. rel_ci=0.05, or "
                            f"None; got {value!r}")
    return float(value)


def nonempty_names(names, what: str) -> list[str] | None:
    """``None`` (the default set) or a non-empty list of names (a single name is taken as one)."""
    if names is None:
        return None
    if isinstance(names, str):
        return [names]
    try:
        names = list(names)
    except TypeError:
        raise ArgumentError(f"{what} must be a list of names, got {type(names).__name__}") from None
    if not names:
        raise ArgumentError(f"{what} is empty: give at least one name, or None for all of them")
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ArgumentError(f"{what} must be names (strings), got {type(bad[0]).__name__} {bad[0]!r}")
    return names


# --------------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------------

def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device``: free CUDA memory, or on the CPU the kernel's
    MemAvailable, lowered to what a cgroup (container) limit leaves."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 34
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        lim, used = _read_int(limit), _read_int(usage)
        if lim is not None and used is not None and lim < 1 << 60:
            avail = min(avail, max(lim - used, 0))
    return int(avail)


def exact_result_bytes(columns: int, rows: int, itemsize: int) -> int:
    """Bytes of an exact sweep's output: ``columns`` swept × ``rows`` (every output atom, the swept
    ones included) × ``itemsize``, for both the full matrix and its Gauss–Newton part."""
    return 2 * int(columns) * int(rows) * int(itemsize)


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} bytes"


def check_exact_memory(columns: int, rows: int, dtype: torch.dtype, device: torch.device,
                       cap: int | None, what: str, way_out: str) -> int:
    """Refuse, before anything is allocated, an exact result that does not fit the budget.

    The budget is ``cap`` (bytes) when given, else MEMORY_SHARE of :func:`available_memory`.
    Returns the bytes needed.  ``way_out`` says what to do instead (estimates, smaller nodes).
    """
    item = torch.empty((), dtype=dtype).element_size()
    need = exact_result_bytes(columns, rows, item)
    budget = int(cap) if cap is not None else int(MEMORY_SHARE * available_memory(device))
    if need > budget:
        src = ("the cap Session.max_exact_bytes" if cap is not None else
               f"{MEMORY_SHARE:.0%} of the memory available on {torch.device(device)}")
        raise MemoryBudgetError(
            f"{what} needs {_fmt_bytes(need)} ({columns:,} columns × {rows:,} rows × {item} bytes, full and "
            f"Gauss–Newton parts), over the budget of {_fmt_bytes(budget)} ({src}); nothing was computed. "
            f"{way_out}")
    return need


# --------------------------------------------------------------------------------------------------
# the model and its batch
# --------------------------------------------------------------------------------------------------

def check_model_device(model: nn.Module) -> None:
    """Refuse parameters without data (meta device) and parameters spread over several devices."""
    devices = set()
    for name, p in model.named_parameters():
        if p.device.type == "meta":
            raise ModelStateError(f"parameter {name!r} is on the meta device (a model built without weights, "
                                  "e.g. under torch.device('meta') or init_empty_weights): load or initialise its "
                                  "weights (model.to_empty(device='cpu') and a state dict) first")
        devices.add(p.device)
    if len(devices) > 1:
        raise ModelStateError(f"the model's parameters are on several devices ({', '.join(map(str, devices))}); "
                              "move it to one with model.to(device)")


def check_buffers(model: nn.Module) -> None:
    """Refuse NaN/Inf in floating buffers (e.g. BatchNorm's running_var): every block would be NaN."""
    for name, b in model.named_buffers():
        if b is not None and b.is_floating_point() and b.numel() and not bool(torch.isfinite(b).all()):
            raise ModelStateError(f"buffer {name!r} contains NaN or Inf, so every curvature number would be NaN; "
                                  "reload a finite checkpoint or reset it (e.g. module.reset_running_stats() "
                                  "for BatchNorm)")


def check_batchnorm_stats(model: nn.Module) -> None:
    """An eval-mode BatchNorm without running statistics normalises with the batch's: samples couple."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats:
            raise ModelStateError(
                f"module {name!r} ({type(m).__name__}) has track_running_stats=False, so even in eval mode it "
                "normalises with the statistics of the batch: that couples the samples and breaks the "
                "per-sample Hessian (SCIENCE.md §1). Use a BatchNorm with running statistics (fitted during "
                "training), or LayerNorm/GroupNorm, which are per sample")


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InputError("the batch is empty (0 samples): the mean loss and its curvature are undefined; "
                         "pass at least one sample")


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b for n, b in model.named_buffers() if b is not None}


def _restore_buffers(model: nn.Module, objects: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    """Put back every buffer object (a forward may rebind one) with its saved values."""
    with torch.no_grad():
        for name, obj in objects.items():
            prefix, _, leaf = name.rpartition(".")
            owner = model.get_submodule(prefix) if prefix else model
            if owner._buffers.get(leaf) is not obj:
                owner._buffers[leaf] = obj
            if not _same(obj, values[name]):
                obj.copy_(values[name])


def check_forward(model: nn.Module, run: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run the forward twice: refuse one that changes buffers or gives different outputs.

    Outputs count as equal within 100·ε(dtype) relative (GPU kernels may sum in another order);
    buffers must not change at all.  Every buffer is restored to the object and values it had
    before the check, whatever happens, so the user's model is left as it was.  Returns the
    first output.
    """
    objects = _buffers(model)
    saved = {n: b.detach().clone() for n, b in objects.items()}
    try:
        with torch.no_grad():
            z1 = run()
            now = _buffers(model)
            changed = [n for n in set(now) | set(saved)
                       if n not in saved or n not in now or now[n].shape != saved[n].shape
                       or not _same(now[n], saved[n])]
            if changed:
                raise ModelStateError(
                    f"the forward pass changes the buffer {sorted(changed)[0]!r}"
                    + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
                    + ": its curvature would change with every product. A module that updates statistics in "
                    "eval mode (a custom running mean, a counter) must stop doing so while analysed; your "
                    "buffers were restored")
            z2 = run() if torch.is_tensor(z1) else None
    finally:
        _restore_buffers(model, objects, saved)
    if torch.is_tensor(z1) and torch.is_tensor(z2) and z1.shape == z2.shape and _differ(z1, z2):
        raise ModelStateError(
            "the model gives different outputs for the same input (the forward is random: e.g. "
            "F.dropout(x, training=True), torch.rand, or noise added in forward), so its Hessian changes "
            "from call to call. Make the forward deterministic in eval mode (F.dropout(x, training=self.training), "
            "or nn.Dropout modules, which model.eval() switches off)")
    return z1


def _differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    if not a.is_floating_point():
        return not torch.equal(a, b)
    tol = 100 * torch.finfo(a.dtype).eps
    fin = torch.isfinite(a) & torch.isfinite(b)
    if not torch.equal(fin, torch.isfinite(a)) or not torch.equal(a[~fin].nan_to_num(), b[~fin].nan_to_num()):
        return True
    diff = (a[fin] - b[fin]).double().norm()
    return bool(diff > tol * a[fin].double().norm() + torch.finfo(a.dtype).tiny)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.is_floating_point() or a.is_complex():
        return bool(torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))) and \
            bool(torch.equal(torch.isnan(a), torch.isnan(b)))
    return bool(torch.equal(a, b))


# --------------------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------------------

#: a KLDivLoss with reduction="batchmean" is the per-sample mean of the summed pointwise terms
KLDIV_BATCHMEAN = "batchmean"


def check_target_shape(loss_fn, z: torch.Tensor, y) -> None:
    """Elementwise losses (MSE, L1, Huber, BCE, ...) broadcast a target of another shape silently."""
    elementwise = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss,
                   nn.KLDivLoss, nn.PoissonNLLLoss, nn.GaussianNLLLoss)
    if not isinstance(loss_fn, elementwise) or not torch.is_tensor(y):
        return
    name = type(loss_fn).__name__
    if not y.is_floating_point():
        raise InputError(f"{name} needs floating-point targets, got {y.dtype} targets: convert them with "
                         "y.float() (or, for class labels, use nn.CrossEntropyLoss)")
    if isinstance(loss_fn, nn.GaussianNLLLoss):
        return
    if tuple(y.shape) != tuple(z.shape):
        raise InputError(f"{name} targets have shape {tuple(y.shape)} but the model outputs {tuple(z.shape)}: "
                         "the loss would broadcast them and compare every output with every target. Reshape "
                         f"the targets to {tuple(z.shape)} (e.g. y.view_as(z)), or the model's output")


def check_loss_depends_on_output(loss_fn, z: torch.Tensor, y) -> None:
    """Refuse a loss that does not depend on the model output, to second order at this batch.

    With g = ∂L/∂z and H_zz = ∂²L/∂z², every block is J_vᵀ H_zz J_w + Σ g·∂²z/∂δ_v∂δ_w: if g = 0
    and H_zz u = 0 for a random u (so H_zz = 0 almost surely), every Hessian block is exactly 0.
    A loss at its minimum (g = 0, H_zz ≠ 0) or a linear one (g ≠ 0) passes.
    """
    zz = z.detach().clone().requires_grad_(True)
    msg = ("loss_fn's value does not depend on the model output z ({why}), so every Hessian block would be "
           "exactly 0. Compute the loss from the model's outputs z with torch operations")
    with torch.enable_grad():
        try:
            L = loss_fn(zz, y)
        except Exception:  # noqa: BLE001 - the caller reports a failing loss itself
            return
        if not (torch.is_tensor(L) and L.requires_grad):
            raise LossError(msg.format(why="no gradient flows from the loss to z: it uses detached values, "
                                           ".item(), numpy, or only the targets"))
        try:
            (g,) = torch.autograd.grad(L.reshape(()), zz, create_graph=True, allow_unused=True)
        except Exception:  # noqa: BLE001 - a loss autograd cannot differentiate: reported where it is used
            return
        if g is None:
            raise LossError(msg.format(why="no gradient flows from the loss to z"))
        if bool((g != 0).any()):
            return
        if not g.requires_grad:
            raise LossError(msg.format(why="its gradient and second derivative in z are 0"))
        gen = torch.Generator(device="cpu").manual_seed(0)
        u = (torch.randint(0, 2, tuple(zz.shape), generator=gen) * 2 - 1).to(device=zz.device, dtype=zz.dtype)
        try:
            (hu,) = torch.autograd.grad(g, zz, grad_outputs=u, allow_unused=True)
        except Exception:  # noqa: BLE001 - no double backward: reported where it is used
            return
    if hu is None or not bool((hu != 0).any()):
        raise LossError(msg.format(why="its gradient and second derivative in z are 0"))


def input_width_error(model: nn.Module, x, exc: BaseException) -> InputError:
    """A readable error for a batch the model cannot run on (``exc``: what the forward raised)."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))), None)
    shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
    if isinstance(first, nn.Linear) and torch.is_tensor(x) and x.dim() >= 1 and x.shape[-1] != first.in_features \
            and _is_first_layer(model, first):
        return InputError(f"the inputs have {x.shape[-1]} features per sample (shape {shape}) but the "
                          f"model's first Linear layer expects {first.in_features}: pass x of shape "
                          f"(B, {first.in_features})")
    if isinstance(first, nn.Embedding) and torch.is_tensor(x) and x.is_floating_point():
        return InputError("the model starts with an Embedding, which needs integer token ids, but x is "
                          f"{x.dtype}: pass x.long()")
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:299] + "…"
    return InputError(f"the model cannot run on this batch (x of shape {shape}): {type(exc).__name__}: {text}. "
                      "Check the inputs' shape and dtype against what the model's forward expects")


def _is_first_layer(model: nn.Module, layer: nn.Module) -> bool:
    """Whether ``layer`` is the first module with parameters (so x feeds it directly, most likely)."""
    for m in model.modules():
        if any(True for _ in m.parameters(recurse=False)):
            return m is layer
    return False
