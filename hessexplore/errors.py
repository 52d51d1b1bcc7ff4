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
