"""hessexplore: see the curvature of a neural network.

Hessian blocks between any two nodes (or parameter groups) of a PyTorch
model's DAG, split into Gauss–Newton and tensor parts, exact or streamed with
error bars.  Start with :class:`Session`.
"""
from .errors import (BlockTooLargeError, HessExploreError, LossError, ModelStateError, TracingError,
                     UnknownNameError)
from .estimators import Estimate, EstimateSnapshot
from .results import Block, CouplingMap
from .session import Session

__version__ = "0.1.0"

__all__ = ["Session", "Block", "CouplingMap", "Estimate", "EstimateSnapshot", "HessExploreError",
           "TracingError", "ModelStateError", "LossError", "UnknownNameError", "BlockTooLargeError"]
