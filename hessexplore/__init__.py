"""hessexplore: see the curvature of a neural network.

Hessian blocks between any two nodes (or parameter groups) of a PyTorch
model's DAG, split into Gauss–Newton and tensor parts, exact or streamed with
error bars; layer-wise spectra and their evolution over training; a Jupyter
explorer.  Start with :class:`Session`, :func:`explore` or :class:`Tracker`.
"""
from .errors import (ArgumentError, BlockTooLargeError, HessExploreError, InputError, LossError,
                     MemoryBudgetError, ModelStateError, ReportFolderError, RunFileError, TracingError,
                     UnknownNameError)
from .estimators import Estimate, EstimateSnapshot
from .results import Block, CouplingMap
from .session import Session
from .spectra import Spectrum, TraceResult
from .tracker import Run, Tracker

__version__ = "0.1.0"


def __getattr__(name):
    # hx.explore / hx.Explorer live in .widget, imported on first use so that the library and
    # the CLI do not pay for (or need) ipywidgets/anywidget
    if name in ("explore", "Explorer"):
        from . import widget
        return getattr(widget, name)
    raise AttributeError(f"module 'hessexplore' has no attribute {name!r}")


__all__ = ["Session", "explore", "Explorer", "Tracker", "Run", "Block", "CouplingMap", "Spectrum", "TraceResult",
           "Estimate", "EstimateSnapshot", "HessExploreError", "TracingError", "ModelStateError",
           "LossError", "UnknownNameError", "BlockTooLargeError", "MemoryBudgetError", "InputError",
           "ArgumentError", "RunFileError", "ReportFolderError"]
