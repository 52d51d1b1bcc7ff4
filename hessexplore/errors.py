"""Errors hessexplore raises for bad input.

Every error says what went wrong in the user's terms (module names, node
names, sizes) and what to do about it.  They all derive from
:class:`HessExploreError` (itself a :class:`ValueError`) so callers can catch
one type.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class HessExploreError(ValueError):
    """Base class of every error hessexplore raises for bad input."""


class TracingError(HessExploreError):
    """The model could not be traced into a graph by torch.fx."""


class ModelStateError(HessExploreError):
    """The model is in a state where curvature is ill-defined (train-mode BatchNorm, NaN weights, ...)."""


class LossError(HessExploreError):
    """The loss function does not compute a mean-reduced scalar loss."""


class UnknownNameError(HessExploreError, KeyError):
    """A node or parameter-group name that the session does not know."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BlockTooLargeError(HessExploreError):
    """An exact (dense) block would need more Hessian-vector products or memory than allowed."""


class AutodiffError(HessExploreError):
    """An op of the model has no second derivative in PyTorch (named, with its module and the way out)."""


class MemoryBudgetError(BlockTooLargeError):
    """An exact result would not fit the memory budget (refused before anything is allocated)."""


class InputError(HessExploreError):
    """The batch (inputs or targets) does not fit the model or the loss."""


class ArgumentError(HessExploreError, TypeError):
    """An argument of a hessexplore call has the wrong type or value (probes, seed, dtype, ...)."""


class RunFileError(HessExploreError):
    """A tracker run file that cannot be read: missing, damaged, edited, or from another model."""


class ReportFolderError(HessExploreError):
    """The report folder cannot be written, or holds files hessexplore did not write."""


class JobCancelled(Exception):
    """Raised inside a computation when its job was cancelled (not a user error)."""


def unknown_name(kind: str, name: str, known: Iterable[str], hint: str = "") -> UnknownNameError:
    """Build an :class:`UnknownNameError` listing close matches and some valid names."""
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    msg = f"unknown {kind} {name!r}."
    if close:
        msg += " Did you mean " + ", ".join(repr(c) for c in close) + "?"
    shown = known[:12]
    more = f" (and {len(known) - len(shown)} more)" if len(known) > len(shown) else ""
    msg += f" Valid {kind}s: " + ", ".join(repr(k) for k in shown) + more + "."
    if hint:
        msg += " " + hint
    return UnknownNameError(msg)
